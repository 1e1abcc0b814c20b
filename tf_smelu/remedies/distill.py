"""`distill:LAMBDA`: every replica learns from a fixed teacher's predictions as well as the labels."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tf_smelu.remedies.base import TEACHER, PullRemedy


@dataclasses.dataclass(frozen=True)
class Distill(PullRemedy):
    """The model's own loss plus LAMBDA × cross-entropy towards the teacher's probabilities.

    The teacher is one model of the study's baseline recipe, trained once
    per study on the training data with a seed of its own (never a
    replica's) and reused by every replica and every `distill` spec. The
    term is added to the loss (`loss + λ·CE(teacher, model)`) rather than
    mixed (`(loss + λ·CE)/(1 + λ)`, Keras' `Distiller` with
    `student_loss_weight = 1/(1+λ)`): the labels' gradient stays the one the
    baseline trains with, whatever λ, and λ = 0 adds no term at all, so
    `distill:0` trains the baseline bit for bit.

    Attributes:
        value: LAMBDA >= 0, the weight of the pull towards the teacher.
    """

    name: ClassVar[str] = "distill"
    target: ClassVar[str] = TEACHER
    syntax: ClassVar[str] = "distill:LAMBDA (LAMBDA >= 0)"
    train_cost: ClassVar[str] = ("1 + 1/R per replica: one teacher per study (`setup_steps`, "
                                 "`setup_seconds`) for R replicas; each step also runs the "
                                 "teacher's forward pass")
    serve_cost: ClassVar[str] = "1x (the student alone is served)"
