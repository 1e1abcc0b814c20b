"""Flags of the replica-experiment programs, generated from their configs.

Both programs that run `tf_smelu.experiment.run_ctr_experiment` (the main job
`examples/recsys_reproducibility.py` and `examples/multiworker_reproducibility.py`)
define their flags here, one per field of `CTRExperimentConfig` and of its
`TrainingConfig`, with the program's own defaults: the flags, their help and
their checks cannot drift from the library.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping

from absl import app, flags

from tf_smelu.data import DATA_ERRORS
from tf_smelu.experiment import CTRExperimentConfig
from tf_smelu.experiment.config import TRAINING_FIELDS_SET_BY_THE_EXPERIMENT
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig


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


def resolved_flags(preset: Mapping[str, object], preset_flag: str = "quick") -> dict:
    """The main module's flag values, with `preset` filling unset flags.

    When the boolean flag `preset_flag` is on, every value of `preset` whose
    flag was not given on the command line replaces the flag's default:
    explicit flags always win.
    """
    own_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0])
    config = {flag.name: flag.value for flag in own_flags}
    if config.get(preset_flag):
        explicit = {flag.name for flag in own_flags if flag.present}
        config.update({k: v for k, v in preset.items() if k not in explicit})
    return config


def experiment_config(values: Mapping[str, object], work_dir: str | None = None
                      ) -> CTRExperimentConfig:
    """The `CTRExperimentConfig` of resolved flag values.

    Raises:
        app.UsageError: A value is bad (one line, shown without a traceback).
    """
    try:
        return CTRExperimentConfig.from_dict({**values, "work_dir": work_dir})
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def reporting_data_errors(main: Callable) -> Callable:
    """Wraps an absl `main` so that a bad data file ends in one line, exit code 1."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except DATA_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return wrapped
