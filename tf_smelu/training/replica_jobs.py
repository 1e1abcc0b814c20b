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

    config = TrainingConfig(steps=40, train_examples=2048, eval_examples=500,
                            hidden_units=(16,), max_vocab_size=100)
    jobs = [ReplicaJob("smelu:0.4", "stale", r, run_dir="/tmp/jobs") for r in range(2)]
    result = run_replica_jobs(config, jobs, workers=2)
    result.probabilities.shape  # (2, 500)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.distributed import WorkerJob, worker_args
from tf_smelu.training.launcher import LauncherError, launch_workers
from tf_smelu.training.replicas import progress_bar
from tf_smelu.training.trainer import TrainerOptions
from tf_smelu.training.updates import UPDATE_MODES
from tf_smelu.validation import require_choice, require_positive_int, require_positive_number

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""Directory holding the `tf_smelu` package, put on the workers' PYTHONPATH
so that a checkout works without installing it."""


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
    embedding_seed: int | None = None
    tower_seed: int | None = None
    order_seed: int | None = None
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

    def command(self, config: TrainingConfig) -> list[str]:
        """The command every worker of this job runs.

        The job's update mode replaces `config.update_mode`; the datasets'
        paths are made absolute, since workers may run in another directory.
        With `config.schedule_seed` unset each job's chief draws one from OS
        entropy.
        """
        config = dataclasses.replace(
            config, update_mode=self.update_mode, dataset=config.dataset.absolute(),
            eval_dataset=config.eval_dataset and config.eval_dataset.absolute(),
            data_dir=config.data_dir and os.path.abspath(config.data_dir),
        )
        job = WorkerJob(
            activation=self.activation,
            embedding_seed=self.embedding_seed,
            tower_seed=self.tower_seed,
            order_seed=self.order_seed,
            output=self.path(".npz"),
            predictions_out=self.path(".predictions.npy"),
            labels_out=self.path(".labels.npy"),
        )
        return [sys.executable, "-m", "tf_smelu.training.distributed",
                *worker_args(config, job, TrainerOptions(log_every=0))]


class ReplicaJobError(RuntimeError):
    """A replica job failed or timed out; the message names its full log."""


def worker_environment() -> dict:
    """`os.environ` with the package on PYTHONPATH and no inherited `TF_CONFIG`."""
    python_path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    env.pop("TF_CONFIG", None)  # the launcher sets each worker's own
    return env


def run_replica_job(
    config: TrainingConfig,
    job: ReplicaJob,
    workers: int = 2,
    timeout: float = 3600.0,
    extra_flags: Sequence[str] = (),
    output: TextIO | None = None,
) -> float:
    """Runs one replica job to completion; returns its wall time in seconds.

    Args:
        config: What the workers train.
        job: The replica.
        workers: Worker processes of the job.
        timeout: Seconds before the job is killed.
        extra_flags: More worker flags (e.g. checkpoints, fault injection).
        output: Where the prefixed worker lines go; default the job's log
            file `job.path(".log")`.

    Raises:
        ReplicaJobError: A worker failed or the job timed out (all workers
            are stopped either way).
    """
    require_positive_int("workers", workers)
    require_positive_number("timeout", timeout)
    config.per_worker_batch_size(workers)  # the global batch must split evenly
    os.makedirs(job.run_dir, exist_ok=True)
    log_path = job.path(".log")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            launch_workers(
                job.command(config) + list(extra_flags), workers,
                timeout=timeout, env=worker_environment(), cwd=os.getcwd(),
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
    seconds: list[float]


def run_replica_jobs(
    config: TrainingConfig,
    jobs: Sequence[ReplicaJob],
    workers: int = 2,
    timeout: float = 3600.0,
    progress: bool = True,
    verbose: bool = False,
) -> ReplicaJobsResult:
    """Runs `jobs` one after the other; returns their held-out predictions.

    Args:
        config: What every job trains.
        jobs: The replicas of one result row (same held-out rows).
        workers: Worker processes per job.
        timeout: Seconds before a job is killed.
        progress: Show a progress bar over the jobs.
        verbose: Stream the workers' lines to stdout instead of log files.
    """
    if not jobs:
        raise ValueError("`jobs` must not be empty.")
    seconds = []
    bar = progress_bar(jobs, description=f"{jobs[0].activation} {jobs[0].update_mode}",
                       unit="job", enabled=progress, leave=False)
    for job in bar:
        seconds.append(run_replica_job(config, job, workers, timeout,
                                       output=sys.stdout if verbose else None))
        bar.set_postfix(last=f"{seconds[-1]:.0f}s")
    probabilities = np.stack([np.load(job.path(".predictions.npy")) for job in jobs])
    labels = np.load(jobs[0].path(".labels.npy"))
    return ReplicaJobsResult(probabilities, labels, seconds)
