"""Memory of the main job's rows: resident set size (RSS) after every row.

Runs the main job (`tf_smelu.experiment.run_ctr_experiment`, as
`examples/recsys_reproducibility.py` does, writing nothing) in this process
and prints, after every finished row, the process's RSS (after a garbage
collection), its growth since the first row, and what Python still holds:
live `keras.Model` and `keras.Layer` objects and TensorFlow function graphs
(`FuncGraph`). A job whose finished rows are released holds about as much
after its tenth row as after its second; memory that grows row after row
shows as MB per row.

The defaults are a small keras-trainer job (the `--quick` data, 5 activations,
2 remedies, R = 3: 7 rows, a few minutes on 2 cores). Every flag of the main
job is accepted and wins over these defaults.

Usage:
  python benchmarks/row_memory.py
  python benchmarks/row_memory.py --replicas=2 --activations=relu,smelu:1 \\
      --remedies=ema:0.99 --train_examples=4000    # smoke test
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys

# The keras trainer's control (bit-identical replicas) uses TensorFlow graphs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import psutil
import tensorflow as tf
from absl import app, flags

from tf_smelu import cli
from tf_smelu.common import atomic_write
from tf_smelu.experiment import CTRExperimentConfig, run_ctr_experiment

FLAGS = flags.FLAGS
cli.define_experiment_flags(
    CTRExperimentConfig.from_dict({
        "activations": ["relu", "smelu:0.5", "smelu:1", "gelu", "swish"],
        "remedies": ["ema:0.99", "ensemble:2"], "replicas": 3, "trainer": "keras",
        "progress": False, "train_examples": 20_000, "eval_examples": 5_000}),
    output_dir="runs/row_memory", quick_help="Unused here (the defaults are small already).",
)
flags.adopt_module_key_flags(cli)


def live_objects() -> dict[str, int]:
    """How many Keras models and layers and TensorFlow function graphs Python holds."""
    gc.collect()
    counts = {"models": 0, "layers": 0, "func_graphs": 0}
    for obj in gc.get_objects():
        if isinstance(obj, keras.Model):
            counts["models"] += 1
        elif isinstance(obj, keras.Layer):
            counts["layers"] += 1
        elif isinstance(obj, tf.Graph):
            counts["func_graphs"] += 1
    return counts


def rss_mb() -> float:
    """This process's resident set size in MB, after a garbage collection."""
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = cli.resolved_flags({})
    config = cli.experiment_config(values)
    tf.get_logger().setLevel("ERROR")
    measurements = [{"row": 0, "label": "(data loaded)", "rss_mb": rss_mb(), **live_objects()}]

    def on_row(rows: list[dict]) -> None:
        row = rows[len(measurements) - 1]
        measurements.append({"row": len(measurements), "label": row["label"],
                             "rss_mb": rss_mb(), **live_objects()})
        m = measurements[-1]
        print(f"row {m['row']} {m['label']}: RSS {m['rss_mb']:.0f} MB, {m['models']} models, "
              f"{m['layers']} layers, {m['func_graphs']} graphs", flush=True)

    on_data = lambda details: measurements.__setitem__(  # noqa: E731
        0, {**measurements[0], "rss_mb": rss_mb(), **live_objects()})
    run_ctr_experiment(config, log=lambda line: None, on_row=on_row, on_data=on_data)
    rows = measurements[1:]
    growth = ((rows[-1]["rss_mb"] - rows[0]["rss_mb"]) / (len(rows) - 1)
              if len(rows) > 1 else float("nan"))
    print(f"\nTensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs; {len(rows)} rows, "
          f"R={config.replicas}, trainer {config.row_trainer}")
    print("| row | label | RSS MB | models | layers | graphs |")
    print("|---|---|---|---|---|---|")
    for m in measurements:
        print(f"| {m['row']} | {m['label']} | {m['rss_mb']:.0f} | {m['models']} | "
              f"{m['layers']} | {m['func_graphs']} |")
    print(f"\nRSS growth from row 1 to row {len(rows)}: {growth:.1f} MB per row")
    os.makedirs(values["output_dir"], exist_ok=True)
    with atomic_write(os.path.join(values["output_dir"], "row_memory.json")) as out:
        json.dump({"argv": sys.argv[1:], "mb_per_row": growth, "rows": measurements}, out,
                  indent=1)


if __name__ == "__main__":
    cli.run(main)
