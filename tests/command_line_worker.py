"""Parses documented command lines with the programs' own flags (run by test_documented_commands.py).

Usage: python tests/command_line_worker.py < commands.json > verdicts.json

Reads a JSON list of `{"program": ..., "args": [...]}` (a program is a script
path relative to the repository, e.g. `examples/recsys_reproducibility.py`,
or a module run with `-m`, e.g. `tf_smelu.training.distributed`) and writes
one verdict per command: `{"error": null | "one line", "checked": "flags" |
"configuration"}`. For every program the flags are parsed and validated
exactly as `app.run` would; for the programs in `CONFIGURATIONS` the checked
configuration is built as well, the way the program's `main` builds it before
the first training step. Nothing trains, nothing is written, no data is read.

All programs share absl's global `FLAGS`, and several define flags of the
same names, so each program's flags are removed again after its commands:
one process (one TensorFlow import) checks them all.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys

from absl import flags

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull", "--helpxml", "-?")


def _experiment(values: dict) -> object:
    from tf_smelu import cli

    return cli.experiment_config(values)


CONFIGURATIONS = {
    "examples/recsys_reproducibility.py":
        lambda program: _experiment(program["resolved_config"]()),
    "examples/multiworker_reproducibility.py":
        lambda program: _experiment(program["cli"].resolved_flags(program["QUICK_PRESET"])),
    "benchmarks/operating_point.py": lambda program: program["checked_points"](),
    "tf_smelu.training.distributed": lambda program: program["parse_flags"](FLAGS),
}
"""How each program builds its configuration before training, from parsed flags."""


def load(program: str) -> dict:
    """Defines the program's flags (without running it); returns its globals."""
    if program.endswith(".py"):
        # `cli.resolved_flags` reads the key flags of the module named sys.argv[0].
        sys.argv[0] = run_name = "documented_" + program.replace("/", "_")[:-3]
        return runpy.run_path(os.path.join(ROOT, program), run_name=run_name)
    module = importlib.import_module(program)
    module.define_flags()  # `-m` programs define their flags under __main__ only
    return vars(module)


def check(program: dict, name: str, args: list[str]) -> dict:
    """Parses `args` as `name`'s command line; builds its configuration if known.

    Returns:
        The verdict: `error` (one line, or None) and `checked`, the last stage
        reached ("flags", or "configuration" for programs in `CONFIGURATIONS`).
    """
    FLAGS.unparse_flags()
    # `app.run`'s --help flags print and exit; what they print is tested with the programs.
    args = [arg for arg in args if arg not in HELP_FLAGS]
    stage = "flags"
    try:
        rest = FLAGS([name, *args])
        if len(rest) > 1:  # every program's main refuses positional arguments
            raise ValueError(f"unexpected arguments {rest[1:]}")
        if name in CONFIGURATIONS:
            stage = "configuration"
            CONFIGURATIONS[name](program)
        return {"error": None, "checked": stage}
    except Exception as error:  # flags.Error, ValueError, app.UsageError: a verdict, not a crash
        return {"error": f"{type(error).__name__}: {' '.join(str(error).split())}",
                "checked": stage}


def main() -> None:
    commands = json.load(sys.stdin)
    verdicts = [None] * len(commands)
    by_program: dict[str, list[int]] = {}
    for index, command in enumerate(commands):
        by_program.setdefault(command["program"], []).append(index)
    for name, indices in by_program.items():
        before = set(FLAGS)
        try:
            program = load(name)
        except Exception as error:
            for index in indices:
                verdicts[index] = {"error": f"cannot load {name}: {error}", "checked": "none"}
            continue
        for index in indices:
            verdicts[index] = check(program, name, commands[index]["args"])
        for flag in set(FLAGS) - before:
            delattr(FLAGS, flag)
    json.dump(verdicts, sys.stdout)


if __name__ == "__main__":
    main()
