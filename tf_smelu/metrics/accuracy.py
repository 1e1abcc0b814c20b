"""Accuracy of binary predictions against labels: `roc_auc` and `log_loss`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _aligned_float64(
    labels: npt.ArrayLike, values: npt.ArrayLike, values_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Converts both arguments to flat float64 arrays of the same, non-zero size."""
    arrays = []
    for name, x in (("labels", labels), (values_name, values)):
        try:
            arrays.append(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`{name}` must be a numeric array. "
                f"Received: {type(x).__name__} that NumPy cannot convert ({error})"
            ) from error
    y, v = arrays
    if y.shape != v.shape:
        raise ValueError(
            f"`labels` and `{values_name}` must have the same shape. "
            f"Received: labels.shape={y.shape}, {values_name}.shape={v.shape}"
        )
    if y.size == 0:
        raise ValueError(f"`labels` must hold at least one example. Received: shape={y.shape}")
    for name, x in (("labels", y), (values_name, v)):
        nan_count = int(np.isnan(x).sum())
        if nan_count:
            raise ValueError(f"`{name}` contains NaN ({nan_count} of {x.size} values).")
    return y.reshape(-1), v.reshape(-1)


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    r"""Exact area under the ROC curve, with ties counted as half.

    With $P$ positive and $M$ negative examples, this is the Mann-Whitney
    statistic

    $$\mathrm{AUC} = \frac{1}{P M} \sum_{i: y_i = 1} \sum_{j: y_j = 0}
        \left([s_i > s_j] + \tfrac{1}{2} [s_i = s_j]\right)
        = \frac{\sum_{i: y_i = 1} \mathrm{rank}_i - P (P + 1) / 2}{P M},$$

    computed in $O(N \log N)$ from the ranks of the scores, tied scores
    sharing their average rank.

    Args:
        labels: 0/1 (or boolean) labels, any shape.
        scores: Scores of the same shape as `labels`, higher meaning more
            likely positive (probabilities, logits, ...).

    Returns:
        The AUC, a float in [0, 1].

    Raises:
        ValueError: If the shapes differ, there are no examples, a label is
            not 0 or 1, a value is NaN, or only one class is present.

    Examples:
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y, s = _aligned_float64(labels, scores, "scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(
            f"`labels` must be 0 or 1. Received values: {np.unique(y)[:10].tolist()}"
        )
    positive = y == 1.0
    positives = int(positive.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            "`roc_auc` needs both positive and negative labels. "
            f"Received: {positives} positive and {negatives} negative labels."
        )
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(y.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    u_statistic = ranks[positive].sum() - positives * (positives + 1) / 2
    return float(u_statistic / (positives * negatives))


def log_loss(labels: npt.ArrayLike, probabilities: npt.ArrayLike, eps: float = 1e-7) -> float:
    r"""Mean binary cross-entropy of predicted probabilities.

    $$-\frac{1}{N} \sum_n \left(y_n \log \hat p_n + (1 - y_n) \log (1 - \hat p_n)\right),
        \quad \hat p_n = \min(\max(p_n, \epsilon), 1 - \epsilon)$$

    Clipping to $[\epsilon, 1 - \epsilon]$ keeps a confidently wrong
    prediction finite ($-\log \epsilon$) instead of infinite.

    Args:
        labels: Labels in [0, 1] (0/1, or soft labels), any shape.
        probabilities: Predicted probabilities of the positive class, same
            shape as `labels`.
        eps: Clipping margin, in (0, 0.5).

    Returns:
        The mean log loss, a non-negative float.

    Raises:
        ValueError: If the shapes differ, there are no examples, a value is
            NaN or outside [0, 1], or `eps` is outside (0, 0.5).

    Examples:
        >>> round(log_loss([1, 0], [0.8, 0.4]), 6)  # -(log 0.8 + log 0.6) / 2
        0.366985
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"`eps` must be in (0, 0.5). Received: eps={eps}")
    y, p = _aligned_float64(labels, probabilities, "probabilities")
    for name, x in (("labels", y), ("probabilities", p)):
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(
                f"`{name}` must be in [0, 1]. Received values in [{x.min()}, {x.max()}]."
            )
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))
