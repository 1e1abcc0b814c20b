"""Runs a `CTRExperimentConfig`: in this process, or one cluster per replica.

`run_ctr_experiment` loads the data once and trains every row's replicas side
by side in this process (`tf_smelu.experiment.harness`), or, with multi-worker
jobs, runs every replica as its own job of `workers` processes
(`tf_smelu.training.replica_jobs`) and compares the chiefs' predictions.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable

import numpy as np

from tf_smelu.data import LoadedDataset, popularity_buckets
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment.config import CTRExperimentConfig
from tf_smelu.experiment.harness import run_replicas, summarize_predictions
from tf_smelu.experiment.report import format_table
from tf_smelu.experiment.seeds import replica_seeds
from tf_smelu.training.problem import load_training_data, model_builder
from tf_smelu.training.replica_jobs import ReplicaJob, run_replica_jobs

EVAL_BATCH_SIZE = 4096


def item_popularity_groups(data: LoadedDataset) -> dict[str, np.ndarray] | None:
    """Masks of the held-out rows whose item is in the head, torso or tail.

    Head: the most popular items carrying 50% of the training traffic, torso
    the next 40%, tail the rest. `None` when the data names no item field.
    """
    if data.item_field is None:
        return None
    bucket = popularity_buckets(
        data.train.features[data.item_field], data.test.features[data.item_field]
    )
    return {f"item_{name}": bucket == index
            for index, name in enumerate(("head", "torso", "tail"))}


def run_ctr_experiment(
    config: CTRExperimentConfig, log: Callable[[str], None] = print
) -> list[dict]:
    """Loads the data, then runs every row of `config`.

    Returns:
        The result rows, in order (sources outer, activations inner; with
        multi-worker jobs: sources, update modes, activations).
    """
    if config.multi_worker:
        return run_multiworker_experiment(config, log)
    training = config.training
    start = time.perf_counter()
    data = load_training_data(training)
    train, test = data.train, data.test
    log(f"Loaded {training.dataset}: {len(train):,} train and {len(test):,} test examples "
        f"in {time.perf_counter() - start:.0f}s (positive rate {train.labels.mean():.3f}).")

    def train_data_fn(order_seed):
        return batched_dataset(train.features, train.labels, training.batch_size, order_seed)

    eval_data = batched_dataset(test.features, test.labels, EVAL_BATCH_SIZE)
    eval_groups = item_popularity_groups(data)
    model_fn = model_builder(training, data.feature_spec)
    steps_per_epoch = -(-len(train) // training.batch_size)
    rows: list[dict] = []
    for sources in config.source_sets:
        for activation in config.activations:
            rows.append(
                run_replicas(
                    model_fn, train_data_fn, eval_data, activation, sources,
                    config.replicas, training, seed=training.seed,
                    steps_per_epoch=steps_per_epoch, progress=config.progress,
                    eval_groups=eval_groups,
                )
            )
            log(format_table(rows[-1:]).splitlines()[-1])
    return rows


def run_multiworker_experiment(
    config: CTRExperimentConfig, log: Callable[[str], None] = print
) -> list[dict]:
    """Runs every replica of `config` as a job of `config.workers` processes.

    One row per (source set, update mode, activation), with
    `"update:<mode>"` appended to the row's sources. Each job's chief
    predicts the held-out split; this process loads the same data once more
    to check the labels and to compute PD by item popularity.
    """
    training = config.training
    data = load_training_data(training)
    eval_groups = item_popularity_groups(data)
    work_dir = config.work_dir or tempfile.mkdtemp(prefix="tf_smelu_jobs_")
    log(f"{config.workers}-worker jobs on localhost, update modes {list(config.update_modes)}; "
        f"weights, predictions and worker logs in {work_dir}")
    rows: list[dict] = []
    for sources in config.source_sets:
        seeds = replica_seeds(sources, config.replicas, training.seed)
        for mode in config.update_modes:
            row_training = dataclasses.replace(training, update_mode=mode)
            for activation in config.activations:
                jobs = [
                    ReplicaJob(
                        str(activation), mode, r, work_dir,
                        embedding_seed=s.embedding_seed, tower_seed=s.tower_seed,
                        # None: every replica reads the rows in the same order.
                        order_seed=s.order_seed if s.order_seed is not None else training.seed,
                        tag="+".join(sources),
                    )
                    for r, s in enumerate(seeds)
                ]
                result = run_replica_jobs(row_training, jobs, config.workers, config.job_timeout,
                                          progress=config.progress)
                if not np.array_equal(result.labels, data.test.labels):
                    raise RuntimeError(
                        f"The workers' held-out labels differ from this process's ({jobs[0].name})."
                    )
                row = summarize_predictions(
                    activation, [*sources, f"update:{mode}"], result.probabilities,
                    result.labels, seed=training.seed, eval_groups=eval_groups,
                )
                row.update(train_seconds=float(np.mean(result.seconds)), update_mode=mode,
                           workers=config.workers)
                rows.append(row)
                log(format_table(rows[-1:]).splitlines()[-1])
    return rows
