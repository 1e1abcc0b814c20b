"""Pre-activation spreads per hidden layer, and β relative to them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_smelu
from tf_smelu import layers as smelu_layers
from tf_smelu.conversion import activation_layer, rebuild
from tf_smelu.data import SyntheticCTRConfig, generate_examples
from tf_smelu.data.features import CategoricalFeature, FeatureSpec
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment import run_replicas
from tf_smelu.models import build_model
from tf_smelu.registry import Activation
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.preactivation import (
    PreactivationStd,
    length_parameters,
    measure_preactivation_std,
    relative_label,
    relative_model_fn,
)
from tf_smelu.training.problem import UserModelBuilder

# -- a tiny model whose pre-activations NumPy computes ------------------------

W1 = np.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]], np.float32)
B1 = np.array([0.1, 0.0, -0.2], np.float32)
W2 = np.array([[1.0, -1.0], [2.0, 0.5], [-1.0, 1.5]], np.float32)
B2 = np.array([0.0, 0.3], np.float32)
X = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)


def _hand_model() -> keras.Model:
    inputs = keras.Input((2,), name="x")
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    second = keras.layers.Dense(2, name="second")(hidden)
    second = keras.layers.ReLU(name="second_relu")(second)
    model = keras.Model(inputs, keras.layers.Dense(1, name="logit")(second))
    model.get_layer("hidden").set_weights([W1, B1])
    model.get_layer("second").set_weights([W2, B2])
    return model


HAND_MODEL = _hand_model()


def _hand_model_fn(activation, embedding_seed=None, tower_seed=None):
    """Every build carries the known weights: the seeds play no part."""
    return rebuild(HAND_MODEL, activation, keep_weights=True)[0]


def _hand_std(rows: np.ndarray) -> dict[str, float]:
    first = rows.astype(np.float64) @ W1 + B1
    second = np.maximum(first, 0) @ W2 + B2
    return {"hidden": float(np.std(first)), "second_relu": float(np.std(second))}


@pytest.mark.parametrize("max_rows", [7, 5, 3])
def test_std_is_over_all_units_and_rows_of_each_layer(max_rows):
    # Batches of 3 rows: the moments of uneven batches are combined.
    eval_data = tf.data.Dataset.from_tensor_slices(X).batch(3)
    std = measure_preactivation_std(_hand_model_fn, eval_data, eval_data, warmup_steps=0,
                                    max_rows=max_rows)
    assert list(std.std) == ["hidden", "second_relu"]  # the order the data meets them
    assert std.rows == max_rows and std.warmup_steps == 0
    expected = _hand_std(X[:max_rows])
    for key in expected:
        np.testing.assert_allclose(std.std[key], expected[key], rtol=1e-6, err_msg=key)


SMALL = {"hidden": 0.5, "second_relu": 2.0}


@pytest.mark.parametrize(
    "spec, parameters",
    [("smelu:0.3", {"beta": 0.3}), ("rescu:0.3:3", {"beta": 0.3, "order": 3}),
     ("generalized_smelu:0.3", {"alpha": 0.3, "beta": 0.3, "t": 0.0, "min_width": 1e-3})],
)
def test_each_hidden_layer_gets_k_times_its_sigma(spec, parameters):
    relative = relative_model_fn(_hand_model_fn, SMALL)
    model = relative(spec)
    activations = [layer for layer in model.layers if length_parameters(layer)]
    suffix = type(activations[0]).__name__.lower()
    assert [layer.name for layer in activations] == [f"hidden_{suffix}", "second_relu"]
    for layer, sigma in zip(activations, SMALL.values(), strict=True):
        config = layer.get_config()
        for name, value in parameters.items():
            unitless = name not in length_parameters(layer)
            assert config[name] == pytest.approx(value if unitless else value * sigma), name
    assert relative.betas(spec) == pytest.approx({"hidden": 0.15, "second_relu": 0.6})


@pytest.mark.parametrize("template", [smelu_layers.SmeLU(0.3), smelu_layers.RESCU(0.3, 2),
                                      smelu_layers.GeneralizedSmeLU(0.2, 0.3, 0.1, 0.9, 0.05)])
def test_scaled_layer_is_the_same_shape_on_a_wider_axis(template):
    """Scaling every length parameter by σ gives x -> σ f(x / σ)."""
    sigma = 2.5
    scaled = relative_model_fn(_hand_model_fn, {"hidden": sigma}).activations(template)
    x = np.linspace(-3, 3, 61, dtype=np.float32)[:, None]
    np.testing.assert_allclose(scaled["hidden"](x), sigma * template(x / sigma),
                               rtol=1e-5, atol=1e-6)


def test_the_rows_description_is_json_ready():
    relative = relative_model_fn(_hand_model_fn, PreactivationStd(SMALL, 200, 10_000))
    assert relative.describe("smelu:1.2") == {
        "beta_scale": "relative", "k": 1.2,
        "beta_per_layer": {"hidden": pytest.approx(0.6), "second_relu": pytest.approx(2.4)},
        "preactivation_std": SMALL, "preactivation_warmup_steps": 200,
        "preactivation_rows": 10_000,
    }
    assert relative.describe("gelu")["beta_per_layer"] is None


@pytest.mark.parametrize("activation", ["smelu", tf_smelu.smelu, "rescu", tf_smelu.rescu])
def test_a_name_or_function_alone_means_k_equal_to_one(activation):
    assert relative_model_fn(_hand_model_fn, SMALL).betas(activation) == SMALL


@pytest.mark.parametrize("activation", ["relu", "gelu", Activation.parse("swish"), tf.nn.relu,
                                        keras.layers.LeakyReLU(0.1)])
def test_activations_without_a_scale_pass_through(activation):
    relative = relative_model_fn(_hand_model_fn, SMALL)
    assert relative.activations(activation) is activation
    assert relative.betas(activation) is None
    np.testing.assert_array_equal(relative(activation)(X), _hand_model_fn(activation)(X))


@pytest.mark.parametrize(
    ("label", "expected"),
    [("smelu:1.2", "smelu(β=1.2σ)"), ("rescu:0.5:2", "rescu(β=0.5σ, n=2)"), ("gelu", "gelu")],
)
def test_relative_labels(label, expected):
    assert relative_label(Activation.parse(label)) == expected


# -- the rankers, the harness and users' .keras models --------------------------

TINY = SyntheticCTRConfig(num_examples=1024, num_eval_examples=256, chunk_size=1024,
                          vocab_sizes={"user_id": 50, "item_id": 30, "device": 4})


@pytest.fixture(scope="module")
def tiny():
    train, test = generate_examples(TINY, "train"), generate_examples(TINY, "test")

    def model_fn(activation, embedding_seed=None, tower_seed=None):
        return build_model("dcn", TINY.feature_spec(), activation, embedding_dim=4,
                           bottom_units=(4,), top_units=(16, 8), num_cross_layers=1,
                           embedding_seed=embedding_seed, tower_seed=tower_seed)

    return (model_fn, batched_dataset(train.features, train.labels, 128),
            batched_dataset(test.features, test.labels, 100))


def _measure(tiny, **kwargs) -> PreactivationStd:
    model_fn, train_data, eval_data = tiny
    return measure_preactivation_std(model_fn, train_data, eval_data,
                                     TrainingConfig(learning_rate=0.01), **kwargs)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_measurement_is_deterministic_and_warm_up_changes_it(tiny):
    first = _measure(tiny, warmup_steps=5, seed=1)
    assert list(first.std) == ["bottom_activation_0", "top_activation_0", "top_activation_1"]
    assert first.rows == 256
    assert _measure(tiny, warmup_steps=5, seed=1) == first
    assert _measure(tiny, warmup_steps=0, seed=1).std != first.std
    assert _measure(tiny, warmup_steps=5, seed=2).std != first.std


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_by_default_sigma_is_measured_after_the_whole_training_schedule(tiny):
    model_fn, train_data, eval_data = tiny
    batches = int(train_data.cardinality())
    for config, steps in ((TrainingConfig(learning_rate=0.01, epochs=2), 2 * batches),
                          (TrainingConfig(learning_rate=0.01, steps=3), 3)):
        measured = measure_preactivation_std(model_fn, train_data, eval_data, config)
        assert measured.warmup_steps == steps
        assert measured == measure_preactivation_std(model_fn, train_data, eval_data, config,
                                                     warmup_steps=steps)
    endless = train_data.repeat()
    with pytest.raises(ValueError, match="length is unknown and `train_config.steps` is unset"):
        measure_preactivation_std(model_fn, endless, eval_data, TrainingConfig())


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_every_replica_of_a_row_gets_the_same_per_layer_beta(tiny):
    model_fn, train_data, eval_data = tiny
    std = _measure(tiny, warmup_steps=2)
    relative = relative_model_fn(model_fn, std)
    row = run_replicas(relative, lambda seed: train_data, eval_data, "smelu:1.0",
                       ["tower_init"], 2, TrainingConfig(steps=2), progress=False)
    assert row["rel_pd"] > 0  # the tower seeds differ, nothing else
    first, second = (relative("smelu:1.0", embedding_seed=0, tower_seed=s) for s in (0, 1))
    for name, sigma in std.std.items():
        assert first.get_layer(name).beta == second.get_layer(name).beta == sigma


def test_a_users_keras_model_is_measured_and_scaled_by_layer_path(tmp_path):
    spec = FeatureSpec((CategoricalFeature("user_id", 20),), 2)
    ids = keras.Input((), dtype="int64", name="user_id")
    dense = keras.Input((2,), name="dense")
    x = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Embedding(20, 3)(ids)),
                                    dense])
    x = keras.layers.Dense(8, activation="relu", name="hidden_1")(x)
    x = keras.layers.ReLU(name="hidden_2_relu")(keras.layers.Dense(4, name="hidden_2")(x))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="click")(x)
    path = tmp_path / "user.keras"
    keras.Model({"user_id": ids, "dense": dense}, outputs).save(path)
    builder = UserModelBuilder(str(path), spec)
    features = {"user_id": np.arange(20) % 20, "dense": np.ones((20, 2), np.float32)}
    data = batched_dataset(features, np.zeros(20, np.float32), 8)
    std = measure_preactivation_std(builder, data, data, warmup_steps=1)
    assert list(std.std) == list(builder.report.replaced) == ["hidden_1", "hidden_2_relu"]
    model = relative_model_fn(builder, std)("rescu:0.5:2", embedding_seed=0, tower_seed=0)
    assert model.get_layer("hidden_1_rescu").beta == pytest.approx(0.5 * std.std["hidden_1"])
    assert model.get_layer("hidden_2_relu").beta == pytest.approx(0.5 * std.std["hidden_2_relu"])


# -- mistakes -----------------------------------------------------------------


def _fixed_relu_fn(activation, embedding_seed=None, tower_seed=None):
    """Ignores `activation`: its hidden layers are always ReLUs."""
    return HAND_MODEL


def _default_smelu_fn(activation, embedding_seed=None, tower_seed=None):
    """Takes one activation per layer but puts a fixed SmeLU in one of them."""
    inputs = keras.Input((2,), name="x")
    x = activation_layer(activation, "hidden")(keras.layers.Dense(3)(inputs))
    x = activation_layer("smelu:0.1", "second_relu")(keras.layers.Dense(2)(x))
    return keras.Model(inputs, keras.layers.Dense(1)(x))


class _BandLayer(keras.layers.Layer):
    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


def test_mistakes_raise_one_clear_error():
    data = tf.data.Dataset.from_tensor_slices(X).batch(4)
    with pytest.raises(ValueError, match="does not apply the activation it is given"):
        measure_preactivation_std(_fixed_relu_fn, data, data, warmup_steps=0)
    with pytest.raises(ValueError, match=r"lacks the relative β of hidden layers \['second_relu'\]"):
        relative_model_fn(_default_smelu_fn, SMALL)("smelu:1.0")
    with pytest.raises(ValueError, match="add its class to .*LENGTH_PARAMETERS"):
        relative_model_fn(_hand_model_fn, SMALL)(_BandLayer(0.5))
    with pytest.raises(ValueError, match=r"Received: std\['hidden'\]=nan"):
        relative_model_fn(_hand_model_fn, {"hidden": float("nan")})
    with pytest.raises(ValueError, match="Received: warmup_steps=-1"):
        measure_preactivation_std(_hand_model_fn, data, data, warmup_steps=-1)
    with pytest.raises(ValueError, match="`eval_data` holds no rows"):
        measure_preactivation_std(_hand_model_fn, data, data.take(0), warmup_steps=0)


def test_a_layer_with_constant_pre_activations_has_no_relative_beta():
    dead = _hand_model()
    dead.get_layer("second").set_weights([np.zeros_like(W2), np.full_like(B2, 0.5)])

    def model_fn(activation, embedding_seed=None, tower_seed=None):
        return rebuild(dead, activation, keep_weights=True)[0]

    data = tf.data.Dataset.from_tensor_slices(X).batch(4)
    with pytest.raises(ValueError, match="'second_relu' are not finite or all equal"):
        measure_preactivation_std(model_fn, data, data, warmup_steps=0)
