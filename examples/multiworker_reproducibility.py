"""Reproducibility of multi-worker training per update mode, ReLU vs. SmeLU.

For each activation and each update mode of `tf_smelu.training.distributed`
(sync, stale, local_sgd) this trains R replicas, each as its own cluster of
--workers MultiWorkerMirroredStrategy processes on localhost (started by
`tf_smelu.training.launcher`), has every replica's chief predict click
probabilities on the same held-out synthetic rows, and reports AUC, log loss
and the prediction difference (PD) over all replica pairs, with 95% CIs.

All replicas of a row share the SAME initial weights (embedding and tower
seeds), the same data and the same data order. They differ only in what the
update mode itself makes irreproducible: the schedule seed is left unset, so
each run's chief draws it from OS entropy and shares it with its workers:
  sync       no schedule at all: replicas should be identical or nearly so
             (up to collective/float reduction order). This is the control.
  stale      each gradient is applied after a random delay of 0..--max_delay
             steps, as with asynchronous workers; the delays differ per run.
  local_sgd  workers train alone and average weights every
             --local_sgd_period steps, +- --local_sgd_jitter steps drawn per
             run (the jitter stands for the timing of real local SGD; with
             jitter 0 the runs would be identical).

Writes to --output_dir:
  results.json   every flag, the environment, one row per activation and
                 update mode (experiment schema; `sources` = ["update:MODE"])
  tradeoff.png   relative PD against AUC, one panel per update mode
  runs/          each replica's held-out predictions, labels and worker logs

Time: each replica job pays TensorFlow start-up in every worker (~10-20 s
per job on 2 busy cores). Defaults (2 activations x 3 modes x 3 replicas =
18 jobs) took 3.5 minutes there; --quick (tiny model, 40 steps, R=2) with
--update_modes=sync,stale (8 jobs) about 1.5 minutes.

Examples:
  python examples/multiworker_reproducibility.py
  python examples/multiworker_reproducibility.py --quick --update_modes=sync,stale
  python examples/multiworker_reproducibility.py --activations=relu,smelu:0.2,gelu \\
      --replicas=5 --steps=600
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS

QUICK_PRESET = dict(
    replicas=2, steps=40, hidden_units=["16"], embedding_dim=4, max_vocab_size=50,
    train_examples=2048, eval_examples=1000, per_replica_batch_size=32,
    local_sgd_period=8,
)


def define_flags() -> None:
    """Defines the flags (only when run as a program, so tests can import helpers)."""
    flags.DEFINE_string(
        "output_dir", "runs/multiworker_reproducibility",
        "Where results.json, tradeoff.png and the per-replica runs/ go.")
    flags.DEFINE_list(
        "activations", ["relu", "smelu:0.4"],
        "Activations to compare: name or name:beta, e.g. relu, gelu, smelu:0.2.")
    flags.DEFINE_list(
        "update_modes", ["sync", "stale", "local_sgd"],
        "Update modes of tf_smelu.training.distributed, one result row per activation and mode.")
    flags.DEFINE_integer("replicas", 3, "Replica jobs R per activation and mode (>= 2).",
                         lower_bound=2)
    flags.DEFINE_integer("workers", 2, "Worker processes per replica job.", lower_bound=1)
    flags.DEFINE_integer("steps", 300, "Training steps per replica job.", lower_bound=1)
    flags.DEFINE_integer("per_replica_batch_size", 128, "Rows per worker per step.",
                         lower_bound=1)
    flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
    flags.DEFINE_list("hidden_units", ["64", "32"], "Widths of the MLP tower.")
    flags.DEFINE_integer("embedding_dim", 8, "Embedding size per categorical field.",
                         lower_bound=1)
    flags.DEFINE_integer("max_vocab_size", 1000, "Caps every synthetic field's vocabulary.",
                         lower_bound=2)
    flags.DEFINE_integer("train_examples", 65_536,
                         "Synthetic training rows, split between the workers.", lower_bound=1)
    flags.DEFINE_integer("eval_examples", 20_000,
                         "Held-out synthetic rows every replica predicts (for AUC and PD).",
                         lower_bound=1)
    flags.DEFINE_integer("max_delay", 4, "Largest gradient delay in steps (stale).",
                         lower_bound=0)
    flags.DEFINE_integer("local_sgd_period", 16, "Steps between weight averages (local_sgd).",
                         lower_bound=1)
    flags.DEFINE_integer("local_sgd_jitter", 4,
                         "+- steps of random jitter per averaging interval (local_sgd); the "
                         "source of its irreproducibility here.", lower_bound=0)
    flags.DEFINE_integer("seed", 0, "Seed of the data and of the initial weights (shared).")
    flags.DEFINE_integer("job_timeout", 600, "Seconds before a replica job is killed.",
                         lower_bound=1)
    flags.DEFINE_boolean(
        "quick", False,
        "Smoke-test preset (tiny model and data, 40 steps, R=2); explicit flags still win.")
    flags.DEFINE_boolean("verbose", False, "Stream the workers' output instead of logging it.")


def resolved_config() -> dict:
    """All flag values of this module; --quick fills in flags not given explicitly."""
    from tf_smelu.cli import resolved_flags

    return resolved_flags(QUICK_PRESET)


@dataclasses.dataclass(frozen=True)
class ReplicaJob:
    """One replica: a whole multi-worker training run and its held-out outputs."""

    activation: str
    update_mode: str
    replica: int
    run_dir: str

    @property
    def name(self) -> str:
        return f"{self.activation.replace(':', '_')}.{self.update_mode}.r{self.replica}"

    def path(self, suffix: str) -> str:
        return os.path.join(self.run_dir, f"{self.name}{suffix}")


def worker_command(config: dict, job: ReplicaJob) -> List[str]:
    """The `tf_smelu.training.distributed` command every worker of `job` runs.

    Only activation and update mode vary between jobs: seeds, data and
    model are the same, and no schedule seed is given (OS entropy per run).
    """
    return [
        sys.executable, "-m", "tf_smelu.training.distributed",
        f"--activation={job.activation}",
        f"--update_mode={job.update_mode}",
        f"--steps={config['steps']}",
        f"--per_replica_batch_size={config['per_replica_batch_size']}",
        f"--learning_rate={config['learning_rate']}",
        f"--hidden_units={','.join(str(u) for u in config['hidden_units'])}",
        f"--embedding_dim={config['embedding_dim']}",
        f"--max_vocab_size={config['max_vocab_size']}",
        f"--num_examples={config['train_examples']}",
        f"--eval_examples={config['eval_examples']}",
        f"--max_delay={config['max_delay']}",
        f"--local_sgd_period={config['local_sgd_period']}",
        f"--local_sgd_jitter={config['local_sgd_jitter']}",
        f"--seed={config['seed']}",
        "--log_every=0",
        f"--output={job.path('.npz')}",
        f"--predictions_out={job.path('.predictions.npy')}",
        f"--labels_out={job.path('.labels.npy')}",
    ]


def run_job(config: dict, job: ReplicaJob) -> float:
    """Runs one replica job to completion; returns its wall time in seconds."""
    from tf_smelu.training.launcher import launch_workers

    python_path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    env.pop("TF_CONFIG", None)  # the launcher sets each worker's own
    start = time.perf_counter()
    with open(job.path(".log"), "w", encoding="utf-8") as log:
        launch_workers(
            worker_command(config, job), config["workers"], timeout=config["job_timeout"],
            env=env, cwd=REPO, output=sys.stdout if config["verbose"] else log,
        )
    return time.perf_counter() - start


def replica_row(
    activation_text: str,
    update_mode: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    train_seconds: float,
    seed: int = 0,
) -> Dict[str, object]:
    """One result row (schema of `tf_smelu.experiment`) from R replicas' predictions.

    Args:
        activation_text: As given on the command line, e.g. `"smelu:0.4"`.
        update_mode: The update mode all R replicas used.
        probabilities: `[R, N]` click probabilities on the same held-out rows.
        labels: `[N]` held-out labels.
        train_seconds: Mean wall time of one replica job.
        seed: Seed of the bootstrap confidence interval.
    """
    from tf_smelu import experiment

    row = experiment.summarize_predictions(
        experiment.Activation.parse(activation_text), [f"update:{update_mode}"],
        probabilities, labels, seed=seed,
    )
    row.update(train_seconds=float(train_seconds), update_mode=update_mode)
    return row


def run(config: dict) -> List[Dict[str, object]]:
    """Trains and evaluates every replica job of `config`; returns the result rows."""
    run_dir = os.path.join(config["output_dir"], "runs")
    os.makedirs(run_dir, exist_ok=True)
    total = len(config["update_modes"]) * len(config["activations"]) * config["replicas"]
    done, rows = 0, []
    for update_mode in config["update_modes"]:
        for activation in config["activations"]:
            jobs = [ReplicaJob(activation, update_mode, r, run_dir)
                    for r in range(config["replicas"])]
            seconds = []
            for job in jobs:
                seconds.append(run_job(config, job))
                done += 1
                print(f"[{done}/{total}] {job.name}: {config['workers']} workers, "
                      f"{seconds[-1]:.0f}s", flush=True)
            probabilities = np.stack([np.load(job.path(".predictions.npy")) for job in jobs])
            labels = np.load(jobs[0].path(".labels.npy"))
            rows.append(replica_row(activation, update_mode, probabilities, labels,
                                    float(np.mean(seconds)), seed=config["seed"]))
    return rows


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_smelu import experiment
    from tf_smelu.training.distributed import UPDATE_MODES

    config = resolved_config()
    try:  # report bad flag values before any work, without a traceback
        [experiment.Activation.parse(a) for a in config["activations"]]
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    unknown = [m for m in config["update_modes"] if m not in UPDATE_MODES]
    if unknown:
        raise app.UsageError(f"Unknown update mode(s) {unknown}; expected {UPDATE_MODES}.")
    start = time.perf_counter()
    rows = run(config)
    print()
    print(experiment.format_table(rows))
    path = experiment.write_results(config["output_dir"], config, rows)
    plot = experiment.plot_tradeoff(rows, path.replace("results.json", "tradeoff.png"))
    print(f"\nWrote {path} and {plot} in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
