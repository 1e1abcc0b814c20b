"""Every documented command line of the project's programs parses, and builds its configuration.

The shell blocks of README.md and docs/**/*.md and the usage examples in the
programs' own docstrings (what `--help` prints) show command lines such as
`python examples/recsys_reproducibility.py --max_auc_loss=0.002 ...`. Each one
is parsed with the program's own absl flags in one subprocess
(tests/command_line_worker.py): a renamed flag, a value of the wrong type or
one a validator refuses fails here, naming the page and line. For the main
job, the multi-worker example, the operating-point benchmark and the
distributed worker, the configuration the program builds before its first
training step is built too (activation and remedy specs, source sets, budgets).
Nothing trains: the programs' end-to-end runs are tested elsewhere
(tests/test_main_job.py and friends).

Documented input files (`--model=my_model.keras`) stand for the reader's own:
relative `.keras` paths are created empty in the working directory, since the
model flag checks only that the file exists; data paths are not read.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHELL_FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
OPERATORS = {"&&", "||", ";", "|"}
PROGRAM_MODULE = re.compile(r"^(tf_smelu|benchmarks|examples)(\.\w+)+$")


@dataclasses.dataclass(frozen=True)
class Command:
    """One documented invocation of a project program."""

    where: str  # page:line of the command's first line
    program: str  # script path relative to the repository, or module run with -m
    args: tuple[str, ...]

    def to_json(self) -> dict:
        return {"program": self.program, "args": list(self.args)}


def _logical_lines(lines: list[str], first_line: int) -> list[tuple[int, str]]:
    """Joins backslash continuations; returns (line number, text) per logical line."""
    joined, start, parts = [], None, []
    for number, line in enumerate(lines, first_line):
        text = line.strip()
        if start is None:
            start = number
        if text.endswith("\\"):
            parts.append(text[:-1])
            continue
        parts.append(text)
        joined.append((start, " ".join(parts)))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def parse_command_line(text: str, where: str) -> list[Command]:
    """The project-program invocations in one shell line (others, e.g. pip, are skipped).

    Args:
        text: A logical shell line (continuations joined); `#` starts a comment.
        where: page:line, for messages.

    Returns:
        One `Command` per `python SCRIPT.py ...` or `python -m PROGRAM ...` of a
        project program; the launcher's worker command (after `--`) is one more.
    """
    text = re.sub(r"(^|\s)#.*$", "", text)  # as bash: `#` starts a comment only at a word's start
    try:
        tokens = shlex.split(text)
    except ValueError:
        return []
    commands, segment = [], []
    for token in [*tokens, ";"]:
        if token not in OPERATORS:
            segment.append(token)
            continue
        commands += _project_commands(segment, where)
        segment = []
    return commands


def _project_commands(tokens: list[str], where: str) -> list[Command]:
    while tokens and re.match(r"^[A-Z_]+=", tokens[0]):  # PYTHONPATH=. python ...
        tokens = tokens[1:]
    if len(tokens) < 2 or tokens[0] not in ("python", "python3"):
        return []
    if tokens[1] == "-m":
        if len(tokens) < 3 or not PROGRAM_MODULE.match(tokens[2]):
            return []  # pip, pytest, ...
        program, args = tokens[2], tokens[3:]
    elif tokens[1].endswith(".py"):
        program, args = tokens[1], tokens[2:]
    else:
        return []
    args = [arg for arg in args if arg != "..."]  # "and the flags shown above"
    if "--" in args:  # the launcher: its own flags, then the worker command
        split = args.index("--")
        return [Command(where, program, tuple(args[:split])),
                *_project_commands(args[split + 1:], where)]
    return [Command(where, program, tuple(args))]


def page_commands(page: pathlib.Path) -> list[Command]:
    """The project commands of a Markdown page's shell blocks."""
    lines = page.read_text(encoding="utf-8").splitlines()
    name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name
    commands, block, start = [], None, 0
    for number, line in enumerate(lines, 1):
        if block is None:
            if SHELL_FENCE.match(line.strip()):
                block, start = [], number + 1
        elif line.strip().startswith("```"):
            for first, text in _logical_lines(block, start):
                commands += parse_command_line(text, f"{name}:{first}")
            block = None
        else:
            block.append(line)
    return commands


def docstring_commands(path: pathlib.Path) -> list[Command]:
    """The project commands a program's module docstring shows (its `--help` text)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree, clean=False)
    if not docstring:
        return []
    first = tree.body[0].lineno  # the docstring's opening line
    name = str(path.relative_to(ROOT))
    commands = []
    for number, text in _logical_lines(docstring.splitlines(), first):
        if re.match(r"^(PYTHONPATH=\S+ )?python3? ", text):
            commands += parse_command_line(text, f"{name}:{number}")
    return commands


def documented_commands() -> list[Command]:
    """Every documented project command: docs pages, then program docstrings."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    programs = sorted([*(ROOT / "examples").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
                       *(ROOT / "tf_smelu").rglob("*.py")])
    return ([c for page in pages for c in page_commands(page)]
            + [c for path in programs for c in docstring_commands(path)])


COMMANDS = documented_commands()

MISTAKES = [
    (Command("mistake:renamed flag", "examples/recsys_reproducibility.py", ("--replica=8",)),
     "flags"),
    (Command("mistake:bad beta", "examples/recsys_reproducibility.py",
             ("--activations=relu,smelu:abc",)), "flags"),
    (Command("mistake:bad remedy", "examples/recsys_reproducibility.py",
             ("--remedies=ensemble:1",)), "flags"),
    (Command("mistake:remedies without keras", "examples/recsys_reproducibility.py",
             ("--remedies=ensemble:2", "--trainer=builtin")), "configuration"),
    (Command("mistake:bad grid", "benchmarks/operating_point.py", ("--learning_rates=0,0.01",)),
     "configuration"),
    (Command("mistake:bad worker flag", "tf_smelu.training.distributed",
             ("--update_mode=async",)), "flags"),
    (Command("mistake:positional", "examples/multiworker_reproducibility.py", ("extra",)),
     "flags"),
]
"""Command lines that must fail, with the stage that refuses them: the check can fail at
each level it claims."""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[Command, dict]:
    work = tmp_path_factory.mktemp("documented_commands")
    for command in COMMANDS:
        for arg in command.args:
            path = arg.partition("=")[2]
            if path.endswith(".keras") and not path.startswith("/"):
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).touch()
    commands = [*COMMANDS, *(command for command, _ in MISTAKES)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "command_line_worker.py")],
        input=json.dumps([c.to_json() for c in commands]), capture_output=True, text=True,
        cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(zip(commands, json.loads(done.stdout)))


def test_the_documentation_shows_the_main_commands():
    programs = {c.program for c in COMMANDS}
    assert {"examples/recsys_reproducibility.py", "examples/multiworker_reproducibility.py",
            "benchmarks/operating_point.py", "tf_smelu.training.launcher",
            "tf_smelu.training.distributed"} <= programs
    readme = [c for c in COMMANDS if c.where.startswith("README.md:")]
    assert Command(readme[0].where, "examples/recsys_reproducibility.py", ()) in readme
    assert len(COMMANDS) >= 60, len(COMMANDS)


def test_every_documented_program_exists():
    missing = sorted({f"{c.where}: {c.program}" for c in COMMANDS
                      if c.program.endswith(".py") and not (ROOT / c.program).is_file()})
    assert not missing, missing


@pytest.mark.slow  # one subprocess (a TensorFlow import) checks every command
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}")
def test_documented_command_parses(command, verdicts):
    verdict = verdicts[command]
    assert verdict["error"] is None, (
        f"{command.where}: `{command.program} {shlex.join(command.args)}`: {verdict['error']}")


@pytest.mark.slow
def test_the_experiment_programs_build_their_configuration(verdicts):
    from_config = {c.program for c, v in verdicts.items()
                   if v["checked"] == "configuration" and v["error"] is None}
    assert {"examples/recsys_reproducibility.py", "examples/multiworker_reproducibility.py",
            "benchmarks/operating_point.py", "tf_smelu.training.distributed"} <= from_config


@pytest.mark.slow
@pytest.mark.parametrize("command,stage", MISTAKES, ids=lambda m: m.where.partition(":")[2]
                         if isinstance(m, Command) else "")
def test_a_mistaken_command_fails_the_check(command, stage, verdicts):
    assert verdicts[command]["error"], command
    assert verdicts[command]["checked"] == stage, verdicts[command]


def test_the_extractor_joins_continuations_and_splits_commands(tmp_path):
    page = tmp_path / "page.md"
    lines = ["Text `python examples/x.py --inline` is not a command.", "```bash",
             "python -m pip install -e . && python examples/a.py --x=1 \\",
             "    --y=2   # a comment",
             "PYTHONPATH=. python examples/b.py --dataset=csv:/d.csv#label",
             "python -m tf_smelu.training.launcher --num_workers=2 -- \\",
             "    python -m tf_smelu.training.distributed --steps=5",
             "python -m pytest -m 'not slow'", "```", "python examples/c.py --outside=1"]
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = page_commands(page)
    where = "page.md"
    assert found == [
        Command(f"{where}:3", "examples/a.py", ("--x=1", "--y=2")),
        Command(f"{where}:5", "examples/b.py", ("--dataset=csv:/d.csv#label",)),
        Command(f"{where}:6", "tf_smelu.training.launcher", ("--num_workers=2",)),
        Command(f"{where}:6", "tf_smelu.training.distributed", ("--steps=5",)),
    ]
