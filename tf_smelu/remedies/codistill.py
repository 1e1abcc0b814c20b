"""`codistill:LAMBDA[:K[:STALE]]`: K peers trained together, each pulled towards the others'."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tf_smelu.common import derived_seed
from tf_smelu.remedies.base import PEERS, Pull, PullRemedy, check_range, parse_weight

DEFAULT_PEERS = 2
"""K when the spec names none (Anil et al. 2018 mostly train two)."""
FRESH = 1
"""STALE when the spec names none: the peers' current predictions."""


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

    With STALE > 1 the targets are stale, as when Anil et al. exchange
    checkpoints rarely: the other peers' predictions come from a copy of
    the peers' weights taken before every STALE-th step (the first one
    included), predicting in inference mode as a teacher does
    (`tf_smelu.reproducibility.stacking.Pulls.peer_stale`).

    Attributes:
        value: LAMBDA >= 0, the weight of each peer's pull towards the others.
        peers: K >= 2, the peers trained together (2 unless the spec says).
        stale: STALE >= 1, the steps between refreshes of the peers' copy
            (1 unless the spec says: the peers' current predictions).
    """

    name: ClassVar[str] = "codistill"
    target: ClassVar[str] = PEERS
    syntax: ClassVar[str] = ("codistill:LAMBDA[:K[:STALE]] (LAMBDA >= 0, K >= 2 peers, default 2, "
                             "STALE >= 1 steps between refreshes of the peers' targets, default 1)")
    train_cost: ClassVar[str] = "Kx (the K peers train together)"
    serve_cost: ClassVar[str] = "1x (peer 0 alone is served)"

    peers: int = DEFAULT_PEERS
    stale: int = FRESH

    @classmethod
    def from_text(cls, text: str, value: str | None) -> Codistill:
        """The remedy of a spec such as `codistill:0.5`, `codistill:0.5:3` or `codistill:0.5:2:100`.

        Args:
            text: The whole spec, for error messages.
            value: The part after the first `:` (None: missing).

        Returns:
            The remedy.

        Raises:
            ValueError: No LAMBDA, a LAMBDA that is not a number >= 0, a K
                that is not an integer >= 2, a STALE that is not an integer
                >= 1, or more parts than `syntax` has.
        """
        parts = [None] if value is None else value.split(":")
        if len(parts) > 3:
            raise ValueError(f"Cannot parse remedy {text!r}: expected {cls.syntax}, with at most "
                             f"three values. Received: {text!r}")
        weight = parse_weight(cls, text, parts[0])
        peers = _count(text, parts, 1, DEFAULT_PEERS, "K", 2)
        stale = _count(text, parts, 2, FRESH, "STALE", 1)
        return cls(weight, peers, stale)

    def peer_seeds(self, seed: int) -> list[int]:
        """The K peers' seeds: the member's, then `derived_seed(seed, 7, p)` for peer p >= 1.

        Args:
            seed: The member's seed.

        Returns:
            K seeds, the member's first.
        """
        return [seed, *(derived_seed(seed, 7, peer) for peer in range(1, self.peers))]

    def pulls(self) -> tuple[Pull, ...]:
        """LAMBDA towards the peers, stale every STALE steps (None for 1: the current ones).

        Returns:
            One `Pull` towards `PEERS`.
        """
        return (Pull(float(self.value), PEERS, None if self.stale == FRESH else self.stale),)

    def __str__(self) -> str:
        spec = f"{self.name}:{float(self.value)!r}"
        if self.stale != FRESH:
            return f"{spec}:{self.peers}:{self.stale}"
        return spec if self.peers == DEFAULT_PEERS else f"{spec}:{self.peers}"

    @property
    def label(self) -> str:
        """E.g. `codistill(0.5)`, `codistill(0.5, K=3)`, `codistill(0.5, K=2, stale=100)`."""
        weight = super().label
        if self.stale != FRESH:
            return f"{weight[:-1]}, K={self.peers}, stale={self.stale})"
        return weight if self.peers == DEFAULT_PEERS else f"{weight[:-1]}, K={self.peers})"


def _count(text: str, parts: list[str | None], index: int, default: int, symbol: str,
           minimum: int) -> int:
    """The integer `parts[index]` (`symbol`) of spec `text`, `default` if absent.

    Raises:
        ValueError: Not an integer, or one below `minimum`.
    """
    if index >= len(parts):
        return default
    try:
        number = int(parts[index])
    except ValueError:  # "2.5", "", "x": as out of range, one message
        number = minimum - 1
    check_range(text, number, number >= minimum, f"{symbol} must be an integer >= {minimum}")
    return number
