"""`warm_start`: every replica starts from one shared checkpoint, the previous model."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tf_smelu.remedies.base import PREVIOUS, Remedy


@dataclasses.dataclass(frozen=True)
class WarmStart(Remedy):
    """Each replica's weights are set to the previous model's before its `fit`.

    The daily-retrain setting: the previous model (the one `anchor` uses:
    the study's baseline recipe trained once, seeded, on `earlier_data`) is
    the checkpoint; every replica copies all its weights exactly, then
    trains on the training data with a fresh optimizer (new slots, step 0).
    What still varies between replicas is their data order and random
    layers (Dropout), not their initialization.

    Attributes:
        value: Unused (0.0): `warm_start` takes no value.
    """

    name: ClassVar[str] = "warm_start"
    syntax: ClassVar[str] = "warm_start (no value)"
    train_cost: ClassVar[str] = ("1 + 1/R per replica: the previous model once per study "
                                 "(`setup_steps`, `setup_seconds`) for R replicas")
    serve_cost: ClassVar[str] = "1x"

    value: float = 0.0  # takes none; the field keeps the one Remedy shape

    @classmethod
    def from_text(cls, text: str, value: str | None) -> WarmStart:
        """The remedy of a spec such as `warm_start`.

        Args:
            text: The whole spec, for error messages.
            value: The part after `:`, which must be None.

        Returns:
            The remedy.

        Raises:
            ValueError: a value is given.
        """
        if value is not None:
            raise ValueError(f"Remedy warm_start takes no value: expected {cls.syntax}. "
                             f"Received: {text!r}")
        return cls()

    def start_from(self) -> str | None:
        """Every member starts from the previous model's weights.

        Returns:
            `PREVIOUS`.
        """
        return PREVIOUS

    def __str__(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        """`warm_start` (no value to show)."""
        return self.name
