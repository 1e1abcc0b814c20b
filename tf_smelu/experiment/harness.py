"""The replica harness: R replicas per row, their accuracy and their disagreement.

For an activation and a set of irreproducibility sources, R replicas are
trained that are identical except for the sources switched on, then evaluated
on the same held-out examples. A result row holds their accuracy (AUC, log
loss) next to their prediction difference over all R (R - 1) / 2 pairs, with
a confidence interval: the paper's claim is about the *tradeoff*, so neither
number means much alone. `tf_smelu/experiment/results.schema.json` documents every field.

The harness is generic: it takes a `model_fn(activation, embedding_seed,
tower_seed)` and a `train_data_fn(order_seed)`, so users measure their own
models and data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_smelu import metrics
from tf_smelu.experiment.seeds import op_determinism, parse_sources, replica_seeds
from tf_smelu.registry import Activation
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.replicas import (
    ReplicaTrainer,
    check_finite,
    predict_probabilities,
    released_custom_gradients,
)
from tf_smelu.training.updates import delay_schedule

ModelFn = Callable[..., keras.Model]
DataFn = Callable[[int | None], tf.data.Dataset]


# The replicas' graphs are not differentiated again once they are trained: they can go.
@released_custom_gradients()
def _train_and_predict(
    model_fn, train_data_fn, eval_data, activation, sources, replicas, train_config,
    seed, steps_per_epoch, progress, first_replica=0,
):
    """Builds, trains and evaluates replicas `first_replica..replicas-1`.

    Returns:
        `(probabilities, labels, fit, config)`.
    """
    seeds = replica_seeds(sources, replicas, seed)[first_replica:]
    keras_activation = activation.to_keras()
    models = [
        model_fn(keras_activation, embedding_seed=s.embedding_seed, tower_seed=s.tower_seed)
        for s in seeds
    ]
    if "stale" in sources:
        train_config = dataclasses.replace(train_config, update_mode="stale")
    schedules = None
    if train_config.update_mode == "stale":
        steps = train_config.steps or steps_per_epoch and steps_per_epoch * train_config.epochs
        if not steps:
            raise ValueError("Stale updates need `steps_per_epoch` for the delay schedules.")
        schedules = [delay_schedule(steps, train_config.max_delay, s.schedule_seed) for s in seeds]
    trainer = ReplicaTrainer(models, train_config, schedules)
    if "order" in sources:
        datasets = [train_data_fn(s.order_seed) for s in seeds]
    else:
        datasets = train_data_fn(None)
    description = f"{activation.label} [{'+'.join(sources) or 'none'}]"
    fit = trainer.fit(datasets, steps_per_epoch=steps_per_epoch, progress=progress,
                      description=description)
    probabilities, labels = predict_probabilities(models, eval_data)
    # The last update is after the last loss the trainer checked.
    check_finite(probabilities, fit["steps"], description, train_config.learning_rate,
                 "held-out predictions")
    return probabilities, labels, fit, train_config


def run_replicas(
    model_fn: ModelFn,
    train_data_fn: DataFn,
    eval_data: tf.data.Dataset,
    activation: Activation | str,
    sources: Sequence[str],
    replicas: int,
    train_config: TrainingConfig = TrainingConfig(),
    seed: int = 0,
    steps_per_epoch: int | None = None,
    progress: bool = True,
    eval_groups: Mapping[str, np.ndarray] | None = None,
    previous: np.ndarray | None = None,
    on_predictions: Callable[[np.ndarray], None] | None = None,
) -> dict[str, object]:
    """Trains and evaluates R replicas; returns one result row.

    Args:
        model_fn: `model_fn(activation, embedding_seed=..., tower_seed=...)`
            returning a built Keras model that outputs click logits.
        train_data_fn: `train_data_fn(order_seed)` returning batched
            `(features, labels)`; `order_seed=None` means the fixed order.
        eval_data: Batched held-out `(features, labels)`, same for all.
        activation: What to put in the hidden layers (a spec such as
            `"smelu:0.2"` or a parsed `Activation`).
        sources: Irreproducibility sources switched on (see
            `tf_smelu.experiment.SOURCES`).
        replicas: R >= 2.
        train_config: Training settings (`epochs` or `steps`,
            `learning_rate`, `update_mode`, `max_delay`, `jit_compile`; the
            batch size is `train_data_fn`'s); `stale` in `sources` turns on
            stale updates with random per-replica delay schedules.
        seed: Base seed of everything.
        steps_per_epoch: For the progress bar (and the delay schedule).
        progress: Show progress bars.
        eval_groups: Optional name -> boolean mask over the evaluation
            examples (e.g. head/torso/tail ids); the row then holds the
            relative PD within each group under `rel_pd_by_group`.
        previous: `[R0, N]` held-out probabilities of this row's first R0
            replicas, trained earlier with the same arguments: only
            replicas R0..R-1 are trained (replica seeds depend only on the
            replica's index), and the row summarizes all R. The row's
            `train_seconds` and `train_loss` are the new replicas'.
        on_predictions: Called with all R replicas' `[R, N]` probabilities
            (e.g. kept for a later `previous`; rows do not hold them).

    Raises:
        tf_smelu.training.replicas.DivergedError: A loss or a held-out
            prediction became NaN or infinite (learning rate too high).
        ValueError: `replicas < 2`, `previous` already holds `replicas`
            replicas, or a source or activation is unknown.

    Returns:
        A row of `results.json` (see `tf_smelu/experiment/results.schema.json`): accuracy,
        PD with its interval, the median pair PD, outlying replicas,
        per-replica AUCs and per-group PD.
    """
    sources = parse_sources("+".join(sources))
    if isinstance(activation, str):
        activation = Activation.parse(activation)
    if replicas < 2:
        raise ValueError(f"`replicas` must be >= 2. Received: replicas={replicas}")
    first = 0 if previous is None else len(previous)
    if first >= replicas:
        raise ValueError(f"`previous` holds {first} replicas; nothing left of replicas={replicas}.")
    with op_determinism("op_nondeterminism" not in sources):
        probabilities, labels, fit, train_config = _train_and_predict(
            model_fn, train_data_fn, eval_data, activation, sources, replicas,
            train_config, seed, steps_per_epoch, progress, first_replica=first,
        )
    if previous is not None:
        probabilities = np.concatenate([np.asarray(previous), probabilities])
    row = summarize_predictions(
        activation, sources, probabilities, labels, seed=seed, eval_groups=eval_groups
    )
    row.update(
        train_loss=fit["loss"],
        train_seconds=fit["seconds"],
        steps=fit["steps"],
        update_mode=train_config.update_mode,
    )
    if on_predictions is not None:
        on_predictions(probabilities)
    return row


def summarize_predictions(
    activation: Activation,
    sources: Sequence[str],
    probabilities: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    eval_groups: Mapping[str, np.ndarray] | None = None,
) -> dict[str, object]:
    """Accuracy and PD of R replicas' held-out predictions: a result row.

    Args:
        activation: The replicas' activation.
        sources: What differed between the replicas (names go in the row).
        probabilities: `[R, N]` click probabilities on the same examples.
        labels: `[N]` 0/1 labels.
        seed: Seed of the bootstrap intervals.
        eval_groups: Optional name -> boolean mask over the N examples; the
            row then holds the relative PD within each non-empty group.

    Returns:
        The row fields that predictions determine (`tf_smelu/experiment/results.schema.json`):
        accuracy, PD with its interval, the median pair, outlying replicas,
        per-replica AUCs, per-group PD and whether all replicas predicted
        bit-identically.

    Raises:
        ValueError: if a group's mask does not have the labels' shape, or
            the predictions or labels are invalid (as for
            `tf_smelu.metrics.roc_auc` and `pairwise_pd`).
    """
    probabilities = np.asarray(probabilities, np.float64)
    aucs = [metrics.roc_auc(labels, p) for p in probabilities]
    losses = [metrics.log_loss(labels, p) for p in probabilities]
    relative = metrics.pairwise_pd(probabilities, "relative", seed=seed)
    absolute = metrics.pairwise_pd(probabilities, "absolute", seed=seed)
    by_group = {}
    for name, mask in (eval_groups or {}).items():
        mask = np.asarray(mask, bool)
        if mask.shape != labels.shape:
            raise ValueError(
                f"eval_groups[{name!r}] has shape {mask.shape}; expected {labels.shape}."
            )
        if mask.any():
            group = metrics.pairwise_pd(probabilities[:, mask], "relative", seed=seed)
            by_group[name] = {"rel_pd": group.mean, "rel_pd_ci": list(group.ci),
                              "examples": int(mask.sum())}
    return {
        "activation": activation.name,
        "beta": activation.beta,
        "label": activation.label,
        "spec": str(activation),
        "replicas": int(probabilities.shape[0]),
        "sources": list(sources),
        "auc_mean": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs, ddof=1)),
        "logloss_mean": float(np.mean(losses)),
        "abs_pd": absolute.mean,
        "rel_pd": relative.mean,
        "rel_pd_ci": [relative.ci[0], relative.ci[1]],
        "rel_pd_median": relative.median,
        "rel_pd_std": relative.std,
        "outlier_replicas": list(relative.outliers),
        "identical_replicas": bool(all(np.array_equal(probabilities[0], p) for p in probabilities)),
        "aucs": aucs,
        "rel_pd_pairs": [relative.pair_values[pair] for pair in zip(*np.triu_indices(len(aucs), 1))],
        "rel_pd_by_group": by_group,
    }
