"""Keras layers: values, config round trips, training, mixed precision, errors."""

import os

import keras
import numpy as np
import pytest
import references
import tensorflow as tf

import tf_smelu
from tf_smelu import layers

LAYER_CASES = [
    (layers.SmeLU, dict(beta=0.5), lambda x: references.smelu(x, 0.5)),
    (layers.RESCU, dict(beta=0.7, order=3), lambda x: references.rescu_derivative(x, 0.7, 3)),
    (
        layers.GeneralizedSmeLU,
        dict(alpha=0.4, beta=1.5, g_minus=-0.1, g_plus=1.2, t=0.3),
        lambda x: references.generalized_smelu(x, 0.4, 1.5, -0.1, 1.2, 0.3),
    ),
]
IDS = ["SmeLU", "RESCU", "GeneralizedSmeLU"]


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("cls, kwargs, reference", LAYER_CASES, ids=IDS)
def test_layer_matches_reference(cls, kwargs, reference):
    x = np.random.default_rng(0).uniform(-3, 3, size=(4, 6)).astype("float32")
    np.testing.assert_allclose(cls(**kwargs)(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs, reference", LAYER_CASES, ids=IDS)
def test_config_round_trip(cls, kwargs, reference):
    layer = cls(name="act", **kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is cls and revived.get_config() == config


@pytest.mark.parametrize("cls, kwargs, reference", LAYER_CASES, ids=IDS)
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_keras_file_round_trip_and_fit(cls, kwargs, reference, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x[:, :1] * x[:, 1:2] > 0).astype("float32")
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8), cls(**kwargs), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("cls, kwargs, reference", LAYER_CASES, ids=IDS)
def test_mixed_float16(cls, kwargs, reference, mixed_precision):
    layer = cls(**kwargs)
    x = np.linspace(-3, 3, 12, dtype="float32").reshape(2, 6)
    y = layer(x)
    assert y.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(y, "float32"), reference(x), rtol=2e-3, atol=2e-3)


def test_generalized_smelu_learns_its_parameters():
    layer = layers.GeneralizedSmeLU(shared_axes=[1])
    layer.build((None, 3))
    assert len(layer.trainable_weights) == 5
    x = tf.constant(np.linspace(-2, 2, 30).reshape(10, 3), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None and g.shape == (1,) for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_generalized_smelu_per_channel_and_shared_axes():
    per_feature = layers.GeneralizedSmeLU()
    per_feature.build((None, 7))
    assert per_feature.alpha.shape == (7,)
    per_channel = layers.GeneralizedSmeLU(shared_axes=[1, 2])
    per_channel.build((None, 4, 4, 3))
    assert per_channel.beta.shape == (1, 1, 3)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(per_channel(x), references.smelu(x, 1.0), rtol=1e-5, atol=1e-6)


def test_generalized_smelu_fixed_parameters_and_constraint():
    layer = layers.GeneralizedSmeLU(trainable_parameters=["beta"], min_width=0.2)
    layer.build((None, 2))
    assert [w.name for w in layer.trainable_weights] == ["beta"]
    assert len(layer.non_trainable_weights) == 4
    layer.beta.assign(layer.beta.constraint(tf.constant([-1.0, 0.5])))
    np.testing.assert_allclose(layer.beta.numpy(), [0.2, 0.5])


def test_generalized_smelu_band_stays_positive_when_trained():
    model = keras.Sequential(
        [keras.Input((1,)), layers.GeneralizedSmeLU(alpha=0.01, beta=0.01, min_width=0.01)]
    )
    # A loss that pushes the band widths towards zero.
    model.compile(optimizer=keras.optimizers.SGD(10.0), loss="mse")
    x = np.linspace(-0.5, 0.5, 32, dtype="float32")[:, None]
    model.fit(x, np.abs(x) * 5, epochs=3, verbose=0)
    act = model.layers[0]
    floor = np.float32(0.01)
    assert act.alpha.numpy().min() >= floor and act.beta.numpy().min() >= floor


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (layers.SmeLU, dict(beta=0.0), "beta"),
        (layers.SmeLU, dict(beta="1"), "beta"),
        (layers.RESCU, dict(beta=-1.0), "beta"),
        (layers.RESCU, dict(order=0), "order"),
        (layers.RESCU, dict(order=2.5), "order"),
        (layers.RESCU, dict(order=33), "order"),
        (layers.SmeLU, dict(beta=float("inf")), "beta"),
        (layers.RESCU, dict(beta=float("nan")), "beta"),
        (layers.GeneralizedSmeLU, dict(alpha=float("inf")), "alpha"),
        (layers.GeneralizedSmeLU, dict(g_minus=float("nan")), "g_minus"),
        (layers.GeneralizedSmeLU, dict(g_plus=float("-inf")), "g_plus"),
        (layers.GeneralizedSmeLU, dict(t=float("inf")), "t"),
        (layers.GeneralizedSmeLU, dict(min_width=float("nan")), "min_width"),
        (layers.MinValue, dict(min_value=float("nan")), "min_value"),
        (layers.GeneralizedSmeLU, dict(alpha=0.0), "alpha"),
        (layers.GeneralizedSmeLU, dict(beta=1e-4), "min_width"),
        (layers.GeneralizedSmeLU, dict(trainable_parameters=["gamma"]), "trainable_parameters"),
        (layers.GeneralizedSmeLU, dict(trainable_parameters="beta"), "trainable_parameters"),
        # Beyond what float32 (the default compute dtype) computes with.
        (layers.SmeLU, dict(beta=1e300), "beta=1e.300"),
        (layers.RESCU, dict(beta=1e-320, order=3), "to be computed in float32"),
        (layers.RESCU, dict(beta=1e-45), "beta=1e-45"),
        (layers.GeneralizedSmeLU, dict(g_minus=1e300), "g_minus"),
        (layers.GeneralizedSmeLU, dict(alpha=1e38), "alpha"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("name, value", [("g_minus", np.nan), ("beta", np.inf), ("alpha", -1.0)])
def test_generalized_smelu_weight_gone_bad_is_reported(name, value):
    """A weight that training made invalid fails the next call, eager or in a graph."""
    layer = layers.GeneralizedSmeLU(shared_axes=[1])
    layer.build((None, 3))
    getattr(layer, name).assign([value])
    x = np.ones((2, 3), "float32")
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        layer(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}` must be"):
        tf.function(layer)(x)


def test_bad_shared_axes():
    with pytest.raises(ValueError, match="shared_axes"):
        layers.GeneralizedSmeLU(shared_axes=[3]).build((None, 4))
    with pytest.raises(ValueError, match="input_shape"):
        layers.GeneralizedSmeLU().build((None, None, 4))


def test_layers_are_exported_from_package():
    assert tf_smelu.layers.SmeLU is layers.SmeLU


def test_band_width_is_checked_against_the_layer_compute_dtype():
    x = np.array([[-1e300, 0.0, 3e300]])
    layer = layers.SmeLU(beta=1e300, dtype="float64")
    np.testing.assert_allclose(layer(x), [[0.0, 2.5e299, 3e300]])
    with pytest.raises(ValueError, match="to be computed in float32"):
        layers.RESCU(beta=1e300, dtype="mixed_float16")


@pytest.mark.parametrize("name, value", [("beta", 1e38), ("g_plus", 3e38)])
def test_generalized_smelu_weight_out_of_range_is_reported(name, value):
    layer = layers.GeneralizedSmeLU(shared_axes=[1])
    layer.build((None, 3))
    getattr(layer, name).assign([value])
    with pytest.raises(ValueError, match=f"`{name}` must be .* to be computed in float32"):
        layer(np.ones((2, 3), "float32"))
