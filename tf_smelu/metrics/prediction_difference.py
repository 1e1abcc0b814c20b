r"""Per-example prediction-difference formulas and the eager PD functions.

See `tf_smelu.metrics` for the definitions. The formulas in `_SPECS` are shared
by the eager functions here, `tf_smelu.metrics.pairwise_pd` and the streaming
Keras metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import tensorflow as tf

Probabilities = npt.ArrayLike | tf.Tensor
MetricName = Literal["absolute", "relative", "top1", "l1"]

# Per-example formulas. Inputs are aligned float tensors: binary [..., N],
# multiclass [..., N, K]; outputs are the per-example differences [..., N].


def _absolute(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    return tf.abs(p - q)


def _relative(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    # |p - q| / ((p + q) / 2); 0 where p + q == 0, i.e. p == q == 0.
    return tf.math.divide_no_nan(2.0 * tf.abs(p - q), p + q)


def _top1(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.not_equal(tf.argmax(p, axis=-1), tf.argmax(q, axis=-1)), p.dtype)


def _l1(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    return 0.5 * tf.reduce_sum(tf.abs(p - q), axis=-1)


class _Spec(NamedTuple):
    per_example: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    multiclass: bool


_SPECS: dict[str, _Spec] = {
    "absolute": _Spec(_absolute, multiclass=False),
    "relative": _Spec(_relative, multiclass=False),
    "top1": _Spec(_top1, multiclass=True),
    "l1": _Spec(_l1, multiclass=True),
}


def _to_float64(x: Probabilities, name: str) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`{name}` must be an array of probabilities. "
            f"Received: {type(x).__name__} that NumPy cannot convert ({error})"
        ) from error


def _check_probabilities(x: np.ndarray, name: str, multiclass: bool) -> np.ndarray:
    """Validates one model's predictions; returns binary ones flattened to [N]."""
    if multiclass and (x.ndim != 2 or x.shape[1] < 2):
        raise ValueError(
            f"`{name}` must have shape [N, K] with K >= 2 (class probabilities). "
            f"Received: {name}.shape={x.shape}. For binary probabilities use "
            "absolute_pd or relative_pd."
        )
    if not multiclass and not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
        hint = " For class probabilities [N, K] use l1_pd or top1_pd." if x.ndim == 2 else ""
        raise ValueError(
            f"`{name}` must have shape [N] or [N, 1] (binary probabilities). "
            f"Received: {name}.shape={x.shape}.{hint}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"`{name}` must hold at least one example. Received: {name}.shape={x.shape}"
        )
    _check_values(x, name)
    return x if multiclass else x.reshape(-1)


def _range_message(name: str) -> str:
    return f"`{name}` must contain probabilities in [0, 1]."


def _check_values(x: np.ndarray, name: str) -> None:
    """Raises ValueError unless every value of `x` is a probability (no NaN)."""
    nan_count = int(np.isnan(x).sum())
    if nan_count:
        raise ValueError(f"`{name}` contains NaN ({nan_count} of {x.size} values).")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"{_range_message(name)} Received values in [{x.min()}, {x.max()}].")


def checked_probabilities(x: tf.Tensor, name: str) -> tf.Tensor:
    """`x`, once every value is checked to be a probability in [0, 1] (no NaN).

    The eager functions' check, for tensors: run eagerly it raises the same
    `ValueError`; inside a `tf.function` an assertion raises
    `tf.errors.InvalidArgumentError` with the same message when the step
    runs (XLA-compiled code drops assertions, as XLA has no way to raise).

    Args:
        x: Predictions, any shape.
        name: Their name in the message, e.g. `y_pred`.

    Returns:
        `x` (in a graph, depending on the check).

    Raises:
        ValueError: Eagerly, a value is NaN or outside [0, 1].
    """
    if tf.executing_eagerly():
        _check_values(x.numpy(), name)
        return x
    # NaN fails both comparisons, so it is refused too.
    in_range = tf.reduce_all(tf.logical_and(x >= 0, x <= 1))
    check = tf.debugging.Assert(
        in_range, [f"{_range_message(name)} Received values in", tf.reduce_min(x), "..",
                   tf.reduce_max(x)])
    with tf.control_dependencies([check]):
        return tf.identity(x)


def _mean_pd(metric: str, p1: Probabilities, p2: Probabilities) -> float:
    spec = _SPECS[metric]
    a, b = _to_float64(p1, "p1"), _to_float64(p2, "p2")
    if a.shape != b.shape:
        raise ValueError(
            "`p1` and `p2` must have the same shape. "
            f"Received: p1.shape={a.shape}, p2.shape={b.shape}"
        )
    a = _check_probabilities(a, "p1", spec.multiclass)
    b = _check_probabilities(b, "p2", spec.multiclass)
    return float(tf.reduce_mean(spec.per_example(tf.constant(a), tf.constant(b))))


def absolute_pd(p1: Probabilities, p2: Probabilities) -> float:
    r"""Absolute PD of binary probabilities: $\frac{1}{N} \sum_n |p1_n - p2_n|$.

    Args:
        p1: Probabilities of one model on N examples, shape `[N]` or `[N, 1]`,
            values in [0, 1].
        p2: Probabilities of another model on the same examples, same shape
            as `p1`.

    Returns:
        The mean absolute difference, a float in [0, 1].

    Raises:
        ValueError: On mismatched or wrong shapes, no examples, NaN, or values
            outside [0, 1].

    Examples:
        >>> absolute_pd([0.2, 0.4], [0.4, 0.4])  # (0.2 + 0) / 2
        0.1
    """
    return _mean_pd("absolute", p1, p2)


def relative_pd(p1: Probabilities, p2: Probabilities) -> float:
    r"""Relative PD of binary probabilities.

    $$\frac{1}{N} \sum_n \frac{|p1_n - p2_n|}{(p1_n + p2_n) / 2}$$

    where a term is 0 if $p1_n = p2_n = 0$. Each term lies in [0, 2]; the
    metric weighs disagreements on rare positives (small probabilities) more.

    Args:
        p1: Probabilities of one model on N examples, shape `[N]` or `[N, 1]`,
            values in [0, 1].
        p2: Probabilities of another model on the same examples, same shape
            as `p1`.

    Returns:
        The mean relative difference, a float in [0, 2].

    Raises:
        ValueError: On mismatched or wrong shapes, no examples, NaN, or values
            outside [0, 1].
    """
    return _mean_pd("relative", p1, p2)


def top1_pd(p1: Probabilities, p2: Probabilities) -> float:
    r"""Top-1 PD of class probabilities: fraction of examples whose argmax differs.

    $$\frac{1}{N} \sum_n [\arg\max_k p1_{n,k} \ne \arg\max_k p2_{n,k}]$$

    Ties go to the lowest class index.

    Args:
        p1: Class probabilities of one model on N examples, shape `[N, K]`
            with K >= 2, values in [0, 1].
        p2: Class probabilities of another model on the same examples, same
            shape as `p1`.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: On mismatched or wrong shapes, no examples, NaN, or values
            outside [0, 1].
    """
    return _mean_pd("top1", p1, p2)


def l1_pd(p1: Probabilities, p2: Probabilities) -> float:
    r"""L1 PD of class probabilities: mean total-variation distance of rows.

    $$\frac{1}{N} \sum_n \frac{1}{2} \sum_k |p1_{n,k} - p2_{n,k}|$$

    Args:
        p1: Class probabilities of one model on N examples, shape `[N, K]`
            with K >= 2, values in [0, 1].
        p2: Class probabilities of another model on the same examples, same
            shape as `p1`.

    Returns:
        A float, in [0, 1] when rows sum to 1 (this is not checked).

    Raises:
        ValueError: On mismatched or wrong shapes, no examples, NaN, or values
            outside [0, 1].
    """
    return _mean_pd("l1", p1, p2)
