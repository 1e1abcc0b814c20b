"""Activation strings in Keras 3 and tf-keras, and fresh-process loading."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_smelu
from tf_smelu import registry

NAMES = ["smelu", "generalized_smelu", "rescu"]


def test_private_keras_registry_still_exists():
    # registry.py writes into this private dict; fail loudly if Keras moves it.
    from keras.src import activations as keras_activations

    assert isinstance(keras_activations.ALL_OBJECTS_DICT, dict)
    assert keras_activations.ALL_OBJECTS_DICT["relu"] is keras.activations.relu


@pytest.mark.parametrize("name", NAMES)
def test_keras_get_returns_the_function(name):
    assert keras.activations.get(name) is getattr(tf_smelu, name)


@pytest.mark.parametrize("name", NAMES)
def test_keras_serialize_round_trip(name):
    fn = keras.activations.get(name)
    config = keras.activations.serialize(fn)
    assert keras.activations.deserialize(config) is fn
    assert keras.activations.get(config) is fn


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "make_layer, shape",
    [
        (lambda a: keras.layers.Dense(3, activation=a), (2, 4)),
        (lambda a: keras.layers.Conv2D(2, 3, activation=a), (1, 5, 5, 2)),
        (lambda a: keras.layers.Conv1D(2, 2, activation=a), (1, 6, 3)),
        (lambda a: keras.layers.Activation(a), (2, 4)),
        (lambda a: keras.layers.SimpleRNN(3, activation=a), (2, 4, 3)),
    ],
    ids=["Dense", "Conv2D", "Conv1D", "Activation", "SimpleRNN"],
)
def test_string_works_in_layers_and_round_trips(name, make_layer, shape):
    layer = make_layer(name)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = layer(x)
    assert np.all(np.isfinite(y))
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.activation is getattr(tf_smelu, name)


def test_dense_smelu_is_dense_then_smelu():
    layer = keras.layers.Dense(5, activation="smelu")
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    y = layer(x)
    pre = x @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(y, tf_smelu.smelu(pre), rtol=1e-5, atol=1e-6)


def test_registration_is_idempotent():
    registry.register_all()
    registry.register_all()
    assert keras.activations.get("smelu") is tf_smelu.smelu


@pytest.mark.parametrize("name", NAMES)
def test_tf_keras_string_activation(name):
    tf_keras = pytest.importorskip("tf_keras")  # a declared test extra: always present in CI
    assert tf_keras.activations.get(name) is getattr(tf_smelu, name)
    layer = tf_keras.layers.Dense(3, activation=name)
    model = tf_keras.Sequential([tf_keras.Input((4,)), layer])
    revived = tf_keras.Sequential.from_config(model.get_config())
    assert revived.layers[0].activation is getattr(tf_smelu, name)
    assert np.all(np.isfinite(model(np.ones((2, 4), "float32"))))


def test_tf_keras_is_installed_in_ci():
    # The test extra installs tf-keras; without it the test above would skip.
    if os.environ.get("CI"):
        import tf_keras  # noqa: F401


FRESH_PROCESS_LOAD = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    import tf_smelu  # only the import: no custom_objects needed
    model = keras.models.load_model(sys.argv[1], safe_mode=True)
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], model.predict(x, verbose=0))
    """
)


def test_keras_file_loads_in_a_fresh_process(tmp_path):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="smelu")(inputs)
    hidden = keras.layers.Dense(8, activation="rescu")(hidden)
    hidden = keras.layers.Dense(8, activation="generalized_smelu")(hidden)
    hidden = tf_smelu.layers.GeneralizedSmeLU(shared_axes=[1])(hidden)
    hidden = tf_smelu.layers.RESCU(beta=0.3, order=3)(hidden)
    outputs = keras.layers.Dense(1)(tf_smelu.layers.SmeLU(beta=0.2)(hidden))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    paths = [str(tmp_path / name) for name in ("m.keras", "x.npy", "y.npy")]
    model.save(paths[0])
    np.save(paths[1], x)
    subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_LOAD, *paths],
        check=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    np.testing.assert_allclose(np.load(paths[2]), model.predict(x, verbose=0), rtol=1e-6)


def test_loading_without_import_fails_clearly(tmp_path):
    """Guards the test above: without `import tf_smelu` the load must fail."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="smelu")])
    path = str(tmp_path / "m.keras")
    model.save(path)
    script = FRESH_PROCESS_LOAD.replace("import tf_smelu", "pass")
    result = subprocess.run(
        [sys.executable, "-c", script, path, "x.npy", "y.npy"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode != 0
    assert "smelu" in result.stderr
