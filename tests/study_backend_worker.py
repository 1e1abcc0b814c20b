"""Runs a small `ReplicaStudy` under one backend or strategy (run by test_backends.py).

Usage: python tests/study_backend_worker.py COMMAND [ARGS]
  sources                 under KERAS_BACKEND: sources=(), ("init",) and
                          ("order",) on tf.data input; prints one JSON line
                          {sources: {identical, rel_pd, auc, steps}, ...}
  mirrored                the same three under MirroredStrategy over two
                          logical CPU devices (TensorFlow backend)
  mwms                    the same under MultiWorkerMirroredStrategy, one worker
  mwms_workers INDEX PORTS  worker INDEX of a localhost MWMS cluster on the
                          comma-separated PORTS; prints the study's error

Each configuration needs a fresh process: the backend is read when Keras is
imported, and logical devices or a cluster can be set up only once.
"""

from __future__ import annotations

import json
import os
import sys


def _data():
    """`(make_dataset(order_seed), held_out dataset)`: separable-ish clicks through tf.data."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 6)).astype("float32")
    y = (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=1200) > 0).astype("float32")

    def make_dataset(order_seed):
        return tf.data.Dataset.from_tensor_slices((x[:800], y[:800])).shuffle(
            800, seed=order_seed).batch(50)

    return make_dataset, tf.data.Dataset.from_tensor_slices((x[800:], y[800:])).batch(100)


def _build(seed):
    import keras

    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(12, activation="relu"),
        keras.layers.Dropout(0.2),  # random in training: pinned by the seed when init is off
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["auc"])
    return model


def run_sources(strategy=None) -> None:
    """Prints the rows of sources=(), init, order as one JSON line."""
    import keras

    from tf_smelu.reproducibility import ReplicaStudy

    make_dataset, held_out = _data()
    summary = {"backend": keras.backend.backend()}
    for sources in [(), ("init",), ("order",)]:
        study = ReplicaStudy(_build, make_dataset, held_out, replicas=2, sources=sources,
                             epochs=2, **({"strategy": strategy} if strategy else {}))
        [row] = study.run()
        summary["+".join(sources) or "none"] = {
            "identical": row["identical_replicas"], "rel_pd": row["rel_pd"],
            "auc": row["auc_mean"], "steps": row["steps"]}
    if strategy is not None:
        summary["replicas_in_sync"] = strategy.num_replicas_in_sync
    else:
        summary["strategy_error"] = _strategy_error_under_this_backend()
    print(json.dumps(summary))


def _strategy_error_under_this_backend() -> str | None:
    """The study's error for a tf.distribute strategy (expected off TensorFlow)."""
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    make_dataset, held_out = _data()
    try:
        ReplicaStudy(_build, make_dataset, held_out, strategy=tf.distribute.MirroredStrategy())
    except ValueError as error:
        return str(error)
    return None


def mirrored() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    run_sources(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))


def mwms_workers(index: str, ports: str) -> None:
    """One worker of a localhost cluster: the study refuses it before training."""
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports.split(",")]},
        "task": {"type": "worker", "index": int(index)}})
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # waits for every worker
    make_dataset, held_out = _data()
    try:
        ReplicaStudy(_build, make_dataset, held_out, strategy=strategy)
    except ValueError as error:
        print(json.dumps({"error": str(error)}))


def main(command: str, *args: str) -> None:
    if command == "sources":
        run_sources()
    elif command == "mirrored":
        mirrored()
    elif command == "mwms":
        import tensorflow as tf

        run_sources(tf.distribute.MultiWorkerMirroredStrategy())
    elif command == "mwms_workers":
        mwms_workers(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
