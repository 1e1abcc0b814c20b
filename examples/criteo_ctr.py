"""Criteo-format click logs: does SmeLU make CTR models agree more than ReLU?

Runs the replica experiment (R replicas per activation, identical but for the
dense tower's initialization) on a Criteo-format file: tab-separated label,
13 integer counts and 26 hashed categorical fields, plain or gzip. Without
--path it first writes a synthetic file in that format, so the example runs
anywhere; point it at a real Criteo day (e.g. day_0.gz) for real data.

Prints the accuracy/PD table and writes results.json and tradeoff.png to
--output_dir. About 2 minutes with the defaults on 2 CPU cores; a real
Criteo day is ~45M rows: use --train_examples to take a seeded subset.

Example:
  python examples/criteo_ctr.py
  python examples/criteo_ctr.py --path=/data/criteo/day_0.gz --train_examples=2000000
"""

from __future__ import annotations

import os

from absl import app, flags

from tf_smelu import cli
from tf_smelu.data import write_synthetic_criteo_file

FLAGS = flags.FLAGS
flags.DEFINE_string("path", None, "Criteo-format file (.gz ok); default: write a synthetic one.")
flags.DEFINE_integer("synthetic_rows", 100_000, "Rows of the generated file when --path is unset.")
flags.DEFINE_list("activations", ["relu", "smelu:0.4"], "Activations to compare (name or name:beta).")
flags.DEFINE_integer("replicas", 4, "Replicas per activation (>= 2).", lower_bound=2)
flags.DEFINE_integer("train_examples", 90_000, "At most this many training rows.", lower_bound=1)
flags.DEFINE_integer("eval_examples", 10_000, "At most this many held-out rows.", lower_bound=1)
flags.DEFINE_string("output_dir", "runs/criteo_ctr", "Where results.json and tradeoff.png go.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    path = FLAGS.path
    if path is None:
        path = write_synthetic_criteo_file(
            os.path.join(FLAGS.output_dir, "synthetic_criteo.tsv.gz"),
            FLAGS.synthetic_rows, seed=0, gzip=True,
        )
        print(f"Wrote a synthetic Criteo-format file: {path}")
    elif not os.path.isfile(path):
        raise app.UsageError(f"--path={path}: no such file")
    cli.run_experiment({
        "dataset": f"criteo:{path}",
        "activations": FLAGS.activations,
        "replicas": FLAGS.replicas,
        "train_examples": FLAGS.train_examples,
        "eval_examples": FLAGS.eval_examples,
        "progress": FLAGS.progress,
        "path": path,
    }, FLAGS.output_dir)


if __name__ == "__main__":
    cli.run(main)
