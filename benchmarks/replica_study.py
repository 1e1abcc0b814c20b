"""Replicas side by side in one `fit` vs one `fit` per replica: time per replica.

`tf_smelu.ReplicaStudy` trains the R replicas of an init-only study
(`sources=("init",)`) side by side in one `fit` of a model holding R copies
(`side_by_side="auto"`), or one after another (`side_by_side=False`). This
runs the same study both ways on a small CTR-like model (embeddings of
categorical fields + dense features, MLP 64-32, Adam, binary cross-entropy)
over synthetic clicks, and prints the time per replica of each and their
ratio. The two are interleaved (their order alternates from round to round)
and repeated, so machine noise hits both alike; the table gives the median
and the range over rounds. Both ways give bit-identical predictions (checked
here on every round).

Time is `fit`'s wall time (`train_seconds` of the study's row; the held-out
predictions, the same work either way, are not in it) and, separately, the
whole study's wall time (building, tracing, fitting, predicting). A stacked
graph of R copies takes about as long to trace as R single ones, so only the
steps get cheaper: the ratio improves with --epochs and --rows.

Usage:
  python benchmarks/replica_study.py                      # about 5 minutes on 2 cores
  python benchmarks/replica_study.py --epochs=10          # more steps per trace
  python benchmarks/replica_study.py --rows=4000 --replicas=2 --repeats=1  # smoke test
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

# The study's control (bit-identical replicas) and this benchmark use TensorFlow graphs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_smelu
from tf_smelu import cli
from tf_smelu.common import atomic_write
from tf_smelu.reproducibility import ReplicaStudy

FLAGS = flags.FLAGS
flags.DEFINE_integer("rows", 40_000, "Synthetic training rows.", lower_bound=100)
flags.DEFINE_integer("held_out_rows", 5_000, "Synthetic held-out rows.", lower_bound=10)
flags.DEFINE_list("replicas", ["4", "8"], "Replica counts R to measure (each >= 2).")
flags.DEFINE_integer("repeats", 3, "Rounds; each round runs every R both ways.", lower_bound=1)
flags.DEFINE_integer("epochs", 1, "Epochs of every replica's fit.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("fields", 6, "Categorical fields, one embedding each.", lower_bound=1)
flags.DEFINE_integer("vocabulary", 1000, "Values per categorical field.", lower_bound=2)
flags.DEFINE_string("output_dir", "runs/replica_study", "Where replica_study.json goes.")

DENSE_FEATURES = 4
EMBEDDING_DIM = 8
HIDDEN_UNITS = (64, 32)
WAYS = {"sequential": False, "side_by_side": True}


def _synthetic_clicks(rows: int, seed: int):
    """`({"categorical": [rows, fields] int32, "numeric": [rows, 4]}, clicks [rows])`."""
    rng = np.random.default_rng(seed)
    categorical = rng.integers(0, FLAGS.vocabulary, size=(rows, FLAGS.fields)).astype("int32")
    dense = rng.normal(size=(rows, DENSE_FEATURES)).astype("float32")
    # Clicks depend on a hash of two fields and on the dense features.
    signal = np.sin(categorical[:, 0] * 0.37) + np.cos(categorical[:, 1] * 0.11) + dense[:, 0]
    clicks = (signal + rng.normal(size=rows) > 0.5).astype("float32")
    return {"categorical": categorical, "numeric": dense}, clicks


def _build_ctr_model(seed: int) -> keras.Model:
    del seed  # the study seeds Keras' global generators before each build
    categorical = keras.Input((FLAGS.fields,), dtype="int32", name="categorical")
    dense = keras.Input((DENSE_FEATURES,), name="numeric")
    embedded = keras.layers.Flatten()(
        keras.layers.Embedding(FLAGS.vocabulary, EMBEDDING_DIM)(categorical))
    hidden = keras.layers.Concatenate()([embedded, dense])
    for units in HIDDEN_UNITS:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    model = keras.Model({"categorical": categorical, "numeric": dense},
                        keras.layers.Dense(1, activation="sigmoid")(hidden), name="ctr")
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=["auc"])
    return model


def _run(replicas: int, side_by_side: bool, train, held_out) -> dict[str, object]:
    """One study; its fit seconds, total seconds and held-out AUCs."""
    study = ReplicaStudy(_build_ctr_model, train, held_out, replicas=replicas,
                         sources=("init",), side_by_side=side_by_side, epochs=FLAGS.epochs)
    start = time.perf_counter()
    [row] = study.run()
    total = time.perf_counter() - start
    if row["side_by_side"] != side_by_side:
        raise RuntimeError(f"the study did not train side_by_side={side_by_side}")
    return {"fit_seconds": row["train_seconds"], "total_seconds": total, "aucs": row["aucs"],
            "rel_pd": row["rel_pd"]}


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        counts = [int(r) for r in FLAGS.replicas]
    except ValueError:
        raise app.UsageError(f"--replicas must be integers >= 2. Received: {FLAGS.replicas}") from None
    if not counts or min(counts) < 2:
        raise app.UsageError(f"--replicas must all be >= 2. Received: {FLAGS.replicas}")
    tf.get_logger().setLevel("ERROR")
    x, y = _synthetic_clicks(FLAGS.rows, seed=0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(FLAGS.batch_size)
    held_out = _synthetic_clicks(FLAGS.held_out_rows, seed=1)
    samples = {(r, way): [] for r in counts for way in WAYS}
    for round_index in range(FLAGS.repeats):
        for replicas in counts:
            ways = list(WAYS) if round_index % 2 == 0 else list(reversed(WAYS))
            runs = {way: _run(replicas, WAYS[way], train, held_out) for way in ways}
            # Same seeds, same data, op determinism on: the same replicas either way.
            if runs["sequential"]["aucs"] != runs["side_by_side"]["aucs"]:
                raise RuntimeError(f"R={replicas}: side-by-side replicas differ from sequential "
                                   f"ones: {runs}")
            for way, run in runs.items():
                samples[replicas, way].append(run)
            print(f"round {round_index + 1}/{FLAGS.repeats} R={replicas}: " + ", ".join(
                f"{way} fit {run['fit_seconds']:.1f}s" for way, run in runs.items()), flush=True)

    print(f"\nTensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs; "
          f"{FLAGS.rows:,} rows, batch {FLAGS.batch_size}, {FLAGS.epochs} epoch(s), "
          f"{FLAGS.repeats} round(s): median [min, max]")
    print("| R | sequential fit s/replica | side by side fit s/replica | ratio (fit) "
          "| ratio (whole study) |")
    print("|---|---|---|---|---|")
    results = []
    for replicas in counts:
        per_replica = {way: [run["fit_seconds"] / replicas for run in samples[replicas, way]]
                       for way in WAYS}
        ratios = [side / seq for side, seq in zip(per_replica["side_by_side"],
                                                  per_replica["sequential"])]
        totals = [side["total_seconds"] / seq["total_seconds"] for side, seq in
                  zip(samples[replicas, "side_by_side"], samples[replicas, "sequential"])]
        entry = {"replicas": replicas, **{f"{way}_fit_seconds_per_replica": _summary(v)
                                          for way, v in per_replica.items()},
                 "ratio_fit": _summary(ratios), "ratio_total": _summary(totals),
                 "rel_pd": samples[replicas, "sequential"][0]["rel_pd"]}
        results.append(entry)
        cells = [f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]" for s in (
            entry["sequential_fit_seconds_per_replica"],
            entry["side_by_side_fit_seconds_per_replica"], entry["ratio_fit"],
            entry["ratio_total"])]
        print(f"| {replicas} | " + " | ".join(cells) + " |")

    path = os.path.join(FLAGS.output_dir, "replica_study.json")
    settings = {"rows": FLAGS.rows, "held_out_rows": FLAGS.held_out_rows,
                "batch_size": FLAGS.batch_size, "epochs": FLAGS.epochs,
                "repeats": FLAGS.repeats, "fields": FLAGS.fields,
                "vocabulary": FLAGS.vocabulary, "hidden_units": list(HIDDEN_UNITS),
                "tensorflow": tf.__version__, "keras": keras.__version__,
                "tf_smelu": tf_smelu.__version__, "cpus": os.cpu_count(),
                "machine": platform.machine(), "date": time.strftime("%Y-%m-%d", time.gmtime())}
    with atomic_write(path) as file:
        json.dump({"settings": settings, "results": results}, file, indent=2)
    print(f"\nWrote {path}")


if __name__ == "__main__":
    cli.run(main)  # the command-line error style: one `error:` line for a bad flag
