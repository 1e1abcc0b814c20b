"""Export a SmeLU click model and serve it where tf_smelu is not installed.

Shows that a model trained with `activation="smelu"` exports to a SavedModel
made of stock TensorFlow ops only, so TF Serving (or plain TensorFlow) serves
it without this package:

  1. trains a small CTR model, `tf_smelu.models.build_model("mlp", ...,
     activation="smelu")`, on synthetic click data (`tf_smelu.data`);
  2. exports it with `model.export(--export_dir)` and lists the op types of
     the SavedModel, checking that each is a registered TensorFlow op;
  3. loads the SavedModel in a fresh Python process in which `import tf_smelu`
     fails, scores a few requests there and checks the scores equal the
     in-process model's;
  4. prints the `saved_model_cli run` command (and the TF Serving command) to
     try the export yourself.

The model outputs click *logits* (`output_0`, shape [batch, 1]); apply a
sigmoid for probabilities. Takes about 30 seconds on 2 CPU cores.

Example:
  python examples/export_and_serve.py --export_dir=/tmp/smelu_ctr

The checks and commands come from `tf_smelu.serving` (also used by
`notebooks/04_export_and_serve.ipynb` and `tests/test_serving.py`).
"""

from __future__ import annotations

import shlex
import time

import numpy as np
from absl import app, flags, logging

from tf_smelu import cli
from tf_smelu.serving import (
    non_stock_ops,
    saved_model_cli_command,
    saved_model_op_types,
    serve_without_package,
    tf_serving_command,
    xla_compiled_functions,
)

FLAGS = flags.FLAGS

# Held-out examples generated; the requests are the first --requests of them.
EVAL_EXAMPLES = 1_000

flags.DEFINE_string(
    "export_dir", "runs/export_and_serve/saved_model",
    "Directory the SavedModel is written to (created or overwritten).",
)
flags.DEFINE_integer(
    "train_examples", 50_000, "Synthetic training examples generated.", lower_bound=1
)
flags.DEFINE_integer(
    "steps", 200, "Training steps (batches); the data repeats if needed.", lower_bound=1
)
flags.DEFINE_integer("batch_size", 256, "Training batch size.", lower_bound=1)
flags.DEFINE_list("hidden_units", ["64", "32"], "Widths of the MLP tower (positive integers).")
flags.register_validator(
    "hidden_units", lambda units: bool(units) and all(u.isdigit() and int(u) > 0 for u in units),
    message="--hidden_units must be a comma-separated list of positive integers.",
)
flags.DEFINE_integer(
    "requests", 5, "Held-out examples scored by the served model and compared.",
    lower_bound=1, upper_bound=EVAL_EXAMPLES,
)
flags.DEFINE_integer("seed", 0, "Seed of the data, the weights and the data order.")

def train_ctr_model(train_examples: int, steps: int, batch_size: int,
                    hidden_units: list[int], seed: int):
    """Trains a SmeLU MLP click model; returns `(model, data_config, test_examples)`."""
    import keras

    import tf_smelu  # noqa: F401  (registers activation="smelu")
    from tf_smelu.data import SyntheticCTRConfig, generate_examples
    from tf_smelu.data.in_memory import batched_dataset
    from tf_smelu.models import build_model

    data_config = SyntheticCTRConfig(
        num_examples=train_examples, num_eval_examples=EVAL_EXAMPLES, seed=seed
    )
    train = generate_examples(data_config, "train")
    test = generate_examples(data_config, "test")
    model = build_model(
        "mlp", data_config.feature_spec(), activation="smelu", hidden_units=hidden_units,
        embedding_seed=seed, tower_seed=seed,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    data = batched_dataset(train.features, train.labels, batch_size, order_seed=seed)
    history = model.fit(data.repeat(), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    print(f"Trained {steps} steps of {batch_size} on {train_examples:,} synthetic examples: "
          f"training log loss {history.history['loss'][-1]:.4f}.")
    return model, data_config, test


def serving_signature(feature_spec):
    """The model's input signature: int64 ids per categorical field, float32 dense."""
    import tensorflow as tf

    from tf_smelu.data import DENSE_FEATURE_NAME

    signature = {
        name: tf.TensorSpec([None], tf.int64, name=name)
        for name in feature_spec.categorical_names
    }
    signature[DENSE_FEATURE_NAME] = tf.TensorSpec(
        [None, feature_spec.num_dense], tf.float32, name=DENSE_FEATURE_NAME
    )
    return signature


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # hide TensorFlow's INFO logs of the export
        logging.set_verbosity(logging.WARNING)
    cli.check_output_dir(FLAGS.export_dir, flag="export_dir")  # before training, not after
    start = time.perf_counter()
    model, data_config, test = train_ctr_model(
        FLAGS.train_examples, FLAGS.steps, FLAGS.batch_size,
        [int(units) for units in FLAGS.hidden_units], FLAGS.seed,
    )

    export_dir = FLAGS.export_dir
    model.export(export_dir, input_signature=[serving_signature(data_config.feature_spec())],
                 verbose=False)
    op_types = saved_model_op_types(export_dir)
    print(f"\nExported to {export_dir}: {len(op_types)} op types, for example "
          f"{', '.join(sorted(op for op in op_types if not op.startswith('__'))[:12])}, ...")
    unservable = non_stock_ops(op_types)
    if unservable:
        raise SystemExit(f"The SavedModel needs ops stock TensorFlow lacks: {sorted(unservable)}")
    compiled = xla_compiled_functions(export_dir)
    if compiled:
        raise SystemExit(f"The SavedModel has functions that must be XLA-compiled: {compiled}")
    print("Every op is a stock TensorFlow op: no custom op library, no Python callback.")

    requests = {name: values[: FLAGS.requests] for name, values in test.features.items()}
    expected = model.predict(requests, verbose=0)
    served = serve_without_package(export_dir, requests)["output_0"]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    print(f"\nServed {FLAGS.requests} requests in a process where `import tf_smelu` fails:")
    print(f"{'request':>7} {'logit (served)':>15} {'logit (in process)':>19} {'P(click)':>9}")
    for index, (s, e) in enumerate(zip(served[:, 0], expected[:, 0])):
        print(f"{index:>7} {s:15.6f} {e:19.6f} {1 / (1 + np.exp(-s)):9.4f}")
    print("The served scores equal the in-process model's (rtol 1e-5).")

    print("\nTry it yourself (outputs are click logits; prints the first two requests' scores):")
    two = {name: values[:2] for name, values in requests.items()}
    print("  " + shlex.join(saved_model_cli_command(export_dir, two)))
    print("Serve it with TF Serving (REST on port 8501):")
    print("  " + tf_serving_command(export_dir))
    print(f"\nDone in {time.perf_counter() - start:.0f}s.")


if __name__ == "__main__":
    cli.run(main)
