"""`ema:DECAY`: evaluation with an exponential moving average of the weights."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras

from tf_smelu.remedies.base import CompileConfig, Remedy, check_range, parse_number


@dataclasses.dataclass(frozen=True)
class Ema(Remedy):
    """The model's own optimizer with `use_ema=True, ema_momentum=DECAY`.

    Keras keeps the average in the optimizer and, at the end of every `fit`
    (`optimizer.finalize_variable_values`), writes it into the model's
    trainable weights, so the model predicts and is evaluated with the
    averaged weights. The optimizer's `ema_overwrite_frequency` stays as
    configured (Keras' default `None`: only at the end of `fit`).

    Attributes:
        value: DECAY in (0, 1), the average's momentum (e.g. 0.999).
    """

    name: ClassVar[str] = "ema"
    syntax: ClassVar[str] = "ema:DECAY (0 < DECAY < 1)"
    train_cost: ClassVar[str] = "1x (one more copy of the weights, updated every step)"
    serve_cost: ClassVar[str] = "1x (the averaged weights replace the model's)"

    @classmethod
    def from_text(cls, text: str, value: str | None) -> Ema:
        """The remedy of a spec such as `ema:0.999`.

        Args:
            text: The whole spec, for error messages.
            value: The part after `:` (None: missing).

        Returns:
            The remedy.

        Raises:
            ValueError: no value, one that does not parse, or one outside (0, 1).
        """
        decay = parse_number(text, value, float, cls.syntax)
        check_range(text, decay, 0 < decay < 1, "DECAY must lie in (0, 1)")
        return cls(decay)

    def compile_config(self, config: CompileConfig) -> CompileConfig:
        """The compile arguments with `use_ema=True, ema_momentum=DECAY` on the optimizer.

        Args:
            config: The model's compile arguments.

        Returns:
            A copy whose optimizer is serialized with those settings.

        Raises:
            ValueError: if the optimizer does not take `use_ema` (e.g. a
                `LossScaleOptimizer`).
        """
        optimizer = keras.optimizers.serialize(keras.optimizers.get(config["optimizer"]))
        if "use_ema" not in optimizer["config"]:
            raise ValueError(
                f"{self} sets use_ema on the model's optimizer, which does not take it (Keras' "
                "own optimizers do; a LossScaleOptimizer wraps one: set use_ema on the inner "
                f"optimizer yourself). Received: optimizer {optimizer['class_name']}")
        optimizer["config"] = {**optimizer["config"], "use_ema": True,
                               "ema_momentum": float(self.value)}
        return {**config, "optimizer": optimizer}
