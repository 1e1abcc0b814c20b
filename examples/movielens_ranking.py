"""MovieLens ranking: accuracy and reproducibility of ReLU vs SmeLU.

Trains R replicas per activation of a ranking model on MovieLens ratings
(label: rating >= 4; features: user, movie, genre, age, occupation, gender,
time) from TensorFlow Datasets, identical but for the dense tower's
initialization, and reports AUC, log loss and relative prediction difference
with confidence intervals (results.json and tradeoff.png in --output_dir).

TFDS downloads the data on first use (movielens/100k-ratings is ~5 MB,
movielens/1m-ratings ~25 MB) into ~/tensorflow_datasets or --data_dir.
About 1 minute for 100k with the defaults on 2 CPU cores, ~8 minutes for 1m.

Example:
  python examples/movielens_ranking.py
  python examples/movielens_ranking.py --variant=1m --replicas=8
"""

from __future__ import annotations

from absl import app, flags

from tf_smelu import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("variant", "100k", ["100k", "1m"], "MovieLens ratings data set.")
flags.DEFINE_list(
    "activations", ["relu", "smelu:0.2", "smelu:0.4"], "Activations to compare (name or name:beta)."
)
flags.DEFINE_integer("replicas", 6, "Replicas per activation (>= 2).", lower_bound=2)
flags.DEFINE_integer("batch_size", 256, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("epochs", 3, "Passes over the ratings.", lower_bound=1)
flags.DEFINE_string("output_dir", "runs/movielens_ranking", "Where results.json and tradeoff.png go.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")
flags.DEFINE_string(
    "data_dir", None, "TFDS data directory holding the prepared ratings (offline: a copy "
    "prepared elsewhere); default $TFDS_DATA_DIR or ~/tensorflow_datasets.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.run_experiment({
        "dataset": f"movielens_{FLAGS.variant}",
        "activations": FLAGS.activations,
        "replicas": FLAGS.replicas,
        "batch_size": FLAGS.batch_size,
        "epochs": FLAGS.epochs,
        "train_examples": 10_000_000,  # all ratings
        "eval_examples": 10_000_000,
        "progress": FLAGS.progress,
        "data_dir": FLAGS.data_dir,
    }, FLAGS.output_dir)


if __name__ == "__main__":
    cli.run(main)
