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

All four are symmetric in their two arguments. This package offers them as

* eager functions on NumPy arrays, lists or TF tensors, returning a float;
* `pairwise_pd`, which summarises the PD over all pairs of $R$ replicas, with
  a confidence interval and a report of outlying replicas;
* streaming Keras metrics (`AbsolutePD`, `RelativePD`, `Top1PD`, `L1PD`) for
  `model.evaluate` and custom loops, where `y_true` carries a *reference
  model's predictions* (not labels).

It also holds the accuracy metrics `roc_auc` and `log_loss` of binary
predictions against labels.

Examples:
    >>> absolute_pd([0.2, 0.4], [0.4, 0.4])
    0.1
"""

from __future__ import annotations

from tf_smelu.metrics.accuracy import log_loss, roc_auc
from tf_smelu.metrics.keras_metrics import L1PD, AbsolutePD, RelativePD, Top1PD
from tf_smelu.metrics.pairwise import OUTLIER_THRESHOLD, PairwisePD, pairwise_pd
from tf_smelu.metrics.prediction_difference import (
    absolute_pd,
    l1_pd,
    relative_pd,
    top1_pd,
)

__all__ = [
    "L1PD",
    "OUTLIER_THRESHOLD",
    "AbsolutePD",
    "PairwisePD",
    "RelativePD",
    "Top1PD",
    "absolute_pd",
    "l1_pd",
    "log_loss",
    "pairwise_pd",
    "relative_pd",
    "roc_auc",
    "top1_pd",
]
