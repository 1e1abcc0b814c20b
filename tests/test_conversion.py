"""Tests for `tf_smelu.convert_activations` and seeded rebuilds of any Keras model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tf_smelu
from tf_smelu import layers as smelu_layers
from tf_smelu.conversion import ConversionReport, rebuild
from tf_smelu.data.features import CategoricalFeature, FeatureSpec
from tf_smelu.models import build_model
from tf_smelu.registry import Activation

HIDDEN_RELUS = ("conv", "conv_relu_layer", "hidden", "hidden_relu_layer")
KEPT = {"gelu_dense": "gelu", "leaky": "LeakyReLU"}
TARGETS = ["smelu:0.4", "gelu", "rescu:0.3:2", Activation.parse("smelu:0.1"),
           smelu_layers.GeneralizedSmeLU(alpha=0.2, beta=0.3)]


def _relu_model() -> keras.Model:
    """ReLU as Conv1D and Dense `activation=`, `ReLU()` and `Activation("relu")`."""
    inputs = keras.Input(shape=(6, 2), name="sequence")
    x = keras.layers.Conv1D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.ReLU(name="conv_relu_layer")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(8, name="linear_dense")(x)
    x = keras.layers.Activation("relu", name="hidden_relu_layer")(x)
    x = keras.layers.Dense(8, activation="gelu", name="gelu_dense")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="click")(x)
    return keras.Model(inputs, outputs, name="relu_model")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> keras.Model:
    """The ReLU model with perturbed (trained-looking) weights, read back from a file."""
    model = _relu_model()
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    path = tmp_path_factory.mktemp("models") / "relu.keras"
    model.save(path)
    return keras.saving.load_model(path)


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(16, 6, 2)).astype("float32")


def _relu_layers(model: keras.Model) -> list[str]:
    """Names of the layers that still apply a plain ReLU."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.ReLU) or (
            getattr(layer, "activation", None) is keras.activations.relu
        ):
            names.append(layer.name)
    return names


def _predict(model: keras.Model, inputs) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(inputs))


# -- what is replaced -------------------------------------------------------


@pytest.mark.parametrize("activation", TARGETS, ids=str)
def test_every_hidden_relu_is_replaced_and_the_output_is_kept(saved_model, activation, inputs):
    converted, report = tf_smelu.convert_activations(saved_model, activation,
                                                     return_report=True)
    assert _relu_layers(saved_model) == list(HIDDEN_RELUS)
    assert _relu_layers(converted) == []
    assert report == ConversionReport(replaced=HIDDEN_RELUS, kept=KEPT, outputs=("click",))
    assert converted.get_layer("click").get_config() == saved_model.get_layer(
        "click").get_config()
    assert converted.get_layer("leaky").get_config() == saved_model.get_layer(
        "leaky").get_config()
    probabilities = _predict(converted, inputs)
    assert probabilities.shape == (16, 1) and np.all((probabilities > 0) & (probabilities < 1))


def test_an_activation_with_parameters_follows_each_dense_and_conv_layer(saved_model):
    converted = tf_smelu.convert_activations(saved_model, "smelu:0.4")
    names = [layer.name for layer in converted.layers]
    for name in ("conv", "hidden"):
        assert converted.get_layer(name).get_config()["activation"] == "linear"
        follower = converted.get_layer(f"{name}_smelu")
        assert isinstance(follower, smelu_layers.SmeLU) and follower.beta == 0.4
        assert names.index(f"{name}_smelu") == names.index(name) + 1
    for name in ("conv_relu_layer", "hidden_relu_layer"):  # replaced in place, same name
        assert isinstance(converted.get_layer(name), smelu_layers.SmeLU)


def test_an_activation_name_goes_into_the_layer(saved_model):
    converted = tf_smelu.convert_activations(saved_model, "gelu")
    assert len(converted.layers) == len(saved_model.layers)
    assert converted.get_layer("hidden").get_config()["activation"] == "gelu"


def test_converted_activations_compute_the_new_function():
    model = keras.Sequential([keras.Input((3,), name="x"),
                              keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="logit")])
    converted = tf_smelu.convert_activations(model, "smelu:0.5")
    x = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    kernel, bias = model.get_layer("hidden").get_weights()
    pre = x @ kernel + bias
    hidden = np.where(pre <= -0.5, 0.0, np.where(pre >= 0.5, pre, (pre + 0.5) ** 2 / 2.0))
    out_kernel, out_bias = model.get_layer("logit").get_weights()
    np.testing.assert_allclose(_predict(converted, x), hidden @ out_kernel + out_bias,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["smelu:0.3", "generalized_smelu:0.3"])
def test_each_new_activation_layer_is_its_own(saved_model, activation):
    converted = tf_smelu.convert_activations(saved_model, activation)
    new = [layer for layer in converted.layers if type(layer).__module__.startswith("tf_smelu")]
    assert len(new) == len(HIDDEN_RELUS) and len({id(layer) for layer in new}) == len(new)
    variables = [id(v) for layer in new for v in layer.weights]
    assert len(set(variables)) == len(variables)


# -- weights ------------------------------------------------------------------


def test_converting_to_relu_is_the_identity(saved_model, inputs):
    converted = tf_smelu.convert_activations(saved_model, "relu")
    np.testing.assert_array_equal(_predict(converted, inputs), _predict(saved_model, inputs))


@pytest.mark.parametrize("keep_weights", [True, False])
def test_keep_weights(saved_model, keep_weights):
    converted = tf_smelu.convert_activations(saved_model, "smelu:0.4", keep_weights=keep_weights)
    for layer in saved_model.layers:
        if not layer.weights:
            continue
        kernel = converted.get_layer(layer.name).get_weights()[0]
        assert np.array_equal(kernel, layer.get_weights()[0]) == keep_weights, layer.name


def test_the_original_model_is_left_unchanged(saved_model, inputs):
    before_config = saved_model.get_config()
    before_weights = [w.copy() for w in saved_model.get_weights()]
    before = _predict(saved_model, inputs)
    converted = tf_smelu.convert_activations(saved_model, "smelu:0.4")
    converted.set_weights([w * 0 for w in converted.get_weights()])  # must not reach the original
    assert saved_model.get_config() == before_config
    for old, new in zip(before_weights, saved_model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(_predict(saved_model, inputs), before)
    assert not {id(layer) for layer in converted.layers} & {id(layer) for layer in
                                                           saved_model.layers}


def test_converted_model_round_trips_through_a_keras_file(saved_model, inputs, tmp_path):
    converted = tf_smelu.convert_activations(saved_model, "generalized_smelu:0.3")
    converted.save(tmp_path / "smelu.keras")
    loaded = keras.saving.load_model(tmp_path / "smelu.keras")
    np.testing.assert_array_equal(_predict(loaded, inputs), _predict(converted, inputs))


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_converted_model_fine_tunes(saved_model, inputs):
    converted = tf_smelu.convert_activations(saved_model, "smelu:0.4")
    converted.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    labels = (inputs[:, 0, 0] > 0).astype("float32")
    before = converted.evaluate(inputs, labels, verbose=0)
    converted.fit(inputs, labels, epochs=20, verbose=0)
    assert converted.evaluate(inputs, labels, verbose=0) < before


# -- model kinds ----------------------------------------------------------------


def test_sequential_model():
    model = keras.Sequential([
        keras.Input((3,), name="features"),
        keras.layers.Dense(4, activation="relu", name="first"),
        keras.layers.ReLU(name="second"),
        keras.layers.Dense(1, activation="relu", name="last"),  # the output keeps its ReLU
    ], name="stack")
    converted, report = tf_smelu.convert_activations(model, "smelu:0.2", return_report=True)
    assert isinstance(converted, keras.Sequential) and converted.name == "stack"
    assert report.replaced == ("first", "second") and report.outputs == ("last",)
    assert [layer.name for layer in converted.layers] == ["first", "first_smelu", "second",
                                                          "last"]
    assert converted.inputs[0].name == "features"
    np.testing.assert_array_equal(converted.get_layer("first").get_weights()[0],
                                  model.get_layer("first").get_weights()[0])


def test_nested_models_are_converted_and_only_the_final_output_is_kept():
    tower = keras.Sequential([keras.layers.Dense(4, activation="relu", name="t1"),
                              keras.layers.Dense(3, activation="relu", name="t2")], name="tower")
    head = keras.Sequential([keras.layers.Dense(2, activation="relu", name="h1"),
                             keras.layers.Dense(1, activation="relu", name="h2")], name="head")
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, head(tower(inputs)))
    converted, report = tf_smelu.convert_activations(model, "gelu", return_report=True)
    # tower's last layer is hidden in the whole model; head's last layer is the output.
    assert report.replaced == ("tower/t1", "tower/t2", "head/h1")
    assert report.outputs == ("head/h2",)
    x = np.ones((2, 5), "float32")
    np.testing.assert_array_equal(_predict(tf_smelu.convert_activations(model, "relu"), x),
                                  _predict(model, x))
    assert converted.get_layer("head").get_layer("h2").activation is keras.activations.relu


SPEC = FeatureSpec((CategoricalFeature("user_id", 30), CategoricalFeature("item_id", 20)), 3)
RANKER_BATCH = {"user_id": np.array([0, 29]), "item_id": np.array([3, 19]),
                "dense": np.ones((2, 3), "float32")}


@pytest.mark.parametrize("name", ["mlp", "dcn"])
def test_rankers_convert_through_their_config(name):
    towers = {"mlp": {"hidden_units": (8, 4)}, "dcn": {"bottom_units": (4,), "top_units": (8,)}}
    model = build_model(name, SPEC, "relu", embedding_seed=1, tower_seed=2, **towers[name])
    same = tf_smelu.convert_activations(model, "relu")
    np.testing.assert_array_equal(_predict(same, RANKER_BATCH), _predict(model, RANKER_BATCH))
    converted, report = tf_smelu.convert_activations(model, "generalized_smelu:0.3",
                                                     return_report=True)
    assert report.replaced == (model.name,) and type(converted) is type(model)
    assert isinstance(converted.get_config()["activation"], dict)
    paths = {w.path.split("/", 1)[1]: w for w in converted.weights}
    for weight in model.weights:  # carried over; the activation parameters are new
        np.testing.assert_array_equal(paths.pop(weight.path.split("/", 1)[1]), weight)
    assert paths and all("activation" in path for path in paths)
    assert model.get_config()["activation"] == "relu"


def test_rankers_with_another_hidden_activation_are_left_alone():
    model = build_model("mlp", SPEC, "gelu", hidden_units=(4,))
    with pytest.warns(UserWarning, match="no hidden ReLU"):
        converted, report = tf_smelu.convert_activations(model, "smelu", return_report=True)
    assert report.replaced == () and report.kept == {model.name: "gelu"}
    assert converted.get_config()["activation"] == "gelu"


class _PlainSubclass(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, activation="relu")

    def call(self, x):
        return self.hidden(x)


def test_arbitrary_subclassed_models_raise():
    with pytest.raises(ValueError, match="Cannot rebuild the subclassed model .*hidden_activation_key"):
        tf_smelu.convert_activations(_PlainSubclass(), "smelu")


def test_a_relu_inside_a_layer_that_cannot_be_split():
    inputs = keras.Input((4, 2), name="x")
    hidden = keras.layers.SimpleRNN(3, activation="relu", name="rnn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="logit")(hidden))
    with pytest.raises(ValueError, match="inside layer 'rnn' .*activation name without"):
        tf_smelu.convert_activations(model, "smelu:0.2")
    converted = tf_smelu.convert_activations(model, "smelu")  # a name goes inside
    assert converted.get_layer("rnn").activation is keras.activations.get("smelu")


def test_no_relu_warns_and_bad_arguments_raise():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(1)])
    with pytest.warns(UserWarning, match="Found no hidden ReLU"):
        tf_smelu.convert_activations(model, "smelu")
    with pytest.raises(ValueError, match="Received: model="):
        tf_smelu.convert_activations("model.keras", "smelu")
    with pytest.raises(ValueError, match="Unknown activation"):
        tf_smelu.convert_activations(model, "smeloo:0.2")


# -- one activation per hidden layer --------------------------------------------

PER_LAYER = {"conv": "smelu:0.1", "conv_relu_layer": "rescu:0.2:3", "hidden": "gelu",
             "hidden_relu_layer": smelu_layers.GeneralizedSmeLU(alpha=0.1, beta=0.4)}


def test_each_hidden_relu_takes_the_activation_of_its_path(saved_model, inputs, tmp_path):
    converted, report = tf_smelu.convert_activations(saved_model, PER_LAYER,
                                                     return_report=True)
    assert report.replaced == HIDDEN_RELUS and report.kept == KEPT
    assert converted.get_layer("conv_smelu").beta == 0.1
    assert converted.get_layer("conv_relu_layer").order == 3
    assert converted.get_layer("hidden").activation is keras.activations.gelu
    assert converted.get_layer("hidden_relu_layer").get_config()["alpha"] == 0.1
    assert PER_LAYER["hidden_relu_layer"] not in converted.layers  # cloned, not shared
    converted.save(tmp_path / "per_layer.keras")
    loaded = keras.saving.load_model(tmp_path / "per_layer.keras")
    np.testing.assert_array_equal(_predict(loaded, inputs), _predict(converted, inputs))


def test_nested_and_subclassed_models_take_per_layer_activations_by_path():
    tower = keras.Sequential([keras.layers.Dense(4, activation="relu", name="t1")], name="tower")
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(tower(inputs)))
    converted, report = rebuild(model, {"tower/t1": "smelu:0.3"})
    assert report.replaced == ("tower/t1",)
    assert converted.get_layer("tower").get_layer("t1_smelu").beta == 0.3

    ranker = build_model("dcn", SPEC, "relu", bottom_units=(4,), top_units=(8,))
    activations = {"bottom_activation_0": "relu", "top_activation_0": "smelu:0.2"}
    converted, report = rebuild(ranker, activations, keep_weights=True)
    assert report.replaced == tuple(activations)
    assert converted.get_layer("top_activation_0").beta == 0.2
    np.testing.assert_array_equal(converted.get_layer("top_dense_0").kernel,
                                  ranker.get_layer("top_dense_0").kernel)
    # A ranker with per-layer activations converts layer by layer too.
    converted, report = rebuild(converted, "gelu")
    assert report.replaced == ("bottom_activation_0",)
    assert report.kept == {"top_activation_0": "SmeLU"}
    assert converted.get_layer("bottom_activation_0").activation is keras.activations.gelu


@pytest.mark.parametrize(
    "activation, message",
    [({"conv": "gelu"}, "no activation for hidden layer 'conv_relu_layer'"),
     ({**PER_LAYER, "leaky": "gelu", "nowhere": "gelu"},
      r"apply no hidden ReLU: \['leaky', 'nowhere'\]")],
)
def test_per_layer_activations_must_name_exactly_the_hidden_relus(saved_model, activation,
                                                                  message):
    with pytest.raises(ValueError, match=message):
        rebuild(saved_model, activation)


def test_subclassed_models_without_hidden_layer_names_take_no_per_layer_activations():
    class Named(_PlainSubclass):
        hidden_activation_key = "activation"

        def get_config(self):
            return {"activation": "relu"}

    with pytest.raises(ValueError, match="has no `hidden_activation_names`"):
        rebuild(Named(), {"hidden": "gelu"})


# -- seeded rebuilds ------------------------------------------------------------


def _embedding_model() -> keras.Model:
    ids = keras.Input(shape=(), dtype="int64", name="user_id")
    dense = keras.Input(shape=(3,), name="dense")
    embedded = keras.layers.Embedding(30, 4, name="user_embedding")(ids)
    x = keras.layers.Concatenate(name="concat")([embedded, dense])
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    return keras.Model({"user_id": ids, "dense": dense}, keras.layers.Dense(1, name="logit")(x))


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def test_same_seeds_rebuild_identical_weights_and_dropout():
    first, _ = rebuild(_embedding_model(), "smelu:0.2", seeds=(1, 2))
    second, _ = rebuild(_embedding_model(), "smelu:0.2", seeds=(1, 2))
    for (path, value), other in zip(_weights(first).items(), _weights(second).values(),
                                    strict=True):
        np.testing.assert_array_equal(value, other, err_msg=path)
    assert first.get_layer("dropout").seed == second.get_layer("dropout").seed is not None


@pytest.mark.parametrize("varied", [0, 1], ids=["embedding_seed", "tower_seed"])
def test_each_seed_controls_only_its_part(varied):
    model = _embedding_model()
    base = _weights(rebuild(model, seeds=(1, 2))[0])
    seeds = [1, 2]
    seeds[varied] = 99
    other = _weights(rebuild(model, seeds=tuple(seeds))[0])
    for path in base:
        changed = path.startswith("user_embedding") == (varied == 0)
        if changed and not path.endswith("bias"):  # biases start at zero
            assert not np.array_equal(base[path], other[path]), path
        else:
            np.testing.assert_array_equal(base[path], other[path], err_msg=path)


def test_logit_output_removes_only_a_sigmoid(saved_model, inputs):
    logits, report = rebuild(saved_model, keep_weights=True, logit_output=True)
    assert report.sigmoid_removed == ("click",)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits(inputs))),
                               _predict(saved_model, inputs), rtol=1e-6)


def test_private_keras_names_still_exist(saved_model):
    """`conversion` relies on keras.src's Functional and on `_keras_history`."""
    from keras.src.models.functional import Functional

    assert isinstance(saved_model, Functional)
    assert saved_model.outputs[0]._keras_history.operation.name == "click"


@pytest.mark.parametrize("target", ["smelu", "smelu:0.4"])
def test_keras_ops_in_a_functional_graph_are_kept(tmp_path, target):
    # Slicing and keras.ops calls are operations, not layers: no config, no weights.
    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
    squared = keras.ops.square(hidden[:, :4])
    outputs = keras.layers.Dense(1, name="click")(squared)
    model = keras.Model(inputs, outputs)
    converted, report = tf_smelu.convert_activations(model, target, return_report=True)
    assert report.replaced == ("hidden",) and report.outputs == ("click",)

    x = np.random.default_rng(0).random((5, 8)).astype("float32")
    kernel, bias = model.get_layer("hidden").get_weights()
    smelu = Activation.parse(target).to_keras()
    smelu = smelu if callable(smelu) else keras.activations.get(smelu)
    expected = model.get_layer("click")(keras.ops.square(smelu(x @ kernel + bias)[:, :4]))
    np.testing.assert_allclose(converted(x), expected, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(x), converted(x), rtol=1e-6)
