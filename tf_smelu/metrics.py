r"""Prediction difference (PD): how much two models disagree on the same inputs.

Two models trained identically except for randomness (initialisation, data
order, hardware nondeterminism) can give different predictions on the same
examples. The prediction difference quantifies that irreproducibility. With
predictions $p$ and $q$ of two models on $N$ examples:

* binary probabilities ($p_n \in [0, 1]$, shape `[N]` or `[N, 1]`)

  - `absolute_pd`: $\frac{1}{N} \sum_n |p_n - q_n|$
  - `relative_pd`: $\frac{1}{N} \sum_n \frac{|p_n - q_n|}{(p_n + q_n) / 2}$,
    a term being 0 where $p_n = q_n = 0$

* class-probability rows ($p_{n,k} \in [0, 1]$, shape `[N, K]`)

  - `top1_pd`: $\frac{1}{N} \sum_n [\arg\max_k p_{n,k} \ne \arg\max_k q_{n,k}]$
    (ties go to the lowest class index)
  - `l1_pd`: $\frac{1}{N} \sum_n \frac{1}{2} \sum_k |p_{n,k} - q_{n,k}|$

All four are symmetric in their two arguments. This module offers them as

* eager functions on NumPy arrays, lists or TF tensors, returning a float;
* `pairwise_pd`, which summarises the PD over all pairs of $R$ replicas, with
  a confidence interval and a report of outlying replicas;
* streaming Keras metrics (`AbsolutePD`, `RelativePD`, `Top1PD`, `L1PD`) for
  `model.evaluate` and custom loops, where `y_true` carries a *reference
  model's predictions* (not labels).

Example:

>>> absolute_pd([0.2, 0.4], [0.4, 0.4])
0.1
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, NamedTuple, Sequence, Union

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

__all__ = [
    "absolute_pd",
    "relative_pd",
    "top1_pd",
    "l1_pd",
    "pairwise_pd",
    "PairwisePD",
    "AbsolutePD",
    "RelativePD",
    "Top1PD",
    "L1PD",
]

_PACKAGE = "tf_smelu"

Probabilities = Union[npt.ArrayLike, tf.Tensor]
MetricName = Literal["absolute", "relative", "top1", "l1"]

# --------------------------------------------------------------------------
# Per-example formulas, shared by the eager functions and the Keras metrics.
# Inputs are aligned float tensors: binary [..., N], multiclass [..., N, K];
# outputs are the per-example differences [..., N].
# --------------------------------------------------------------------------


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

# --------------------------------------------------------------------------
# Eager functions
# --------------------------------------------------------------------------


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
    nan_count = int(np.isnan(x).sum())
    if nan_count:
        raise ValueError(f"`{name}` contains NaN ({nan_count} of {x.size} values).")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(
            f"`{name}` must contain probabilities in [0, 1]. "
            f"Received values in [{x.min()}, {x.max()}]."
        )
    return x if multiclass else x.reshape(-1)


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
        p1, p2: Probabilities of two models on the same N examples, shape
            `[N]` or `[N, 1]` (both the same), values in [0, 1].

    Returns:
        The mean absolute difference, a float in [0, 1].

    Raises:
        ValueError: On mismatched or wrong shapes, no examples, NaN, or values
            outside [0, 1].
    """
    return _mean_pd("absolute", p1, p2)


def relative_pd(p1: Probabilities, p2: Probabilities) -> float:
    r"""Relative PD of binary probabilities.

    $$\frac{1}{N} \sum_n \frac{|p1_n - p2_n|}{(p1_n + p2_n) / 2}$$

    where a term is 0 if $p1_n = p2_n = 0$. Each term lies in [0, 2]; the
    metric weighs disagreements on rare positives (small probabilities) more.
    Arguments, return value and errors as in `absolute_pd`.
    """
    return _mean_pd("relative", p1, p2)


def top1_pd(p1: Probabilities, p2: Probabilities) -> float:
    r"""Top-1 PD of class probabilities: fraction of examples whose argmax differs.

    $$\frac{1}{N} \sum_n [\arg\max_k p1_{n,k} \ne \arg\max_k p2_{n,k}]$$

    Ties go to the lowest class index.

    Args:
        p1, p2: Class probabilities of two models on the same N examples,
            shape `[N, K]` with K >= 2, values in [0, 1].

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

    In [0, 1] when rows sum to 1 (this is not checked). Arguments and errors
    as in `top1_pd`.
    """
    return _mean_pd("l1", p1, p2)


# --------------------------------------------------------------------------
# Pairwise summary over R replicas
# --------------------------------------------------------------------------

OUTLIER_THRESHOLD = 3.5
"""Default robust z-score above which `pairwise_pd` flags a replica."""


@dataclass(frozen=True)
class PairwisePD:
    """Summary of a PD metric over all R(R-1)/2 pairs of R replicas.

    Attributes:
        metric: The PD metric name ("absolute", "relative", "top1" or "l1").
        method: How `ci` was computed ("bootstrap" or "t").
        confidence: Confidence level of `ci`.
        mean: Mean of the pair values, the usual point estimate.
        median: Median of the pair values.
        std: Sample standard deviation (ddof=1) of the pair values; NaN for
            R = 2 (a single pair).
        ci: `(lo, hi)` approximate confidence interval for the expected PD
            between two replicas; `(nan, nan)` for R = 2.
        pair_values: Read-only mapping `(i, j) -> PD`, for `i < j`.
        replica_means: For each replica, its mean PD to the other replicas.
        robust_z: Robust z-score of each of `replica_means` (see `pairwise_pd`).
        outliers: Indices of replicas with `|robust_z| > outlier_threshold`.
    """

    metric: str
    method: str
    confidence: float
    mean: float
    median: float
    std: float
    ci: tuple[float, float]
    pair_values: Mapping[tuple[int, int], float] = field(repr=False)
    replica_means: tuple[float, ...]
    robust_z: tuple[float, ...]
    outliers: tuple[int, ...]

    @property
    def num_replicas(self) -> int:
        return len(self.replica_means)


def _student_t_two_sided(confidence: float, df: int) -> float:
    """Critical value t with P(|T| <= t) = confidence for Student's t, integer df.

    Bisection on the exact finite series for P(|T| <= t) of Abramowitz &
    Stegun 26.7.3 (odd df) and 26.7.4 (even df), with theta = atan(t / sqrt(df)).
    """
    odd = df % 2 == 1
    k = np.arange(1, (df - 1) // 2 if odd else df // 2)
    # Series coefficients: 1, 2/3, 2*4/(3*5), ... (odd); 1, 1/2, 1*3/(2*4), ... (even).
    ratios = 2 * k / (2 * k + 1) if odd else (2 * k - 1) / (2 * k)
    coefficients = np.concatenate([[1.0], np.cumprod(ratios)])
    powers = 2 * np.arange(coefficients.size)

    def prob_abs_le(t: float) -> float:
        theta = math.atan(t / math.sqrt(df))
        series = float(np.dot(coefficients, math.cos(theta) ** powers))
        if not odd:
            return math.sin(theta) * series
        if df == 1:
            return 2.0 * theta / math.pi
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)

    lo, hi = 0.0, 1.0
    while prob_abs_le(hi) < confidence:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if prob_abs_le(mid) < confidence else (lo, mid)
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def _bootstrap_ci(
    distances: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the mean pair PD, resampling replicas (not pairs).

    A resample draws R replicas with replacement, as multiplicities c_i, and
    averages the PD over its pairs of distinct replicas:
    (c^T D c / 2) / ((R^2 - sum c_i^2) / 2), with D the zero-diagonal R x R
    matrix of pair values. Resamples of a single distinct replica are dropped.
    """
    r = distances.shape[0]
    counts = rng.multinomial(r, np.full(r, 1.0 / r), size=n_resamples).astype(np.float64)
    total = np.einsum("bi,ij,bj->b", counts, distances, counts)
    pairs = r * r - np.sum(counts * counts, axis=1)
    valid = pairs > 0
    stats = total[valid] / pairs[valid]
    lo, hi = np.quantile(stats, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


def _robust_z(values: np.ndarray) -> np.ndarray:
    """Modified z-scores 0.6745 (x - median) / MAD (Iglewicz & Hoaglin, 1993).

    If the MAD is 0, falls back to (x - median) / (1.2533 * mean absolute
    deviation); if that is 0 too, all values are equal and the scores are 0.
    """
    deviations = values - np.median(values)
    mad = np.median(np.abs(deviations))
    if mad > 0:
        return 0.6745 * deviations / mad
    mean_ad = np.mean(np.abs(deviations))
    if mean_ad > 0:
        return deviations / (1.253314 * mean_ad)
    return np.zeros_like(values)


def pairwise_pd(
    predictions: Union[Sequence[Probabilities], Probabilities],
    metric: MetricName = "relative",
    *,
    confidence: float = 0.95,
    method: Literal["bootstrap", "t"] = "bootstrap",
    n_resamples: int = 2000,
    seed: Union[int, np.random.Generator, None] = 0,
    outlier_threshold: float = OUTLIER_THRESHOLD,
) -> PairwisePD:
    """Computes a PD metric on all R(R-1)/2 pairs of R replicas and summarises it.

    Confidence interval. Pairs share replicas, so the pair values are not
    independent and both intervals are approximate:

    * `method="bootstrap"` (default) resamples *replicas* with replacement,
      recomputes the mean PD over the pairs of distinct replicas of each
      resample, and reports the percentile interval. Resampling replicas
      respects their dependence, which makes it the honest choice; it is
      deterministic for a given `seed`, but coarse and too narrow for small
      R (say < 10), like any bootstrap from few units.
    * `method="t"` is the Student-t interval `mean +/- t * std / sqrt(P)`
      over the P pair values with P - 1 degrees of freedom. It treats pairs as
      independent and is therefore too narrow; use it for comparison only.

    Outliers. Replica i's mean PD to the others is `replica_means[i]`; its
    robust z-score is `0.6745 * (m_i - median(m)) / MAD(m)` (Iglewicz &
    Hoaglin); replicas with `|z| > outlier_threshold` (3.5 by default) are
    reported in `outliers`. A replica that is far off raises every replica's
    mean but its own the most, so it stands out; with R = 2 nothing can be
    flagged.

    Args:
        predictions: R replicas' predictions on the same examples: a sequence
            of R arrays/tensors, or one array of shape `[R, N]`, `[R, N, 1]`
            (binary metrics) or `[R, N, K]` (multiclass metrics).
        metric: "absolute", "relative" (binary), "top1" or "l1" (multiclass).
        confidence: Level of the interval, in (0, 1).
        method: "bootstrap" or "t", see above.
        n_resamples: Number of bootstrap resamples.
        seed: Seed or `np.random.Generator` for the bootstrap; `None` for
            fresh OS entropy (non-reproducible).
        outlier_threshold: Robust z-score above which a replica is flagged.

    Returns:
        A `PairwisePD`.

    Raises:
        ValueError: On an unknown metric or method, a confidence outside
            (0, 1), fewer than 2 replicas, or invalid predictions (as for
            the single-pair functions).
    """
    if metric not in _SPECS:
        raise ValueError(f"`metric` must be one of {sorted(_SPECS)}. Received: metric={metric!r}")
    if method not in ("bootstrap", "t"):
        raise ValueError(f"`method` must be 'bootstrap' or 't'. Received: method={method!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1). Received: confidence={confidence}")
    if method == "bootstrap" and n_resamples < 1:
        raise ValueError(f"`n_resamples` must be >= 1. Received: n_resamples={n_resamples}")
    spec = _SPECS[metric]
    stack = _to_float64(predictions, "predictions")
    if stack.ndim < 2 or stack.shape[0] < 2:
        raise ValueError(
            "`predictions` must hold at least 2 replicas' predictions, shaped [R, N] or "
            f"[R, N, K] with R >= 2. Received: predictions.shape={stack.shape}"
        )
    checked = [
        _check_probabilities(x, f"predictions[{i}]", spec.multiclass) for i, x in enumerate(stack)
    ]
    replicas = tf.constant(np.stack(checked))

    r = stack.shape[0]
    distances = np.zeros((r, r))
    for i in range(r - 1):
        row = tf.reduce_mean(spec.per_example(replicas[i : i + 1], replicas[i + 1 :]), axis=-1)
        distances[i, i + 1 :] = distances[i + 1 :, i] = row.numpy()
    rows, cols = np.triu_indices(r, k=1)
    values = distances[rows, cols]

    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
    if values.size < 2:
        ci = (math.nan, math.nan)
    elif method == "t":
        half = _student_t_two_sided(confidence, values.size - 1) * std / math.sqrt(values.size)
        ci = (mean - half, mean + half)
    else:
        ci = _bootstrap_ci(distances, confidence, n_resamples, np.random.default_rng(seed))

    replica_means = distances.sum(axis=1) / (r - 1)
    robust_z = _robust_z(replica_means)
    return PairwisePD(
        metric=metric,
        method=method,
        confidence=confidence,
        mean=mean,
        median=float(np.median(values)),
        std=std,
        ci=ci,
        pair_values=types.MappingProxyType(
            {(int(i), int(j)): float(v) for i, j, v in zip(rows, cols, values)}
        ),
        replica_means=tuple(float(m) for m in replica_means),
        robust_z=tuple(float(z) for z in robust_z),
        outliers=tuple(int(i) for i in np.flatnonzero(np.abs(robust_z) > outlier_threshold)),
    )


# --------------------------------------------------------------------------
# Streaming Keras metrics
# --------------------------------------------------------------------------


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
    Values are not range-checked here, to keep `update_state` graph- and
    XLA-friendly; use the eager functions to validate.

    Args:
        per_example: Function `(p, q) -> per-example PD`.
        multiclass: Whether inputs are class-probability rows `[N, K]`.
        name: Metric name.
        dtype: Dtype of the accumulators and result (float32 by default).
    """

    def __init__(self, per_example, *, multiclass: bool, name: str, dtype=None):
        super().__init__(fn=self._per_example_pd, name=name, dtype=dtype)
        self._pd_fn = per_example
        self._multiclass = multiclass
        self._direction = "down"

    def _per_example_pd(self, y_true, y_pred):
        y_true, y_pred = _align(y_true, y_pred, self._multiclass, type(self).__name__)
        return self._pd_fn(y_pred, y_true)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AbsolutePD(_PredictionDifference):
    """Streaming `absolute_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them as `y_true`,
    e.g. `model.evaluate(x, reference_model.predict(x))`. Shapes `[N]` or
    `[N, 1]`; supports `sample_weight`.
    """

    def __init__(self, name: str = "absolute_pd", dtype=None):
        super().__init__(_absolute, multiclass=False, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RelativePD(_PredictionDifference):
    """Streaming `relative_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them as `y_true`.
    The result is the (weighted) mean of per-example terms, as in
    `relative_pd`. Shapes `[N]` or `[N, 1]`; supports `sample_weight`.
    """

    def __init__(self, name: str = "relative_pd", dtype=None):
        super().__init__(_relative, multiclass=False, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Top1PD(_PredictionDifference):
    """Streaming `top1_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them (class
    probabilities `[N, K]`, not labels) as `y_true`. Supports `sample_weight`.
    """

    def __init__(self, name: str = "top1_pd", dtype=None):
        super().__init__(_top1, multiclass=True, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class L1PD(_PredictionDifference):
    """Streaming `l1_pd` against a reference model's predictions.

    Compare against a reference model's predictions: pass them (class
    probabilities `[N, K]`, not labels) as `y_true`. Supports `sample_weight`.
    """

    def __init__(self, name: str = "l1_pd", dtype=None):
        super().__init__(_l1, multiclass=True, name=name, dtype=dtype)
