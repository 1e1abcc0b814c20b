"""`label_smoothing:EPS`: the model's cross-entropy loss with smoothed labels."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import keras

from tf_smelu.remedies.base import CompileConfig, Remedy, check_range, parse_number

# Loss functions (as compiled from a name) -> the loss class that takes label_smoothing.
_LOSS_CLASSES = {
    keras.losses.binary_crossentropy: keras.losses.BinaryCrossentropy,
    keras.losses.categorical_crossentropy: keras.losses.CategoricalCrossentropy,
    keras.losses.binary_focal_crossentropy: keras.losses.BinaryFocalCrossentropy,
    keras.losses.categorical_focal_crossentropy: keras.losses.CategoricalFocalCrossentropy,
}


@dataclasses.dataclass(frozen=True)
class LabelSmoothing(Remedy):
    """Every loss of the model re-created with `label_smoothing=EPS`.

    A loss given by name (`"binary_crossentropy"`) becomes its class
    (`BinaryCrossentropy`); a loss object keeps its other settings
    (`from_logits`, reduction, ...). With EPS = 0 the loss computes what it
    computed before, bit for bit.

    Attributes:
        value: EPS in [0, 1), the label smoothing.
    """

    name: ClassVar[str] = "label_smoothing"
    syntax: ClassVar[str] = "label_smoothing:EPS (0 <= EPS < 1)"
    train_cost: ClassVar[str] = "1x"
    serve_cost: ClassVar[str] = "1x"

    @classmethod
    def from_text(cls, text: str, value: str | None) -> LabelSmoothing:
        """The remedy of a spec such as `label_smoothing:0.1`.

        Args:
            text: The whole spec, for error messages.
            value: The part after `:` (None: missing).

        Returns:
            The remedy.

        Raises:
            ValueError: no value, one that does not parse, or one outside [0, 1).
        """
        epsilon = parse_number(text, value, float, cls.syntax)
        check_range(text, epsilon, 0 <= epsilon < 1, "EPS must lie in [0, 1)")
        return cls(epsilon)

    def compile_config(self, config: CompileConfig) -> CompileConfig:
        """The compile arguments with every loss re-created with `label_smoothing=EPS`.

        Args:
            config: The model's compile arguments.

        Returns:
            A copy with the smoothed loss(es), serialized.

        Raises:
            ValueError: if the model was compiled without a loss, or a loss
                does not take `label_smoothing`.
        """
        loss = config.get("loss")
        if loss is None:
            raise ValueError(
                f"{self} re-creates the model's compiled loss with label_smoothing, but the model "
                "was compiled without a loss (it computes its own). Received: loss=None")
        return {**config, "loss": self._each_loss(loss)}

    def _each_loss(self, loss: Any) -> Any:
        """Every loss of a (per-output dict or list of) serialized loss(es), smoothed."""
        if isinstance(loss, dict) and "class_name" not in loss:  # {output name: loss}
            return {name: self._each_loss(one) for name, one in loss.items()}
        if isinstance(loss, (list, tuple)):
            return [self._each_loss(one) for one in loss]
        return None if loss is None else self._smoothed(loss)

    def _smoothed(self, serialized: Any) -> Any:
        """One serialized loss, re-created with label smoothing and serialized again."""
        loss = keras.losses.get(keras.saving.deserialize_keras_object(serialized))
        if loss in _LOSS_CLASSES:
            loss = _LOSS_CLASSES[loss]()
        config = loss.get_config() if isinstance(loss, keras.losses.Loss) else {}
        if "label_smoothing" not in config:
            raise ValueError(
                f"{self} re-creates the model's loss with label_smoothing, which "
                f"{getattr(loss, '__name__', type(loss).__name__)} does not take (Keras' "
                "BinaryCrossentropy, CategoricalCrossentropy and their focal variants do). "
                f"Received: loss={serialized!r}")
        return keras.saving.serialize_keras_object(
            type(loss).from_config({**config, "label_smoothing": float(self.value)}))
