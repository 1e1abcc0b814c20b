"""`ensemble:K`: each replica is the average of K independently seeded members."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from tf_smelu.common import derived_seed
from tf_smelu.remedies.base import Remedy, check_range, parse_number


@dataclasses.dataclass(frozen=True)
class Ensemble(Remedy):
    """K members per replica, their probabilities averaged.

    Member m of the replica with initialization seed s has the seed
    `derived_seed(s, 2, m)` (that of replica m in
    `tf_smelu.experiment.replica_seeds(("init",), K, s)`): members differ
    from each other in their initialization (and every other seeded
    randomness), and replicas whose seeds are equal have equal members. The members read the
    replica's data in the replica's order.

    Attributes:
        value: K >= 2, the members per replica.
    """

    name: ClassVar[str] = "ensemble"
    syntax: ClassVar[str] = "ensemble:K (K >= 2 members)"
    symbol: ClassVar[str] = "K"
    train_cost: ClassVar[str] = "Kx (K models per replica)"
    serve_cost: ClassVar[str] = "Kx (K models served and averaged)"

    @classmethod
    def from_text(cls, text: str, value: str | None) -> Ensemble:
        """The remedy of a spec such as `ensemble:2`.

        Args:
            text: The whole spec, for error messages.
            value: The part after `:` (None: missing).

        Returns:
            The remedy.

        Raises:
            ValueError: no value, one that is not an integer, or one below 2.
        """
        members = parse_number(text, value, int, cls.syntax)
        check_range(text, members, members >= 2, "K must be an integer >= 2")
        return cls(members)

    def member_seeds(self, seed: int) -> list[int]:
        """The K members' seeds, `derived_seed(seed, 2, m)` for member m.

        Args:
            seed: The replica's initialization seed.

        Returns:
            K seeds.
        """
        return [derived_seed(seed, 2, member) for member in range(int(self.value))]

    def predict(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """The mean of the members' probabilities.

        Args:
            probabilities: The K members' predicted probabilities.

        Returns:
            Their element-wise mean.
        """
        # In probability space: what serving K models and averaging their outputs gives.
        return np.mean(np.stack(probabilities), axis=0)

    @property
    def serve_params_ratio(self) -> float:
        """K: every member is served."""
        return float(self.value)

    def __str__(self) -> str:
        return f"{self.name}:{int(self.value)}"
