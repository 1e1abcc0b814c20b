"""The one interface every remedy implements, and the checks of its spec value.

A remedy transforms "build a model, compile it, train it, predict" at three
hooks, each the identity unless the remedy changes that step:

* `member_seeds(seed)`: the seeds of the models that make one replica (one
  model, `[seed]`, unless the replica is an ensemble);
* `compile_config(config)`: the model's compile arguments
  (`model.get_compile_config()`) with what the remedy changes (loss,
  optimizer);
* `predict(probabilities)`: one replica's probabilities from its members'.

The study (`tf_smelu.reproducibility.ReplicaStudy.compare`) runs the hooks
without knowing which remedy it runs, so remedies combine freely.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

CompileConfig = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Remedy:
    """A parsed remedy spec such as `ema:0.999`; subclasses set `name` and the hooks.

    Attributes:
        value: The spec's one number (K, decay, epsilon, ...).
    """

    name: ClassVar[str] = ""
    syntax: ClassVar[str] = ""  # e.g. "ema:DECAY", for error messages and help
    symbol: ClassVar[str] = ""  # the value's name in labels, e.g. "K" (none: the bare number)

    value: float

    @classmethod
    def from_text(cls, text: str, value: str | None) -> Remedy:
        """`cls` from the value part of `text` (`"0.999"` of `"ema:0.999"`).

        Raises:
            ValueError: No value, one that does not parse, or one out of range.
        """
        raise NotImplementedError

    def member_seeds(self, seed: int) -> list[int]:
        """The seeds of the models that make one replica of initialization seed `seed`."""
        return [seed]

    def compile_config(self, config: CompileConfig) -> CompileConfig:
        """The compile arguments with this remedy's change (not modified in place)."""
        return config

    def predict(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """One replica's probabilities from its members' (one member: its own)."""
        [only] = probabilities
        return only

    @property
    def serve_params_ratio(self) -> float:
        """Parameters served per replica relative to one model."""
        return 1.0

    def __str__(self) -> str:
        """The spec text, which parses back to an equal remedy."""
        return f"{self.name}:{float(self.value)!r}"

    @property
    def label(self) -> str:
        """Human-readable, e.g. `ema(0.999)` or `ensemble(K=2)`."""
        value = f"{self.value:.12g}"  # 0.9999 stays 0.9999 (`:g` would round it to 1)
        return f"{self.name}({self.symbol}={value})" if self.symbol else f"{self.name}({value})"


def parse_number(text: str, value: str | None, kind: type, syntax: str) -> float | int:
    """The number of a spec `text` (its `value` part), as `kind` (int or float).

    Raises:
        ValueError: No value, or one that is not a `kind`.
    """
    if value is None or not value.strip():
        raise ValueError(f"Remedy {text!r} needs a value: expected {syntax}. Received: {text!r}")
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"Cannot parse remedy {text!r}: expected {syntax} with an "
                         f"{kind.__name__ if kind is int else 'number'}. Received: {text!r}") from None


def check_range(text: str, number: float, ok: bool, expected: str) -> None:
    """Raises the spec's one-line error unless `ok` (and `number` is finite).

    Raises:
        ValueError: The value is out of range.
    """
    if not ok or not math.isfinite(number):
        raise ValueError(f"Remedy {text.split(':')[0]}: {expected}. Received: {text!r}")
