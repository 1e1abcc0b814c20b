"""Exported SavedModels hold only stock TF ops and serve without tf_smelu."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_smelu
from tf_smelu import serving

def _model_with_every_activation():
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="smelu")(inputs)
    hidden = keras.layers.Dense(8, activation="rescu")(hidden)
    hidden = keras.layers.Dense(8, activation="generalized_smelu")(hidden)
    hidden = tf_smelu.layers.GeneralizedSmeLU(shared_axes=[1], g_minus=0.05)(hidden)
    hidden = tf_smelu.layers.RESCU(beta=0.4, order=3)(hidden)
    hidden = tf_smelu.layers.SmeLU(beta=0.3)(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _assert_servable(path):
    op_types = serving.saved_model_op_types(path)
    assert op_types, "no ops found"
    assert not serving.non_stock_ops(op_types), serving.non_stock_ops(op_types)
    assert not serving.xla_compiled_functions(path)


@pytest.mark.slow
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
    _assert_servable(path)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    input_name = "features" if exporter == "model.export" else "x"
    (served,) = serving.serve_without_package(path, {input_name: x}).values()
    np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_stock_op_check_catches_py_function_and_xla(tmp_path):
    """Guards the checks: a py_function and a jit-compiled function are flagged."""
    module = tf.Module()
    module.f = tf.function(
        lambda x: tf.py_function(np.square, [x], tf.float32),
        input_signature=[tf.TensorSpec([None], tf.float32)],
    )
    path = str(tmp_path / "py")
    tf.saved_model.save(module, path)
    assert serving.non_stock_ops(serving.saved_model_op_types(path)) == {"EagerPyFunc"}

    compiled = tf.Module()
    compiled.f = tf.function(
        lambda x: tf_smelu.smelu(x), jit_compile=True,
        input_signature=[tf.TensorSpec([None], tf.float32)],
    )
    path = str(tmp_path / "xla")
    tf.saved_model.save(compiled, path)
    assert serving.xla_compiled_functions(path)


def test_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        serving.saved_model_op_types(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_serve_without_package_reports_the_subprocess_error(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": 2 * x},
                           input_signature=[tf.TensorSpec([None], tf.float32)])
    path = str(tmp_path / "m")
    tf.saved_model.save(module, path, signatures={"serving_default": module.f})
    np.testing.assert_allclose(
        serving.serve_without_package(path, {"x": np.ones(3, "float32")})["y"], [2, 2, 2])
    with pytest.raises(RuntimeError, match="Serving without tf_smelu failed"):
        serving.serve_without_package(path, {"wrong_name": np.ones(3, "float32")})


@pytest.mark.slow
def test_saved_model_cli_runs_the_export(tmp_path):
    """The command documented (docs/guide/saving-serving.md) for checking an export."""
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
