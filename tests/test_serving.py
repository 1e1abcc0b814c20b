"""Exported SavedModels hold only stock TF ops and serve without tf_smelu."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tf_smelu

# Ops that exist in TensorFlow but cannot run in TF Serving.
UNSERVABLE_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _model_with_every_activation():
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="smelu")(inputs)
    hidden = keras.layers.Dense(8, activation="rescu")(hidden)
    hidden = keras.layers.Dense(8, activation="generalized_smelu")(hidden)
    hidden = tf_smelu.layers.GeneralizedSmeLU(shared_axes=[1], g_minus=0.05)(hidden)
    hidden = tf_smelu.layers.RESCU(beta=0.4, order=3)(hidden)
    hidden = tf_smelu.layers.SmeLU(beta=0.3)(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _all_nodes(path):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        yield from meta_graph.graph_def.node
        for function in meta_graph.graph_def.library.function:
            yield from function.node_def
            if function.attr.get("_XlaMustCompile") and function.attr["_XlaMustCompile"].b:
                raise AssertionError(f"{function.signature.name} must be XLA-compiled")


def _assert_only_stock_ops(path):
    from tensorflow.python.framework import op_def_registry

    op_types = {node.op for node in _all_nodes(path)}
    assert op_types, "no ops found"
    for op_type in op_types:
        is_function_call = op_type.startswith("__inference")
        assert is_function_call or op_def_registry.get(op_type) is not None, op_type
    assert not op_types & UNSERVABLE_OPS


SERVE_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import sys
    sys.modules["tf_smelu"] = None  # any `import tf_smelu` now fails
    try:
        import tf_smelu  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("tf_smelu should not be importable here")
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    serve = loaded.signatures["serving_default"]
    x = tf.constant(np.load(sys.argv[2]))
    (output,) = serve(x).values()
    np.save(sys.argv[3], output.numpy())
    """
)


def _serve_in_fresh_process(path, x, tmp_path):
    x_path, y_path = str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    np.save(x_path, x)
    subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_PACKAGE, path, x_path, y_path],
        check=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return np.load(y_path)


@pytest.mark.parametrize("exporter", ["model.export", "tf.saved_model.save"])
def test_saved_model_serves_without_the_package(exporter, tmp_path):
    model = _model_with_every_activation()
    path = str(tmp_path / "export")
    if exporter == "model.export":
        model.export(path, verbose=False)
    else:
        signature = tf.function(
            lambda x: {"output_0": model(x)},
            input_signature=[tf.TensorSpec([None, 4], tf.float32)],
        )
        tf.saved_model.save(model, path, signatures={"serving_default": signature})
    _assert_only_stock_ops(path)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    served = _serve_in_fresh_process(path, x, tmp_path)
    np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_stock_op_check_catches_py_function(tmp_path):
    """Guards `_assert_only_stock_ops`: a py_function must be flagged."""
    module = tf.Module()
    module.f = tf.function(
        lambda x: tf.py_function(np.square, [x], tf.float32),
        input_signature=[tf.TensorSpec([None], tf.float32)],
    )
    path = str(tmp_path / "py")
    tf.saved_model.save(module, path)
    with pytest.raises(AssertionError):
        _assert_only_stock_ops(path)


def test_saved_model_cli_runs_the_export(tmp_path):
    """The command documented in the README for checking an export."""
    model = _model_with_every_activation()
    path = str(tmp_path / "export")
    model.export(path, verbose=False)
    result = subprocess.run(
        [
            sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
            "--dir", path, "--tag_set", "serve",
            "--signature_def", "serving_default",
            "--input_exprs", "features=[[1.0, 1.0, 1.0, 1.0], [0.5, 0.0, -1.0, 2.0]]",
            "--outdir", str(tmp_path / "out"),
        ],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    x = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.0, -1.0, 2.0]], "float32")
    (output_file,) = os.listdir(tmp_path / "out")
    served = np.load(tmp_path / "out" / output_file)
    np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
