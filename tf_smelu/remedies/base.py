"""The one interface every remedy implements, and the checks of its spec value.

A remedy transforms "build a model, compile it, train it, predict" at three
hooks, each the identity unless the remedy changes that step:

* `member_seeds(seed)`: the seeds of the models that make one replica (one
  model, `[seed]`, unless the replica is an ensemble);
* `compile_config(config)`: the model's compile arguments
  (`model.get_compile_config()`) with what the remedy changes (loss,
  optimizer);
* `predict(probabilities)`: one replica's probabilities from its members';
* `peer_seeds(seed)`: the seeds of the models one member trains *together*,
  in one `fit` (one model, `[seed]`, unless peers co-distill); the member's
  predictions are its first peer's;
* `pulls()`: loss terms pulling the member's predictions towards another
  model's (`Pull`: a fixed teacher, the previous model, or the peers);
* `start_from()`: the trained model whose weights every member starts from
  (None: the member's own initialization).

Models a remedy learns from (the teacher, the previous model) are trained
once by the study and reused (`TARGETS`); the remedy only names them. Each
remedy also states its cost (`train_cost`, `serve_cost`): what it trains
and serves per replica relative to one model.

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

TEACHER = "teacher"
"""One model of the study's baseline recipe trained on the training data, with a seed of its own."""
PREVIOUS = "previous"
"""One model of the study's baseline recipe trained on the earlier data (the model being refreshed)."""
PEERS = "peers"
"""The other peers of a member, trained in the same `fit` (their predictions stop-gradient)."""
TARGETS = (TEACHER, PREVIOUS)
"""The trained models a study provides to remedies (the peers train with the member)."""


@dataclasses.dataclass(frozen=True)
class Pull:
    """A loss term `weight` × cross-entropy from `target`'s predictions to the member's.

    Attributes:
        weight: λ >= 0 (0 adds no term at all: the training is the remedy-free one).
        target: `TEACHER`, `PREVIOUS` or `PEERS`.
        stale: For `PEERS`: the targets are the predictions of a copy of the
            peers' weights refreshed every `stale` steps; None: the peers'
            current predictions.
    """

    weight: float
    target: str
    stale: int | None = None


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

        Args:
            text: The whole spec, for error messages.
            value: The part after `:`, or None when the spec has none.

        Returns:
            The remedy.

        Raises:
            ValueError: No value, one that does not parse, or one out of range.
        """
        raise NotImplementedError

    def member_seeds(self, seed: int) -> list[int]:
        """The seeds of the models that make one replica of initialization seed `seed`.

        Args:
            seed: The replica's initialization seed.

        Returns:
            One seed per member (here `[seed]`: the replica is one model).
        """
        return [seed]

    def compile_config(self, config: CompileConfig) -> CompileConfig:
        """The compile arguments with this remedy's change (not modified in place).

        Args:
            config: The model's compile arguments (`model.get_compile_config()`).

        Returns:
            The arguments to compile each member with (here `config` itself).
        """
        return config

    def predict(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """One replica's probabilities from its members' (one member: its own).

        Args:
            probabilities: Each member's predicted probabilities, in
                `member_seeds` order.

        Returns:
            The replica's probabilities (here the only member's).
        """
        [only] = probabilities
        return only

    def peer_seeds(self, seed: int) -> list[int]:
        """The seeds of the models trained together in one `fit` as the member of seed `seed`.

        Args:
            seed: The member's seed.

        Returns:
            One seed per peer, the member's first (here `[seed]`: no peers).
        """
        return [seed]

    def pulls(self) -> tuple[Pull, ...]:
        """The loss terms that pull the member's predictions towards other models'.

        Returns:
            The terms (here none).
        """
        return ()

    def start_from(self) -> str | None:
        """The trained model (one of `TARGETS`) whose weights every member starts from, or None.

        Returns:
            A name of `TARGETS`, or None for the member's own initialization.
        """
        return None

    @property
    def serve_params_ratio(self) -> float:
        """Parameters served per replica relative to one model."""
        return 1.0

    train_cost: ClassVar[str] = "1x"
    """Training per replica relative to one model, stated (measured rows hold the numbers)."""
    serve_cost: ClassVar[str] = "1x"
    """Serving per replica (parameters, FLOPs per example) relative to one model."""

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
        raise ValueError(f"Cannot parse remedy {text!r}: expected {syntax} with "
                         f"{'an integer' if kind is int else 'a number'}. Received: {text!r}") from None


@dataclasses.dataclass(frozen=True)
class PullRemedy(Remedy):
    """A remedy that adds LAMBDA x cross-entropy towards `target`'s predictions to the loss.

    `distill`, `anchor` and `codistill` differ only in whom they pull
    towards (and codistill in its peers); the spec's value is LAMBDA >= 0.
    """

    target: ClassVar[str] = ""  # TEACHER, PREVIOUS or PEERS

    @classmethod
    def from_text(cls, text: str, value: str | None) -> PullRemedy:
        return cls(parse_weight(cls, text, value))

    def pulls(self) -> tuple[Pull, ...]:
        return (Pull(float(self.value), self.target),)


def parse_weight(cls: type[Remedy], text: str, value: str | None) -> float:
    """The λ >= 0 of a spec such as `distill:0.5` (`cls.syntax` names the form).

    Raises:
        ValueError: No value, one that does not parse, or one below 0.
    """
    weight = parse_number(text, value, float, cls.syntax)
    check_range(text, weight, weight >= 0, "LAMBDA must be a number >= 0")
    return weight


def check_range(text: str, number: float, ok: bool, expected: str) -> None:
    """Raises the spec's one-line error unless `ok` (and `number` is finite).

    Raises:
        ValueError: The value is out of range.
    """
    if not ok or not math.isfinite(number):
        raise ValueError(f"Remedy {text.split(':')[0]}: {expected}. Received: {text!r}")
