"""`pairwise_pd`: a PD metric over all pairs of R replicas, with a CI and outliers."""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tf_smelu.metrics.prediction_difference import (
    _SPECS,
    MetricName,
    Probabilities,
    _check_probabilities,
    _to_float64,
)

OUTLIER_THRESHOLD = 3.5
"""Default robust z-score above which `pairwise_pd` flags a replica."""


@dataclass(frozen=True)
class PairwisePD:
    """Summary of a PD metric over all R(R-1)/2 pairs of R replicas.

    Attributes:
        metric: The PD metric name ("absolute", "relative", "top1" or "l1").
        confidence: Confidence level of `ci`.
        mean: Mean of the pair values, the usual point estimate.
        median: Median of the pair values.
        std: Sample standard deviation (ddof=1) of the pair values; NaN for
            R = 2 (a single pair).
        ci: `(lo, hi)` approximate bootstrap confidence interval for the
            expected PD between two replicas; `(nan, nan)` for R = 2.
        pair_values: Read-only mapping `(i, j) -> PD`, for `i < j`.
        replica_means: For each replica, its mean PD to the other replicas.
        robust_z: Robust z-score of each of `replica_means` (see `pairwise_pd`).
        outliers: Indices of replicas with `|robust_z| > outlier_threshold`.
    """

    metric: str
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
        """The number R of replicas."""
        return len(self.replica_means)


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
    # Means of the same pair PDs summed in another order differ by rounding
    # (~1e-17): such a "spread" is 0, or the scores would blow up to ~1e15.
    rounding = 64 * np.finfo(np.float64).eps * float(np.max(np.abs(values), initial=0.0))
    mad = np.median(np.abs(deviations))
    if mad > rounding:
        return 0.6745 * deviations / mad
    mean_ad = np.mean(np.abs(deviations))
    if mean_ad > rounding:
        return deviations / (1.253314 * mean_ad)
    return np.zeros_like(values)


def pairwise_pd(
    predictions: Sequence[Probabilities] | Probabilities,
    metric: MetricName = "relative",
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | np.random.Generator | None = 0,
    outlier_threshold: float = OUTLIER_THRESHOLD,
) -> PairwisePD:
    """Computes a PD metric on all R(R-1)/2 pairs of R replicas and summarises it.

    Confidence interval. Pairs share replicas, so the pair values are not
    independent. The interval therefore resamples *replicas* with
    replacement, recomputes the mean PD over the pairs of distinct replicas
    of each resample, and reports the percentile interval. It is
    deterministic for a given `seed`, but approximate: coarse and too narrow
    for small R (say < 10), like any bootstrap from few units.

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
        n_resamples: Number of bootstrap resamples.
        seed: Seed or `np.random.Generator` for the bootstrap; `None` for
            fresh OS entropy (non-reproducible).
        outlier_threshold: Robust z-score above which a replica is flagged.

    Returns:
        A `PairwisePD`.

    Raises:
        ValueError: On an unknown metric, a confidence outside (0, 1), fewer
            than 1 resample or 2 replicas, or invalid predictions (as for the
            single-pair functions).

    Examples:
        Four replicas' click probabilities on three examples; the fourth
        disagrees with the others:

        >>> summary = pairwise_pd([[0.2, 0.4, 0.9], [0.3, 0.4, 0.8],
        ...                        [0.2, 0.6, 0.9], [0.9, 0.1, 0.2]], "absolute")
        >>> round(summary.mean, 3), summary.outliers
        (0.328, (3,))
    """
    if metric not in _SPECS:
        raise ValueError(f"`metric` must be one of {sorted(_SPECS)}. Received: metric={metric!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1). Received: confidence={confidence}")
    if n_resamples < 1:
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
    if values.size < 2:
        std, ci = math.nan, (math.nan, math.nan)
    else:
        std = float(np.std(values, ddof=1))
        ci = _bootstrap_ci(distances, confidence, n_resamples, np.random.default_rng(seed))

    replica_means = distances.sum(axis=1) / (r - 1)
    robust_z = _robust_z(replica_means)
    return PairwisePD(
        metric=metric,
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
