"""Replicas of a reproducibility experiment, each trained as a multi-worker job.

The in-process harness (`tf_smelu.training.replicas`) steps R replicas side
by side in one process. Here every replica is a whole cluster instead: a job
of `workers` processes on localhost, each running
`python -m tf_smelu.training.distributed` with the same flags, started by
`tf_smelu.training.launcher`. This is how the update modes' irreproducibility
becomes real: the stale delays or local-SGD averaging points of a job come
from OS entropy drawn by that job's chief (no `--schedule_seed` is passed),
exactly as every production run meets its own timing.

The replicas of one row differ only in what their `ReplicaJob`s say: the
activation and update mode are the row's, and the seeds (embedding, tower,
data order) are shared unless a source of irreproducibility varies them.
Each job's chief predicts the same held-out rows; `run_replica_jobs` returns
those predictions stacked `[R, N]` for the PD metrics
(`tf_smelu.experiment.summarize_predictions` turns them into a result row).

Example (two 2-worker jobs under `stale`, about 30 s):

    training = ClusterTraining(workers=2, steps=40, train_examples=2048,
                               eval_examples=500, hidden_units=(16,))
    jobs = [ReplicaJob("smelu:0.4", "stale", r, run_dir="/tmp/jobs") for r in range(2)]
    result = run_replica_jobs(training, jobs)
    result.probabilities.shape  # (2, 500)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import List, Optional, Sequence, TextIO

import numpy as np
import tqdm

from tf_smelu.training.launcher import LauncherError, launch_workers
from tf_smelu.training.updates import UPDATE_MODES
from tf_smelu.validation import (
    require_choice,
    require_non_negative_int,
    require_positive_int,
    require_positive_number,
)

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""Directory holding the `tf_smelu` package, put on the workers' PYTHONPATH
so that a checkout works without installing it."""


@dataclasses.dataclass(frozen=True)
class ClusterTraining:
    """What every worker of every replica job trains (flags of the worker).

    Attributes:
        workers: Worker processes per job.
        steps: Training steps per job (`epochs` unset).
        epochs: Passes over the training rows; when set, each worker derives
            the steps from the data it loaded (overrides `steps`).
        per_replica_batch_size: Rows per worker per step.
        learning_rate: Adam learning rate.
        model: `"mlp"` or `"dcn"`.
        hidden_units: MLP widths (the top MLP for `dcn`).
        embedding_dim: Embedding width.
        dataset: Dataset spec (`tf_smelu.data.load_dataset`); relative paths
            are made absolute.
        max_vocab_size: Synthetic data: caps every field's vocabulary (0: no
            cap).
        train_examples: Training rows (a cap for real data).
        eval_examples: Held-out rows every job's chief predicts.
        seed: Seed of the data (and the default of the per-job seeds).
        max_delay: Largest gradient delay in steps (`stale`).
        local_sgd_period: Steps between weight averages (`local_sgd`).
        local_sgd_jitter: +- steps of jitter per averaging interval
            (`local_sgd`): the source of its irreproducibility.
        timeout: Seconds before a job is killed.
    """

    workers: int = 2
    steps: int = 300
    epochs: Optional[int] = None
    per_replica_batch_size: int = 128
    learning_rate: float = 2e-3
    model: str = "mlp"
    hidden_units: Sequence[int] = (64, 32)
    embedding_dim: int = 8
    dataset: str = "synthetic"
    max_vocab_size: int = 1000
    train_examples: int = 65_536
    eval_examples: int = 20_000
    seed: int = 0
    max_delay: int = 4
    local_sgd_period: int = 16
    local_sgd_jitter: int = 4
    timeout: float = 600.0

    def __post_init__(self):
        for name in ("workers", "steps", "per_replica_batch_size", "embedding_dim",
                     "train_examples", "eval_examples", "local_sgd_period"):
            require_positive_int(name, getattr(self, name))
        if self.epochs is not None:
            require_positive_int("epochs", self.epochs)
        for name in ("max_delay", "local_sgd_jitter", "max_vocab_size"):
            require_non_negative_int(name, getattr(self, name))
        require_positive_number("learning_rate", self.learning_rate)
        require_positive_number("timeout", self.timeout)
        require_choice("model", self.model, ("mlp", "dcn"))
        if not self.hidden_units:
            raise ValueError("`hidden_units` must not be empty.")
        for unit in self.hidden_units:
            require_positive_int("hidden_units", unit)

    def worker_flags(self) -> List[str]:
        """The worker flags every job shares (no seeds, outputs or schedule)."""
        from tf_smelu.data import parse_dataset_spec

        spec = parse_dataset_spec(self.dataset)
        dataset = f"{spec.kind}:{os.path.abspath(spec.path)}" if spec.path else spec.kind
        if spec.label_column:
            dataset += f"#{spec.label_column}"
        length = [f"--epochs={self.epochs}"] if self.epochs else [f"--steps={self.steps}"]
        return length + [
            f"--per_replica_batch_size={self.per_replica_batch_size}",
            f"--learning_rate={self.learning_rate!r}",
            f"--model={self.model}",
            f"--hidden_units={','.join(str(int(u)) for u in self.hidden_units)}",
            f"--embedding_dim={self.embedding_dim}",
            f"--dataset={dataset}",
            f"--max_vocab_size={self.max_vocab_size}",
            f"--num_examples={self.train_examples}",
            f"--eval_examples={self.eval_examples}",
            f"--seed={self.seed}",
            f"--max_delay={self.max_delay}",
            f"--local_sgd_period={self.local_sgd_period}",
            f"--local_sgd_jitter={self.local_sgd_jitter}",
        ]


@dataclasses.dataclass(frozen=True)
class ReplicaJob:
    """One replica: a whole multi-worker training run and its held-out outputs.

    Attributes:
        activation: Hidden activation, e.g. `"relu"` or `"smelu:0.4"`.
        update_mode: One of `tf_smelu.training.updates.UPDATE_MODES`.
        replica: Index of the replica within its row.
        run_dir: Where the job writes its weights, predictions and log.
        embedding_seed, tower_seed, order_seed: Per-replica seeds (`None`:
            the worker's default, derived from the shared data seed).
        tag: Distinguishes rows that share activation and update mode (e.g.
            the sources that vary), part of the file names.
    """

    activation: str
    update_mode: str
    replica: int
    run_dir: str
    embedding_seed: Optional[int] = None
    tower_seed: Optional[int] = None
    order_seed: Optional[int] = None
    tag: str = ""

    def __post_init__(self):
        require_choice("update_mode", self.update_mode, UPDATE_MODES)

    @property
    def name(self) -> str:
        parts = [self.activation.replace(":", "_"), self.update_mode, self.tag, f"r{self.replica}"]
        return ".".join(part for part in parts if part)

    def path(self, suffix: str) -> str:
        """`<run_dir>/<name><suffix>`, e.g. `path(".predictions.npy")`."""
        return os.path.join(self.run_dir, f"{self.name}{suffix}")

    def command(self, training: ClusterTraining) -> List[str]:
        """The command every worker of this job runs.

        No `--schedule_seed`: each job's chief draws one from OS entropy.
        """
        seeds = [
            f"--{name}={value}"
            for name, value in (("embedding_seed", self.embedding_seed),
                                ("tower_seed", self.tower_seed),
                                ("order_seed", self.order_seed))
            if value is not None
        ]
        return [
            sys.executable, "-m", "tf_smelu.training.distributed",
            f"--activation={self.activation}",
            f"--update_mode={self.update_mode}",
            *training.worker_flags(),
            *seeds,
            "--log_every=0",
            f"--output={self.path('.npz')}",
            f"--predictions_out={self.path('.predictions.npy')}",
            f"--labels_out={self.path('.labels.npy')}",
        ]


class ReplicaJobError(RuntimeError):
    """A replica job failed or timed out; the message names its full log."""


def worker_environment() -> dict:
    """`os.environ` with the package on PYTHONPATH and no inherited `TF_CONFIG`."""
    python_path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    env.pop("TF_CONFIG", None)  # the launcher sets each worker's own
    return env


def run_replica_job(
    training: ClusterTraining,
    job: ReplicaJob,
    extra_flags: Sequence[str] = (),
    output: Optional[TextIO] = None,
) -> float:
    """Runs one replica job to completion; returns its wall time in seconds.

    Args:
        training: What the workers train.
        job: The replica.
        extra_flags: More worker flags (e.g. checkpoints, fault injection).
        output: Where the prefixed worker lines go; default the job's log
            file `job.path(".log")`.

    Raises:
        ReplicaJobError: A worker failed or the job timed out (all workers
            are stopped either way).
    """
    os.makedirs(job.run_dir, exist_ok=True)
    log_path = job.path(".log")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            launch_workers(
                job.command(training) + list(extra_flags), training.workers,
                timeout=training.timeout, env=worker_environment(), cwd=os.getcwd(),
                output=output or log,
            )
        except LauncherError as error:
            raise ReplicaJobError(
                f"Replica job {job.name} failed: {error}\nFull log: {log_path}"
            ) from error
    return time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class ReplicaJobsResult:
    """Held-out outputs of R replica jobs.

    Attributes:
        probabilities: `[R, N]` click probabilities of each job's chief.
        labels: `[N]` held-out labels.
        seconds: Wall time of each job.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    seconds: List[float]


def run_replica_jobs(
    training: ClusterTraining,
    jobs: Sequence[ReplicaJob],
    progress: bool = True,
    verbose: bool = False,
) -> ReplicaJobsResult:
    """Runs `jobs` one after the other; returns their held-out predictions.

    Args:
        training: What every job trains.
        jobs: The replicas of one result row (same held-out rows).
        progress: Show a progress bar over the jobs.
        verbose: Stream the workers' lines to stdout instead of log files.
    """
    if not jobs:
        raise ValueError("`jobs` must not be empty.")
    seconds = []
    bar = tqdm.tqdm(jobs, desc=f"{jobs[0].activation} {jobs[0].update_mode}", unit="job",
                    disable=not progress, leave=False)
    for job in bar:
        seconds.append(run_replica_job(training, job, output=sys.stdout if verbose else None))
        bar.set_postfix(last=f"{seconds[-1]:.0f}s")
    probabilities = np.stack([np.load(job.path(".predictions.npy")) for job in jobs])
    labels = np.load(jobs[0].path(".labels.npy"))
    return ReplicaJobsResult(probabilities, labels, seconds)
