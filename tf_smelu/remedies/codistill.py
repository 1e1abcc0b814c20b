"""`codistill:LAMBDA`: two peers trained together, each pulled towards the other's predictions."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tf_smelu.common import derived_seed
from tf_smelu.remedies.base import PEERS, PullRemedy

PEERS_PER_MEMBER = 2
"""K: the peers of one co-distilled run (Anil et al. 2018 use two)."""


@dataclasses.dataclass(frozen=True)
class Codistill(PullRemedy):
    """Online co-distillation: K = 2 peers in one `fit`, each with its loss plus λ × CE to the other.

    The two peers are copies of the model over shared inputs trained in one
    `fit` (`tf_smelu.reproducibility.stacking`); each one's loss is its own
    plus LAMBDA × cross-entropy towards the other's current prediction,
    taken stop-gradient. Peer 0 has the replica's seed and is what the
    replica serves; peer 1's seed is `derived_seed(seed, 7, 1)`. Prediction
    difference is measured between replicas, i.e. between independent
    co-distilled pairs, each with its own seeds. With λ = 0 peer 0 trains
    exactly as the baseline replica.

    Attributes:
        value: LAMBDA >= 0, the weight of each peer's pull towards the other.
    """

    name: ClassVar[str] = "codistill"
    target: ClassVar[str] = PEERS
    syntax: ClassVar[str] = "codistill:LAMBDA (LAMBDA >= 0)"
    train_cost: ClassVar[str] = f"{PEERS_PER_MEMBER}x (the peers train together)"
    serve_cost: ClassVar[str] = "1x (peer 0 alone is served)"

    def peer_seeds(self, seed: int) -> list[int]:
        """The two peers' seeds: the member's, then `derived_seed(seed, 7, 1)`.

        Args:
            seed: The member's seed.

        Returns:
            `PEERS_PER_MEMBER` seeds, the member's first.
        """
        return [seed, *(derived_seed(seed, 7, peer) for peer in range(1, PEERS_PER_MEMBER))]
