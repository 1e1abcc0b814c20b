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

The helpers (`saved_model_op_types`, `non_stock_ops`, `serve_without_package`,
`saved_model_cli_command`, `tf_serving_command`) are reused by
`notebooks/04_export_and_serve.ipynb`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Dict, Iterable, List, Mapping, Set

import numpy as np
from absl import app, flags, logging

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

# Ops that exist in TensorFlow but cannot run in TF Serving (Python callbacks).
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# Runs in a fresh interpreter: argv = export_dir, signature, requests.npz, outputs.npz.
_SERVE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["tf_smelu"] = None  # from here on, `import tf_smelu` raises ImportError
    try:
        import tf_smelu  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("tf_smelu is importable; the check would prove nothing")
    import numpy as np
    import tensorflow as tf

    export_dir, signature, requests_path, outputs_path = sys.argv[1:]
    serve = tf.saved_model.load(export_dir).signatures[signature]
    with np.load(requests_path) as requests:
        outputs = serve(**{name: tf.constant(requests[name]) for name in requests.files})
    np.savez(outputs_path, **{name: value.numpy() for name, value in outputs.items()})
    """
)


def saved_model_op_types(export_dir: str) -> Set[str]:
    """Every op type in a SavedModel's graphs and function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    op_types = set()
    for meta_graph in proto.meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            op_types.update(node.op for node in function.node_def)
    return op_types


def non_stock_ops(op_types: Iterable[str]) -> Set[str]:
    """The op types that stock TensorFlow (hence TF Serving) cannot run.

    Those are ops missing from TensorFlow's op registry (a custom op library
    would be needed) and Python callbacks (`tf.py_function`). Calls of
    functions stored in the SavedModel itself (`__inference_...`) are fine.
    """
    from tensorflow.python.framework import op_def_registry

    return {
        op
        for op in op_types
        if op in PYTHON_OPS
        or (not op.startswith("__inference") and op_def_registry.get(op) is None)
    }


def serve_without_package(
    export_dir: str,
    requests: Mapping[str, np.ndarray],
    signature: str = "serving_default",
    timeout: float = 300,
) -> Dict[str, np.ndarray]:
    """Scores `requests` with the SavedModel in a process without tf_smelu.

    Args:
        export_dir: The SavedModel directory.
        requests: Input name of the signature -> batch of values (their dtype
            is kept, so ids should be int64 if the signature says so).
        signature: Serving signature to call.
        timeout: Seconds before the subprocess is killed.

    Returns:
        Output name -> values, as computed in the fresh process.
    """
    with tempfile.TemporaryDirectory() as scratch:
        requests_path = os.path.join(scratch, "requests.npz")
        outputs_path = os.path.join(scratch, "outputs.npz")
        np.savez(requests_path, **requests)
        result = subprocess.run(
            [sys.executable, "-c", _SERVE_SCRIPT, os.path.abspath(export_dir), signature,
             requests_path, outputs_path],
            capture_output=True, text=True, timeout=timeout, cwd=scratch,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"Serving without tf_smelu failed (exit {result.returncode}):\n"
                f"{result.stderr[-3000:]}"
            )
        with np.load(outputs_path) as outputs:
            return {name: outputs[name] for name in outputs.files}


def _python_literal(values: np.ndarray) -> str:
    """A compact Python literal of an array for `saved_model_cli --input_exprs`."""
    if values.dtype.kind == "f":
        return repr(np.round(values.astype(np.float64), 4).tolist())
    return repr(values.tolist())


def saved_model_cli_command(
    export_dir: str,
    requests: Mapping[str, np.ndarray],
    signature: str = "serving_default",
    executable: Iterable[str] = ("saved_model_cli",),
) -> List[str]:
    """`saved_model_cli run` arguments scoring `requests` (as a list for subprocess).

    Floats are rounded to 4 digits to keep the command short, so its scores
    match the model's to about 1e-3, not bit for bit. Pass
    `executable=(sys.executable, "-m", "tensorflow.python.tools.saved_model_cli")`
    when the `saved_model_cli` script is not on the PATH.
    """
    exprs = ";".join(f"{name}={_python_literal(np.asarray(v))}" for name, v in requests.items())
    return [
        *executable, "run", "--dir", export_dir, "--tag_set", "serve",
        "--signature_def", signature, "--input_exprs", exprs,
    ]


def tf_serving_command(export_dir: str, model_name: str = "smelu") -> str:
    """The `docker run` command serving the export with TF Serving over REST."""
    return (
        f"docker run -p 8501:8501 -v {shlex.quote(os.path.abspath(export_dir))}:"
        f"/models/{model_name}/1 -e MODEL_NAME={model_name} tensorflow/serving"
    )


def train_ctr_model(train_examples: int, steps: int, batch_size: int,
                    hidden_units: List[int], seed: int):
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
    app.run(main)
