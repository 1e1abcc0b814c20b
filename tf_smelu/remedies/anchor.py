"""`anchor:LAMBDA`: a refreshed model regularized towards the previous model's predictions."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tf_smelu.remedies.base import PREVIOUS, PullRemedy


@dataclasses.dataclass(frozen=True)
class Anchor(PullRemedy):
    """The model's own loss plus LAMBDA × cross-entropy towards the previous model's probabilities.

    The model-refresh setting: the previous model is one model of the
    study's baseline recipe trained once (with a seed of its own) on the
    study's `earlier_data`, the data before the training data; every replica
    then trains on the training data, anchored to it (the same additive term
    as `distill`, towards another target).

    Attributes:
        value: LAMBDA >= 0, the weight of the pull (0: no term at all).
    """

    name: ClassVar[str] = "anchor"
    target: ClassVar[str] = PREVIOUS
    syntax: ClassVar[str] = "anchor:LAMBDA (LAMBDA >= 0)"
    train_cost: ClassVar[str] = ("1 + 1/R per replica: the previous model once per study "
                                 "(`setup_steps`, `setup_seconds`) for R replicas; each step "
                                 "also runs its forward pass")
    serve_cost: ClassVar[str] = "1x"
