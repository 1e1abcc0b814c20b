"""Throughput of multi-worker training on localhost, per update mode and activation.

For every update mode (sync, stale, local_sgd), worker count (1 and 2),
compiler (graph mode, optionally XLA) and activation (relu and smelu by
default) this launches one training job of
`tf_smelu.training.distributed` through `tf_smelu.training.launcher` and reads
the chief's steps/second (first, tracing step excluded) from its summary. It
prints samples/second (steps/s x per-worker batch x workers), the speed-up of
2 workers over 1, and the step-time ratio of each activation to the first one
measured in the same setup, round by round (rounds interleave all setups).

Why XLA is an option: in graph mode oneDNN fuses MatMul + BiasAdd + ReLU into
one kernel and ReLU's gradient is one more, while a smooth activation costs
a few element-wise kernels each way; XLA fuses those, so SmeLU and ReLU cost
the same, but on CPU XLA's matmuls are slower than oneDNN's.

On one machine the workers share its cores, so 2 workers measure the
overhead of the collectives more than any speed-up: on real hosts each
worker has its own. Numbers on a busy 2-core box vary by +-20% between runs.

Usage:
  python benchmarks/distributed.py                  # about 12-15 minutes (3 rounds)
  python benchmarks/distributed.py --steps=100 --update_modes=sync --repeats=1   # quick
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from tf_smelu import cli
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.distributed import WorkerJob, worker_args, worker_output_path
from tf_smelu.training.launcher import launch_workers
from tf_smelu.training.replica_jobs import worker_environment
from tf_smelu.training.trainer import TrainerOptions

FLAGS = flags.FLAGS
flags.DEFINE_list("update_modes", ["sync", "stale", "local_sgd"], "Update modes to measure.")
flags.DEFINE_list("workers", ["1", "2"], "Worker counts to measure.")
flags.DEFINE_list("compilers", ["graph"],
                  "graph (TF graph mode, oneDNN fuses MatMul+BiasAdd+ReLU) and/or xla (the "
                  "worker's --jit_compile: forward and backward pass compiled by XLA).")
flags.DEFINE_list("activations", ["relu", "smelu:0.4"],
                  "Activations, side by side; ratios are to the first one.")
flags.DEFINE_integer("steps", 300, "Training steps per job (the first is not timed).")
flags.DEFINE_integer("per_replica_batch_size", 256, "Rows per worker per step.")
flags.DEFINE_list("hidden_units", ["256", "128", "64"], "MLP tower widths.")
flags.DEFINE_integer("embedding_dim", 8, "Embedding size per categorical field.")
flags.DEFINE_integer("max_vocab_size", 1000, "Caps every synthetic field's vocabulary.")
flags.DEFINE_integer("num_examples", 32_768, "Synthetic training rows.")
flags.DEFINE_integer("timeout", 600, "Seconds before a job is killed.")
flags.DEFINE_integer("repeats", 3,
                     "Rounds over all setups; each setup's median is reported. Rounds are "
                     "interleaved so that load drifting over minutes hits every setup alike.",
                     lower_bound=1)

Setup = tuple[str, int, str, str]  # (update mode, workers, compiler, activation)


def measure(setup: Setup, directory: str) -> float:
    """Chief's training steps per second of one job."""
    update_mode, workers, compiler, activation = setup
    output = os.path.join(
        directory, f"{update_mode}_{workers}_{compiler}_{activation.replace(':', '_')}.npz")
    config = TrainingConfig(
        update_mode=update_mode, steps=FLAGS.steps,
        batch_size=FLAGS.per_replica_batch_size * workers,
        hidden_units=tuple(int(u) for u in FLAGS.hidden_units),
        embedding_dim=FLAGS.embedding_dim, max_vocab_size=FLAGS.max_vocab_size,
        train_examples=FLAGS.num_examples, schedule_seed=0, jit_compile=compiler == "xla",
    )
    command = [sys.executable, "-m", "tf_smelu.training.distributed",
               *worker_args(config, WorkerJob(activation=activation, output=output),
                            TrainerOptions(log_every=0))]
    launch_workers(command, workers, timeout=FLAGS.timeout, env=worker_environment(),
                   quiet=True)
    with open(worker_output_path(output, 0, ".json"), encoding="utf-8") as f:
        return float(json.load(f)["steps_per_second"])


def format_results(rounds: dict[Setup, list[float]], activations: Sequence[str]) -> str:
    """Median samples/s per setup, 2-vs-1-worker speed-up and step-time ratios.

    The step-time ratio to the first activation is computed within each round
    (setups measured minutes apart, not tens of minutes) and reported as the
    median with the range over rounds.
    """
    batch = FLAGS.per_replica_batch_size
    time_header = f"time vs {activations[0]} (range)"
    header = (f"{'update mode':<10} {'workers':>7} {'compiler':<8} {'activation':<12} "
              f"{'steps/s':>8} {'samples/s':>10} {'ms/step':>8} {'vs 1 worker':>11} "
              f"{time_header:>22} {'time vs graph':>13}")
    lines = [header, "-" * len(header)]
    median = {setup: float(np.median(rates)) for setup, rates in rounds.items()}
    for (mode, workers, compiler, activation), rate in median.items():
        one_worker = median.get((mode, 1, compiler, activation))
        scaling = f"{rate * workers / one_worker:.2f}x" if one_worker and workers != 1 else ""
        baseline = rounds.get((mode, workers, compiler, activations[0]))
        time_ratio = ""
        if baseline and activation != activations[0]:
            ratios = np.array(baseline) / np.array(rounds[(mode, workers, compiler, activation)])
            time_ratio = f"{np.median(ratios):.3f} ({ratios.min():.2f}-{ratios.max():.2f})"
        graph = median.get((mode, workers, "graph", activation))
        vs_graph = f"{graph / rate:.2f}" if graph and compiler != "graph" else ""
        lines.append(f"{mode:<10} {workers:>7} {compiler:<8} {activation:<12} {rate:8.1f} "
                     f"{rate * batch * workers:10.0f} {1000 / rate:8.2f} {scaling:>11} "
                     f"{time_ratio:>22} {vs_graph:>13}")
    lines.append(
        f"Medians over {len(next(iter(rounds.values())))} interleaved rounds. vs 1 worker: "
        "samples/s of N workers over 1 worker (same mode, compiler and activation); "
        f"{time_header}: step time over {activations[0]}'s (same mode, workers and compiler), "
        "per round; time vs graph: step time over graph mode's (same everything else).")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    worker_counts = [int(w) for w in FLAGS.workers]
    unknown = sorted(set(FLAGS.compilers) - {"graph", "xla"})
    if unknown:
        raise app.UsageError(f"Unknown compiler(s) {unknown}; expected graph and/or xla.")
    setups = list(itertools.product(
        FLAGS.update_modes, worker_counts, FLAGS.compilers, FLAGS.activations))
    results: dict[Setup, list[float]] = {setup: [] for setup in setups}
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as directory:
        for round_index in range(FLAGS.repeats):
            for setup in setups:
                results[setup].append(measure(setup, directory))
                print(f"round {round_index + 1}/{FLAGS.repeats} {setup}: "
                      f"{results[setup][-1]:.1f} steps/s", flush=True)
    print()
    print(format_results(results, FLAGS.activations))


if __name__ == "__main__":
    cli.run(main)  # the command-line error style: one `error:` line for a bad flag
