"""Checks that an exported model serves with stock TensorFlow, and commands to serve it.

A model trained with `activation="smelu"` (or any activation of this package)
exports to a SavedModel of stock TensorFlow ops, so TF Serving or plain
TensorFlow serves it without tf_smelu installed. These helpers prove it for a
given export, e.g. in a CI job:

    op_types = saved_model_op_types("/tmp/export")
    assert not non_stock_ops(op_types) and not xla_compiled_functions("/tmp/export")
    scores = serve_without_package("/tmp/export", {"features": x})["output_0"]

and print the `saved_model_cli` and TF Serving commands for trying it by hand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Mapping

import numpy as np

PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
"""Ops that exist in TensorFlow but cannot run in TF Serving (Python callbacks)."""

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


def _read_saved_model(export_dir: str):
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No SavedModel at {export_dir!r}: {path} does not exist.")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def saved_model_op_types(export_dir: str) -> set[str]:
    """Every op type in a SavedModel's graphs and function library.

    Args:
        export_dir: The SavedModel directory.

    Returns:
        The op type names (e.g. `"MatMul"`, `"Relu"`).

    Raises:
        FileNotFoundError: if `export_dir` holds no `saved_model.pb`.
    """
    proto = _read_saved_model(export_dir)
    op_types = set()
    for meta_graph in proto.meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            op_types.update(node.op for node in function.node_def)
    return op_types


def xla_compiled_functions(export_dir: str) -> list[str]:
    """Functions of a SavedModel that need XLA to serve.

    Those marked `jit_compile=True`, and those calling `XlaCallModule` (how
    models exported from the JAX backend carry their computation). Stock TF
    Serving builds may lack XLA on some platforms; exports meant for serving
    should have none.

    Args:
        export_dir: The SavedModel directory.

    Returns:
        The names of those functions (empty for a portable export).

    Raises:
        FileNotFoundError: if `export_dir` holds no `saved_model.pb`.
    """
    proto = _read_saved_model(export_dir)
    return [
        function.signature.name
        for meta_graph in proto.meta_graphs
        for function in meta_graph.graph_def.library.function
        if (function.attr.get("_XlaMustCompile") is not None
            and function.attr["_XlaMustCompile"].b)
        or any(node.op == "XlaCallModule" for node in function.node_def)
    ]


def non_stock_ops(op_types: Iterable[str]) -> set[str]:
    """The op types that stock TensorFlow (hence TF Serving) cannot run.

    Those are ops missing from TensorFlow's op registry (a custom op library
    would be needed) and Python callbacks (`tf.py_function`). Calls of
    functions stored in the SavedModel itself (`__inference_...`) are fine.

    Args:
        op_types: Op type names, e.g. `saved_model_op_types(export_dir)`.

    Returns:
        Those of `op_types` that stock TF Serving cannot run (empty for a
        portable export).
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
) -> dict[str, np.ndarray]:
    """Scores `requests` with the SavedModel in a process without tf_smelu.

    Args:
        export_dir: The SavedModel directory.
        requests: Input name of the signature -> batch of values (their dtype
            is kept, so ids should be int64 if the signature says so).
        signature: Serving signature to call.
        timeout: Seconds before the subprocess is killed.

    Returns:
        Output name -> values, as computed in the fresh process.

    Raises:
        RuntimeError: if the process fails (e.g. the SavedModel needs an op
            of tf_smelu, or an input is missing), with its error output.
        subprocess.TimeoutExpired: if it takes longer than `timeout`.

    Examples:
        Export a model with a SmeLU layer and score it where tf_smelu cannot
        be imported, as TF Serving would:

        ```python
        import tempfile

        import keras
        import numpy as np

        import tf_smelu
        from tf_smelu import serving

        inputs = keras.Input((4,), name="x")
        hidden = tf_smelu.layers.SmeLU(beta=0.5)(keras.layers.Dense(8)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1, "sigmoid")(hidden))
        export_dir = tempfile.mkdtemp()
        model.export(export_dir, verbose=False)  # a SavedModel, signature serving_default
        x = np.ones((2, 4), "float32")
        outputs = serving.serve_without_package(export_dir, {"x": x})
        served = next(iter(outputs.values()))
        assert np.allclose(served, model.predict(x, verbose=0))  # the same scores
        ```
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
) -> list[str]:
    """`saved_model_cli run` arguments scoring `requests` (as a list for subprocess).

    Floats are rounded to 4 digits to keep the command short, so its scores
    match the model's to about 1e-3, not bit for bit. Pass
    `executable=(sys.executable, "-m", "tensorflow.python.tools.saved_model_cli")`
    when the `saved_model_cli` script is not on the PATH.

    Args:
        export_dir: The SavedModel directory.
        requests: Input name of the signature -> batch of values.
        signature: Serving signature to call.
        executable: The command that runs `saved_model_cli`.

    Returns:
        The command's arguments, for `subprocess.run`.
    """
    exprs = ";".join(f"{name}={_python_literal(np.asarray(v))}" for name, v in requests.items())
    return [
        *executable, "run", "--dir", export_dir, "--tag_set", "serve",
        "--signature_def", signature, "--input_exprs", exprs,
    ]


def tf_serving_command(export_dir: str, model_name: str = "smelu") -> str:
    """The `docker run` command serving the export with TF Serving over REST.

    Args:
        export_dir: The SavedModel directory, mounted as version 1 of the model.
        model_name: The model's name in TF Serving's REST paths
            (`/v1/models/<model_name>:predict`).

    Returns:
        The shell command (paths quoted), serving on port 8501.
    """
    return (
        f"docker run -p 8501:8501 -v {shlex.quote(os.path.abspath(export_dir))}:"
        f"/models/{model_name}/1 -e MODEL_NAME={model_name} tensorflow/serving"
    )
