"""`codistill:LAMBDA[:K]`: K peers trained together, each pulled towards the others' predictions."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tf_smelu.common import derived_seed
from tf_smelu.remedies.base import PEERS, PullRemedy, check_range, parse_weight

DEFAULT_PEERS = 2
"""K when the spec names none (Anil et al. 2018 mostly train two)."""


@dataclasses.dataclass(frozen=True)
class Codistill(PullRemedy):
    """Online co-distillation: K peers in one `fit`, each with its loss plus λ × CE to the others.

    The K peers are copies of the model over shared inputs trained in one
    `fit` (`tf_smelu.reproducibility.stacking`); each one's loss is its own
    plus LAMBDA × the cross-entropy towards the mean of the other K − 1
    peers' current predictions (probabilities), taken stop-gradient: the
    K-way form of Anil et al. 2018. Peer 0 has the replica's seed and is
    what the replica serves; peer p >= 1 has the seed `derived_seed(seed,
    7, p)`. Prediction difference is measured between replicas, i.e.
    between independent co-distilled groups, each with its own seeds. With
    λ = 0 every peer trains exactly as a baseline replica of its seed.

    Attributes:
        value: LAMBDA >= 0, the weight of each peer's pull towards the others.
        peers: K >= 2, the peers trained together (2 unless the spec says).
    """

    name: ClassVar[str] = "codistill"
    target: ClassVar[str] = PEERS
    syntax: ClassVar[str] = "codistill:LAMBDA[:K] (LAMBDA >= 0, K >= 2 peers, default 2)"
    train_cost: ClassVar[str] = "Kx (the K peers train together)"
    serve_cost: ClassVar[str] = "1x (peer 0 alone is served)"

    peers: int = DEFAULT_PEERS

    @classmethod
    def from_text(cls, text: str, value: str | None) -> Codistill:
        """The remedy of a spec such as `codistill:0.5` or `codistill:0.5:3`.

        Args:
            text: The whole spec, for error messages.
            value: The part after the first `:` (None: missing).

        Returns:
            The remedy.

        Raises:
            ValueError: No LAMBDA, a LAMBDA that is not a number >= 0, a K
                that is not an integer >= 2, or more parts than `syntax` has.
        """
        parts = [None] if value is None else value.split(":")
        if len(parts) > 2:
            raise ValueError(f"Cannot parse remedy {text!r}: expected {cls.syntax}, with at most "
                             f"two values. Received: {text!r}")
        weight = parse_weight(cls, text, parts[0])
        if len(parts) == 1:
            return cls(weight)
        try:
            peers = int(parts[1])
        except ValueError:  # "2.5", "", "x": as out of range, one message for K
            peers = 0
        check_range(text, peers, peers >= 2, "K must be an integer >= 2")
        return cls(weight, peers)

    def peer_seeds(self, seed: int) -> list[int]:
        """The K peers' seeds: the member's, then `derived_seed(seed, 7, p)` for peer p >= 1.

        Args:
            seed: The member's seed.

        Returns:
            K seeds, the member's first.
        """
        return [seed, *(derived_seed(seed, 7, peer) for peer in range(1, self.peers))]

    def __str__(self) -> str:
        weight = f"{self.name}:{float(self.value)!r}"
        return weight if self.peers == DEFAULT_PEERS else f"{weight}:{self.peers}"

    @property
    def label(self) -> str:
        """E.g. `codistill(0.5)`, or `codistill(0.5, K=3)` when K is not the default 2."""
        weight = super().label
        return weight if self.peers == DEFAULT_PEERS else f"{weight[:-1]}, K={self.peers})"
