"""Flags of the replica-experiment programs, generated from their configs.

Both programs that run `tf_smelu.experiment.run_ctr_experiment` (the main job
`examples/recsys_reproducibility.py` and `examples/multiworker_reproducibility.py`)
define their flags here, one per field of `CTRExperimentConfig` and of its
`TrainingConfig`, with the program's own defaults: the flags, their help and
their checks cannot drift from the library.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from absl import app, flags

from tf_smelu import experiment
from tf_smelu.common import run_program
from tf_smelu.data import DATA_ERRORS
from tf_smelu.experiment import CTRExperimentConfig
from tf_smelu.experiment.config import TRAINING_FIELDS_SET_BY_THE_EXPERIMENT
from tf_smelu.processes import check_resources, directory_lock
from tf_smelu.reproducibility import main_job  # noqa: F401  (registers --trainer=keras)
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.problem import UserModelError


def define_experiment_flags(
    defaults: CTRExperimentConfig,
    output_dir: str,
    quick_help: str,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> None:
    """Defines the flags of a replica-experiment program.

    Call `flags.adopt_module_key_flags(tf_smelu.cli)` afterwards so that
    `--help` lists them.

    Args:
        defaults: The program's defaults.
        output_dir: Default of `--output_dir`.
        quick_help: Help of `--quick`, saying what the preset does.
        flag_values: Where to define the flags.
    """
    flags.DEFINE_string("output_dir", output_dir,
                        "Where results.json and tradeoff.png (and the jobs' runs/) go.",
                        flag_values=flag_values)
    config_flags.define_flags(CTRExperimentConfig, defaults, flag_values=flag_values,
                              module_name=__name__)
    config_flags.define_flags(TrainingConfig, defaults.training, flag_values=flag_values,
                              exclude=TRAINING_FIELDS_SET_BY_THE_EXPERIMENT,
                              module_name=__name__)
    flags.DEFINE_boolean("quick", False, quick_help, flag_values=flag_values)
    flags.DEFINE_boolean(
        "resume", True, "Reuse the finished rows of results.json in --output_dir (written "
        "after every row) when it holds the same configuration; rows are matched by sources "
        "and activation, so added rows run and finished ones are kept. --noresume starts over.",
        flag_values=flag_values)


def resolved_flags(preset: Mapping[str, object], preset_flag: str = "quick") -> dict:
    """The main module's flag values, with `preset` filling unset flags.

    When the boolean flag `preset_flag` is on, every value of `preset` whose
    flag was not given on the command line replaces the flag's default:
    explicit flags always win.

    Args:
        preset: Flag values of the preset, by flag name (e.g. the main job's
            `--quick` settings).
        preset_flag: Name of the boolean flag that switches the preset on.

    Returns:
        The value of every flag the main module (`sys.argv[0]`) defines,
        except `--debug`, by flag name.
    """
    own_flags = [flag for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0])
                 if flag.name != "debug"]  # how errors show, not what runs
    config = {flag.name: flag.value for flag in own_flags}
    if config.get(preset_flag):
        explicit = {flag.name for flag in own_flags if flag.present}
        config.update({k: v for k, v in preset.items() if k not in explicit})
    return config


def experiment_config(values: Mapping[str, object], work_dir: str | None = None
                      ) -> CTRExperimentConfig:
    """The `CTRExperimentConfig` of resolved flag values.

    Args:
        values: Flag values by name (those `resolved_flags` returns); names
            of neither the config's nor its training's fields (e.g.
            `output_dir`) are ignored.
        work_dir: Where the experiment's jobs write their runs (`None`: a
            temporary directory per job).

    Returns:
        The checked configuration.

    Raises:
        app.UsageError: A value is bad (one line, shown without a traceback).
    """
    try:
        return CTRExperimentConfig.from_dict({**values, "work_dir": work_dir})
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def check_output_dir(path: str, flag: str = "output_dir") -> None:
    """Raises `app.UsageError` unless `path` is, or can become, a writable directory.

    Checked before any work, so that results are never computed only to be
    lost; nothing is created here.

    Args:
        path: The output directory a flag gave (it may not exist yet).
        flag: The flag's name, for the message.

    Raises:
        app.UsageError: if `path` is empty, is a file, lies under a file, or
            its nearest existing directory is not writable.
    """
    if not path.strip():
        raise app.UsageError(f"--{flag} is empty; give the directory to write to "
                             f"(`--{flag}=.` for the current one)")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing != os.path.abspath(path) and not os.path.isdir(existing):
        raise app.UsageError(f"--{flag}={path}: {existing} is a file, not a directory")
    if not os.path.isdir(existing):
        raise app.UsageError(f"--{flag}={path} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise app.UsageError(f"--{flag}={path}: {existing} is not writable")


def run_experiment(
    values: Mapping[str, object], output_dir: str, resume: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Checks, resumes, runs and reports a replica experiment given as flag values.

    Every input, and this machine's memory for the workers and replicas
    asked for (`tf_smelu.processes.check_resources`), is checked before the
    first training step; `output_dir` is then locked for this job (a second
    job on it stops with one line naming this one); each finished row is
    written to `output_dir/results.json` at once (`"complete": false` until
    the last), and rows that an earlier run of the same configuration
    finished there are reused when `resume` is on.

    Args:
        values: The resolved flag values (`resolved_flags`), recorded in
            results.json next to the normalized configuration.
        output_dir: Where results.json, tradeoff.png and the jobs' `runs/` go.
        resume: Whether rows an earlier run of the same configuration
            finished in `output_dir` are reused (`--noresume` starts over).
        log: Where progress lines go.

    Returns:
        All rows, as written to results.json.
    """
    config = experiment_config(values, work_dir=os.path.join(output_dir, "runs"))
    check_output_dir(output_dir)
    replicas_flag = "replicas" if config.max_auc_loss is None else "max_replicas"
    check_resources(config.workers, getattr(config, replicas_flag), replicas_flag, warn=log)
    with directory_lock(output_dir, log=log):
        return _run_locked_experiment(config, values, output_dir, resume, log)


def _run_locked_experiment(
    config: CTRExperimentConfig, values: Mapping[str, object], output_dir: str, resume: bool,
    log: Callable[[str], None],
) -> list[dict]:
    """`run_experiment` once `output_dir` is this job's."""
    normalized = config.to_dict()
    record = {**values, **normalized}
    finished = experiment.finished_rows(output_dir, normalized, resume,
                                        defaults=CTRExperimentConfig().to_dict())
    if finished:
        log(f"Resuming: {len(finished)} finished row(s) in "
            f"{os.path.join(output_dir, 'results.json')} are reused (--noresume starts over).")
    data: dict[str, object] = {}

    def write_unfinished(rows: list[dict]) -> None:
        experiment.write_results(output_dir, record, rows, complete=False, data=data)

    advice = None
    if config.max_auc_loss is None:
        rows = experiment.run_ctr_experiment(config, log, finished, on_row=write_unfinished,
                                             on_data=data.update)
    else:
        rows, advice = experiment.advise_ctr_experiment(
            config, log, finished, on_row=write_unfinished, on_data=data.update,
            output_dir=output_dir)
    experiment.report(rows, record, output_dir, log, advice=advice, data=data)
    return rows


def run(main: Callable) -> None:
    """`app.run(main)` in tf_smelu's error style (see `tf_smelu.common.run_program`).

    A bad flag, data file, output directory (also one another job is
    using), results file or a job too big for this machine ends in one
    `error:` line and exit code 1; `--debug` shows the traceback.

    Args:
        main: The program's `main(argv)`, as `app.run` takes it.
    """
    run_program(main, user_errors=(*DATA_ERRORS, experiment.ResultsMismatchError,
                                   UserModelError))
