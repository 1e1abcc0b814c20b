"""Streaming Keras PD metrics: `y_true` carries a reference model's predictions."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from tf_smelu.common import KERAS_PACKAGE
from tf_smelu.metrics.prediction_difference import _SPECS, checked_probabilities


def _align(y_true, y_pred, multiclass: bool, name: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Casts to a common float dtype and, for binary PD, drops a trailing 1."""
    y_true, y_pred = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
    dtype = tf.float64 if tf.float64 in (y_true.dtype, y_pred.dtype) else tf.float32
    y_true, y_pred = tf.cast(y_true, dtype), tf.cast(y_pred, dtype)
    if not multiclass:
        aligned = []
        for tensor in (y_true, y_pred):
            if tensor.shape.rank is not None and tensor.shape.rank >= 2:
                if tensor.shape[-1] not in (1, None):
                    raise ValueError(
                        f"{name} expects binary probabilities of shape [N] or [N, 1]. "
                        f"Received: shape={tensor.shape}. For class probabilities "
                        "use L1PD or Top1PD."
                    )
                tensor = tf.squeeze(tensor, axis=-1)
            aligned.append(tensor)
        y_true, y_pred = aligned
    if not y_true.shape.is_compatible_with(y_pred.shape):
        raise ValueError(
            f"{name}: y_true (the reference model's predictions) and y_pred must have "
            f"the same shape. Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )
    return y_true, y_pred


class _PredictionDifference(keras.metrics.MeanMetricWrapper):
    """Streaming weighted mean of a per-example PD against reference predictions.

    `y_true` holds the *reference model's predictions* for the batch, not
    labels. The metric keeps a float `total` and `count` (Keras metric
    variables with `aggregation="sum"`, so it works under `tf.distribute`).
    Like the eager functions, it refuses values outside [0, 1] or NaN
    (`checked_probabilities`: a `ValueError` eagerly, an
    `InvalidArgumentError` from a compiled step; XLA drops the check).

    Args:
        per_example: Function `(p, q) -> per-example PD`.
        multiclass: Whether inputs are class-probability rows `[N, K]`.
        name: Metric name.
        dtype: Dtype of the accumulators and result (float32 by default).
    """

    def __init__(
        self,
        per_example: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
        *,
        multiclass: bool,
        name: str,
        dtype=None,
    ):
        super().__init__(fn=self._per_example_pd, name=name, dtype=dtype)
        self._pd_fn = per_example
        self._multiclass = multiclass
        self._direction = "down"

    def _per_example_pd(self, y_true, y_pred):
        y_true, y_pred = _align(y_true, y_pred, self._multiclass, type(self).__name__)
        y_true = checked_probabilities(y_true, "y_true")
        return self._pd_fn(checked_probabilities(y_pred, "y_pred"), y_true)

    def get_config(self) -> dict:
        """The metric's configuration, from which Keras rebuilds it.

        Returns:
            `{"name": ..., "dtype": ...}`.
        """
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class AbsolutePD(_PredictionDifference):
    """Streaming `absolute_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them as `y_true`,
    e.g. `model.evaluate(x, reference_model.predict(x))`. Shapes `[N]` or
    `[N, 1]`; supports `sample_weight`.

    Args:
        name: The metric's name in logs and `evaluate`'s results.
        dtype: The dtype of the metric's state and result (None: Keras'
            float type, usually float32).
    """

    def __init__(self, name: str = "absolute_pd", dtype: str | None = None):
        super().__init__(_SPECS["absolute"].per_example, multiclass=False, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class RelativePD(_PredictionDifference):
    """Streaming `relative_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them as `y_true`.
    The result is the (weighted) mean of per-example terms, as in
    `relative_pd`. Shapes `[N]` or `[N, 1]`; supports `sample_weight`.

    Args:
        name: The metric's name in logs and `evaluate`'s results.
        dtype: The dtype of the metric's state and result (None: Keras'
            float type, usually float32).
    """

    def __init__(self, name: str = "relative_pd", dtype: str | None = None):
        super().__init__(_SPECS["relative"].per_example, multiclass=False, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class Top1PD(_PredictionDifference):
    """Streaming `top1_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them (class
    probabilities `[N, K]`, not labels) as `y_true`. Supports `sample_weight`.

    Args:
        name: The metric's name in logs and `evaluate`'s results.
        dtype: The dtype of the metric's state and result (None: Keras'
            float type, usually float32).
    """

    def __init__(self, name: str = "top1_pd", dtype: str | None = None):
        super().__init__(_SPECS["top1"].per_example, multiclass=True, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class L1PD(_PredictionDifference):
    """Streaming `l1_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them (class
    probabilities `[N, K]`, not labels) as `y_true`. Supports `sample_weight`.

    Args:
        name: The metric's name in logs and `evaluate`'s results.
        dtype: The dtype of the metric's state and result (None: Keras'
            float type, usually float32).
    """

    def __init__(self, name: str = "l1_pd", dtype: str | None = None):
        super().__init__(_SPECS["l1"].per_example, multiclass=True, name=name, dtype=dtype)
