"""Tests for the CTR ranking models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_smelu import layers as smelu_layers
from tf_smelu.data.synthetic import SyntheticCTRConfig, generate_examples, make_dataset
from tf_smelu.models import (
    CrossLayer,
    DCNRanker,
    MLPRanker,
    build_model,
    derive_seed,
)
from tf_smelu.registry import Activation

CONFIG = SyntheticCTRConfig(
    num_examples=4_096,
    num_eval_examples=1_024,
    vocab_sizes={"user_id": 60, "item_id": 40, "device": 4},
    num_dense=3,
    chunk_size=1_024,
    seed=3,
)
SPEC = CONFIG.feature_spec()
MODEL_NAMES = ("dcn", "mlp")
# Small towers keep the tests fast; the defaults are exercised separately.
SMALL_TOWERS = {
    "dcn": {"bottom_units": (8,), "top_units": (16, 8)},
    "mlp": {"hidden_units": (16, 8)},
}
STANDARD_ACTIVATIONS = ("relu", "gelu", "swish", "softplus")
SMOOTH_ACTIVATIONS = ("smelu", "generalized_smelu", "rescu")


def _small_model(name: str, activation="relu", **kwargs) -> keras.Model:
    return build_model(name, SPEC, activation, **{**SMALL_TOWERS[name], **kwargs})


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    return generate_examples(CONFIG, "test", num_examples=64).features


def _weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    """Weights keyed by path inside the model (model names get uniquified)."""
    prefix = f"{model.name}/"
    return {
        weight.path.removeprefix(prefix): np.asarray(weight) for weight in model.weights
    }


def _is_embedding(path: str) -> bool:
    return path.startswith("embedding_")


def _loss(model: keras.Model, examples) -> float:
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    return float(loss(examples.labels, model(examples.features)))


# -- forward pass -----------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_outputs_one_logit_per_example(name, batch):
    model = _small_model(name)
    logits = model(batch)
    assert logits.shape == (64, 1) and logits.dtype == "float32"
    assert np.all(np.isfinite(logits))
    # Ids shaped [batch, 1] and extra keys are accepted.
    column_ids = {
        key: (value[:, None] if value.ndim == 1 else value)
        for key, value in batch.items()
    }
    column_ids["true_logit"] = np.zeros(64, np.float32)
    np.testing.assert_array_equal(model(column_ids), logits)


def test_default_architectures():
    dcn = DCNRanker(SPEC)
    assert (dcn.bottom_units, dcn.num_cross_layers, dcn.top_units) == (
        (32, 16),
        2,
        (256, 128, 64),
    )
    assert dcn.embedding_dim == 8
    cross_width = len(SPEC.categorical) * 8 + 16
    assert [tuple(layer.kernel.shape) for layer in dcn.cross_layers] == [
        (cross_width, cross_width)
    ] * 2
    mlp = MLPRanker(SPEC)
    assert mlp.hidden_units == (256, 128, 64)
    assert tuple(mlp.hidden_layers[0].kernel.shape) == (
        len(SPEC.categorical) * 8 + 3,
        256,
    )


def test_cross_layer_formula():
    layer = CrossLayer(bias_initializer="ones")
    x0 = np.array([[1.0, 2.0]], np.float32)
    x = np.array([[0.5, -1.0]], np.float32)
    out = layer(x0, x)
    expected = x0 * (x @ np.asarray(layer.kernel) + 1.0) + x
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def _smooth_activation_available(activation: str) -> bool:
    try:
        keras.activations.get(activation)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("activation", STANDARD_ACTIVATIONS + SMOOTH_ACTIVATIONS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_activation_string_works(name, activation, batch):
    if activation in SMOOTH_ACTIVATIONS and not _smooth_activation_available(
        activation
    ):
        # Visible in the report; importing tf_smelu is what registers them.
        pytest.skip(f"{activation!r} is not registered with Keras")
    model = _small_model(name, activation)
    assert np.all(np.isfinite(model(batch)))
    activation_layers = [
        layer for layer in model._flatten_layers() if "_activation_" in layer.name
    ]
    expected = keras.activations.get(activation)
    assert activation_layers and all(
        layer.activation is expected for layer in activation_layers
    )


def test_callable_activation(batch):
    model = _small_model("mlp", tf.nn.relu)
    reference = _small_model("mlp", "relu")
    model.set_weights(reference.get_weights())
    np.testing.assert_allclose(model(batch), reference(batch), rtol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_activation_layer_instance_is_cloned_per_hidden_layer(name, batch):
    template = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    model = _small_model(name, template)
    model(batch)
    clones = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.PReLU)
    ]
    num_hidden = sum(len(units) for units in SMALL_TOWERS[name].values())
    assert len(clones) == num_hidden
    assert len({id(layer) for layer in clones}) == num_hidden and template not in clones
    assert not template.built
    alphas = [layer.alpha for layer in clones]
    assert len({id(alpha) for alpha in alphas}) == num_hidden
    for alpha in alphas:
        np.testing.assert_array_equal(alpha, 0.25)


# -- seeding ----------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seeds_give_bit_identical_weights(name):
    first = _weights_by_path(_small_model(name, embedding_seed=1, tower_seed=2))
    second = _weights_by_path(_small_model(name, embedding_seed=1, tower_seed=2))
    assert first.keys() == second.keys()
    for path in first:
        np.testing.assert_array_equal(first[path], second[path], err_msg=path)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("varied", ["tower_seed", "embedding_seed"])
def test_each_seed_controls_only_its_part(name, varied):
    base = {"embedding_seed": 1, "tower_seed": 2}
    first = _weights_by_path(_small_model(name, **base))
    second = _weights_by_path(_small_model(name, **{**base, varied: 99}))
    for path in first:
        changed_part = _is_embedding(path) == (varied == "embedding_seed")
        if changed_part and not path.endswith("/bias"):  # biases start at zero
            assert not np.array_equal(first[path], second[path]), path
        else:
            np.testing.assert_array_equal(first[path], second[path], err_msg=path)


def test_layers_get_distinct_seeds():
    weights = _weights_by_path(_small_model("dcn", embedding_seed=0, tower_seed=0))
    user = weights["embedding_user_id/embeddings"]
    item = weights["embedding_item_id/embeddings"]
    assert not np.array_equal(user[:4], item[:4])
    assert derive_seed(0, "cross_0") != derive_seed(0, "cross_1")
    assert derive_seed(None, "cross_0") is None


def test_unseeded_models_differ():
    first = _weights_by_path(_small_model("mlp"))
    second = _weights_by_path(_small_model("mlp"))
    assert not np.array_equal(
        first["hidden_dense_0/kernel"], second["hidden_dense_0/kernel"]
    )


# -- training and serialization ---------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_few_training_steps_lower_the_loss(name):
    model = _small_model(name, "gelu", embedding_seed=0, tower_seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    held_out = generate_examples(CONFIG, "train", num_examples=1_024)
    before = _loss(model, held_out)
    model.fit(make_dataset(CONFIG, batch_size=128), epochs=1, shuffle=False, verbose=0)
    assert _loss(model, held_out) < before - 0.02


@pytest.mark.parametrize(
    "name, activation",
    [("dcn", "swish"), ("mlp", keras.layers.PReLU())],
)
def test_keras_file_round_trip(name, activation, batch, tmp_path):
    model = _small_model(name, activation, embedding_seed=4, tower_seed=5)
    # Perturb every weight so that loading cannot pass by re-initialising.
    rng = np.random.default_rng(0)
    model.set_weights(
        [w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(batch), model(batch))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_round_trip_rebuilds_identical_model(name):
    model = _small_model(
        name, "softplus", embedding_seed=6, tower_seed=7, embedding_dim=4
    )
    clone = model.__class__.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    for (path, value), other in zip(
        _weights_by_path(model).items(), clone.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(value, other, err_msg=path)


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("dcn", {"top_units": (8, 0)}, "Received: top_units="),
        ("dcn", {"num_cross_layers": -1}, "Received: num_cross_layers=-1"),
        ("mlp", {"hidden_units": ()}, "Received: hidden_units="),
        ("mlp", {"embedding_dim": 0}, "Received: embedding_dim=0"),
        ("mlp", {"tower_seed": -1}, "Received: tower_seed=-1"),
        ("dcn", {"embedding_seed": "1"}, "Received: embedding_seed='1'"),
    ],
)
def test_bad_arguments_raise(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, SPEC, **kwargs)


def test_unknown_model_name_and_spec_raise():
    with pytest.raises(ValueError, match="Received: name='transformer'"):
        build_model("transformer", SPEC)
    with pytest.raises(ValueError, match="Received: feature_spec="):
        build_model("dcn", ["user_id"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hidden_activation_key_names_the_activation_entry_of_the_config(name):
    """`tf_smelu.convert_activations` rebuilds the rankers through this entry."""
    model = _small_model(name, "gelu")
    assert model.get_config()[type(model).hidden_activation_key] == "gelu"


def test_spec_config_dict_is_accepted(batch):
    model = build_model("mlp", SPEC.get_config(), hidden_units=(4,))
    assert model.feature_spec == SPEC
    assert model(batch).shape == (64, 1)


# -- one activation per hidden layer ----------------------------------------

PER_LAYER = {
    "mlp": {"hidden_activation_0": "smelu:0.05", "hidden_activation_1": "rescu:0.2:3"},
    "dcn": {"bottom_activation_0": "gelu", "top_activation_0": "smelu:0.05",
            "top_activation_1": smelu_layers.GeneralizedSmeLU(alpha=0.1, beta=0.3)},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_hidden_layer_takes_its_own_activation(name, batch):
    model = _small_model(name, PER_LAYER[name])
    assert model.hidden_activation_names == tuple(PER_LAYER[name])
    for layer_name, activation in PER_LAYER[name].items():
        layer = model.get_layer(layer_name)
        if activation == "gelu":
            assert layer.activation is keras.activations.gelu
            continue
        expected = (Activation.parse(activation).to_keras() if isinstance(activation, str)
                    else activation)
        assert type(layer) is type(expected) and layer is not expected
        assert {k: v for k, v in layer.get_config().items() if k != "name"} == {
            k: v for k, v in expected.get_config().items() if k != "name"}
    assert np.all(np.isfinite(model(batch)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_per_layer_activations_survive_a_keras_file(name, batch, tmp_path):
    model = _small_model(name, PER_LAYER[name], embedding_seed=1, tower_seed=2)
    config = model.get_config()
    assert set(config["activation"]) == set(PER_LAYER[name])
    assert type(model).from_config(config).get_config() == config
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == config
    assert loaded.hidden_activation_names == model.hidden_activation_names
    np.testing.assert_array_equal(loaded(batch), model(batch))


@pytest.mark.parametrize(
    "activation, message",
    [({"hidden_activation_0": "relu"}, "no activation for hidden layer 'hidden_activation_1'"),
     ({"hidden_activation_0": "relu", "hidden_activation_1": "relu", "hidden_2": "relu"},
      r"names layers this model does not have: \['hidden_2'\]")],
)
def test_per_layer_activations_must_name_exactly_the_hidden_layers(activation, message):
    with pytest.raises(ValueError, match=message):
        _small_model("mlp", activation)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_activation_for_all_keeps_its_single_config_entry(name):
    model = _small_model(name, "smelu:0.2")
    assert model.get_config()["activation"]["class_name"] == "SmeLU"
    assert len(model.hidden_activation_names) == sum(map(len, SMALL_TOWERS[name].values()))
