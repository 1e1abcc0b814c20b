"""Helpers for the absl command lines of the examples."""

from __future__ import annotations

import sys
from typing import Mapping

from absl import flags


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
