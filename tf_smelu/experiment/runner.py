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
from collections.abc import Callable, Sequence

import numpy as np

from tf_smelu.data import LoadedDataset, popularity_buckets
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment.config import CTRExperimentConfig
from tf_smelu.experiment.harness import run_replicas, summarize_predictions
from tf_smelu.experiment.report import format_table
from tf_smelu.experiment.results import row_key
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


RowsCallback = Callable[[list[dict]], None]


class _RunRows:
    """The rows of one run: earlier finished rows reused, new rows reported as they finish."""

    def __init__(self, finished: Sequence[dict], on_row: RowsCallback | None,
                 log: Callable[[str], None]):
        self._finished = {row_key(row): row for row in finished}
        self._on_row = on_row
        self._log = log
        self.rows: list[dict] = []

    def reuse(self, key: tuple[str, str]) -> bool:
        """Takes the earlier row of `key`, if there is one."""
        row = self._finished.get(key)
        if row is not None:
            self.rows.append(row)
            self._log(format_table([row]).splitlines()[-1] + "  (finished earlier)")
        return row is not None

    def finished_all(self, keys: Sequence[tuple[str, str]]) -> bool:
        return all(key in self._finished for key in keys)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self._on_row is not None:  # saved first: the line tells the user it is safe
            self._on_row(self.all())
        self._log(format_table([row]).splitlines()[-1])

    def all(self) -> list[dict]:
        """This run's rows, then earlier rows it did not (or not yet) reach: none is lost."""
        keys = {row_key(row) for row in self.rows}
        return self.rows + [row for key, row in self._finished.items() if key not in keys]


def planned_rows(config: CTRExperimentConfig) -> list[tuple[str, str]]:
    """The `row_key` of every row `config` runs, in order."""
    return [
        ("+".join(sources), activation.label)
        for sources in config.source_sets for activation in config.activations
    ] if not config.multi_worker else [
        ("+".join([*sources, f"update:{mode}"]), activation.label)
        for sources in config.source_sets for mode in config.update_modes
        for activation in config.activations
    ]


def run_ctr_experiment(
    config: CTRExperimentConfig,
    log: Callable[[str], None] = print,
    finished: Sequence[dict] = (),
    on_row: RowsCallback | None = None,
) -> list[dict]:
    """Loads the data, then runs every row of `config`.

    Args:
        config: What to run.
        log: Where progress lines go.
        finished: Rows of an earlier run of the same configuration (see
            `tf_smelu.experiment.finished_rows`): rows with the same
            `row_key` are reused, not trained again.
        on_row: Called with all rows so far (finished earlier ones
            included) whenever a row finishes, e.g. to write results.json.

    Returns:
        The result rows, in order (sources outer, activations inner; with
        multi-worker jobs: sources, update modes, activations), then any
        rows of `finished` that `config` does not plan.
    """
    run = _RunRows(finished, on_row, log)
    if run.finished_all(planned_rows(config)):
        for key in planned_rows(config):
            run.reuse(key)
        return run.all()  # nothing left to train: do not even load the data
    if config.multi_worker:
        return run_multiworker_experiment(config, log, run)
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
    for sources in config.source_sets:
        for activation in config.activations:
            if run.reuse(("+".join(sources), activation.label)):
                continue
            run.add(
                run_replicas(
                    model_fn, train_data_fn, eval_data, activation, sources,
                    config.replicas, training, seed=training.seed,
                    steps_per_epoch=steps_per_epoch, progress=config.progress,
                    eval_groups=eval_groups,
                )
            )
    return run.all()


def run_multiworker_experiment(
    config: CTRExperimentConfig, log: Callable[[str], None] = print,
    run: _RunRows | None = None,
) -> list[dict]:
    """Runs every replica of `config` as a job of `config.workers` processes.

    One row per (source set, update mode, activation), with
    `"update:<mode>"` appended to the row's sources. Each job's chief
    predicts the held-out split; this process loads the same data once more
    to check the labels and to compute PD by item popularity.
    """
    run = run if run is not None else _RunRows((), None, log)
    training = config.training
    data = load_training_data(training)
    eval_groups = item_popularity_groups(data)
    work_dir = config.work_dir or tempfile.mkdtemp(prefix="tf_smelu_jobs_")
    log(f"{config.workers}-worker jobs on localhost, update modes {list(config.update_modes)}; "
        f"weights, predictions and worker logs in {work_dir}")
    for sources in config.source_sets:
        seeds = replica_seeds(sources, config.replicas, training.seed)
        for mode in config.update_modes:
            row_training = dataclasses.replace(training, update_mode=mode)
            for activation in config.activations:
                if run.reuse(("+".join([*sources, f"update:{mode}"]), activation.label)):
                    continue
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
                run.add(row)
    return run.all()
