"""Reproducibility of multi-worker training per update mode, ReLU vs. SmeLU.

For each activation and each update mode (sync, stale, local_sgd) this
trains R replicas, each as its own cluster of --workers
MultiWorkerMirroredStrategy processes on localhost, has every replica's chief
predict click probabilities on the same held-out synthetic rows, and reports
AUC, log loss and the prediction difference (PD) over all replica pairs, with
95% CIs. It is the main job (examples/recsys_reproducibility.py) with
multi-worker defaults: the same flags, the same library code
(tf_smelu.experiment.run_multiworker_experiment,
tf_smelu.training.replica_jobs).

All replicas of a row share the SAME initial weights, data and data order
(--sources=none). They differ only in what the update mode itself makes
irreproducible: no schedule seed is given, so each job's chief draws one from
OS entropy and shares it with its workers:
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
                 update mode (sources = ["update:MODE"])
  tradeoff.png   relative PD against AUC, one panel per update mode
  runs/          each replica's weights, held-out predictions and worker logs

Time: each replica job pays TensorFlow start-up in every worker (~10-20 s
per job on 2 busy cores). Defaults (2 activations x 3 modes x 3 replicas =
18 jobs) take about 3 minutes there; --quick (tiny model, R=2) with
--update_mode=sync,stale (8 jobs) about 1.5 minutes.

Examples:
  python examples/multiworker_reproducibility.py
  python examples/multiworker_reproducibility.py --quick --update_mode=sync,stale
  python examples/multiworker_reproducibility.py --activations=relu,smelu:0.2,gelu \\
      --replicas=5 --epochs=2
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from absl import app, flags

from tf_smelu import cli
from tf_smelu.experiment import CTRExperimentConfig
from tf_smelu.training.config import TrainingConfig

FLAGS = flags.FLAGS

DEFAULTS = CTRExperimentConfig(
    activations=("relu", "smelu:0.4"),
    sources=("none",),
    workers=2,
    update_mode=("sync", "stale", "local_sgd"),
    replicas=3,
    job_timeout=600,
    training=TrainingConfig(
        train_examples=65_536,
        eval_examples=20_000,
        batch_size=256,
        learning_rate=2e-3,
        hidden_units=(64, 32),
        max_vocab_size=1000,
    ),
)
"""A 64-32 MLP, 256 steps of 2 x 128 rows (one epoch of 65k rows)."""

QUICK_PRESET = dict(
    replicas=2, hidden_units=["16"], embedding_dim=4, max_vocab_size=50,
    train_examples=2048, eval_examples=1000, batch_size=64, local_sgd_period=8,
)
"""Tiny model and data: 32 steps per job."""

cli.define_experiment_flags(
    DEFAULTS, output_dir="runs/multiworker_reproducibility",
    quick_help="Smoke-test preset (tiny model and data, 32 steps per job, R=2); explicit "
    "flags still win.",
)
flags.adopt_module_key_flags(cli)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = cli.resolved_flags(QUICK_PRESET)
    start = time.perf_counter()
    cli.run_experiment(config, config["output_dir"], resume=config["resume"])
    print(f"Done in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    cli.run(main)
