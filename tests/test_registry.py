"""Activation strings in Keras 3 and tf-keras, and fresh-process loading."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------
# The activation table and the `Activation` spec.
# --------------------------------------------------------------------------


def test_parse_activation_specs():
    Activation = registry.Activation
    assert Activation.parse("smelu:0.1") == Activation("smelu", 0.1)
    assert Activation.parse("rescu:0.2:3").order == 3
    assert Activation.parse("rescu:0.2").order == 2
    assert Activation.parse("smelu").beta == 1.0
    assert Activation.parse("relu").beta is None and Activation.parse("relu").label == "relu"
    assert Activation.parse("rescu:0.2:3").label == "rescu(β=0.2, n=3)"
    for text in ("relu", "smelu:0.25", "rescu:0.3:4", "generalized_smelu:0.5"):
        assert registry.Activation.parse(str(registry.Activation.parse(text))) == (
            registry.Activation.parse(text))
    for bad in ("relu:0.1", "smelu:-1", "smelu:x", "smelu:inf", "tanhh", "rescu:1:0",
                "rescu:1:2.5", "smelu:0.1:2"):
        with pytest.raises(ValueError):
            Activation.parse(bad)


def test_every_entry_builds_what_it_says():
    for name, entry in registry.ACTIVATIONS.items():
        built = registry.Activation(name).to_keras()
        if entry.build_layer is None:
            assert built == name and keras.activations.get(name) is not None
        else:
            assert isinstance(built, keras.layers.Layer)
            assert np.all(np.isfinite(built(np.linspace(-2, 2, 5).astype("float32"))))


@pytest.fixture
def new_activation():
    """A new table entry (as a user would add one), removed after the test."""
    entry = registry.register_activation(registry.ActivationEntry(
        "wide_smelu", build_layer=lambda spec: tf_smelu.layers.SmeLU(beta=2 * spec.beta),
        parameters=("beta",),
    ))
    yield entry
    registry.unregister_activation(entry.name)


def test_a_new_entry_shows_up_everywhere(new_activation):
    """Help text, flag validation, models and the report all read the table."""
    from absl import flags

    from tf_smelu import cli, experiment
    from tf_smelu.data import CategoricalFeature, FeatureSpec
    from tf_smelu.models import build_model
    from tf_smelu.training.distributed import define_flags as define_worker_flags

    main_job, worker = flags.FlagValues(), flags.FlagValues()
    cli.define_experiment_flags(experiment.CTRExperimentConfig(), "out", "quick",
                                flag_values=main_job)
    define_worker_flags(worker)
    assert "wide_smelu[:beta]" in main_job["activations"].help
    assert "wide_smelu[:beta]" in worker["activation"].help
    main_job(["prog", "--activations=relu,wide_smelu:0.3"])  # validates
    worker(["prog", "--activation=wide_smelu:0.3"])
    config = experiment.CTRExperimentConfig.from_dict({"activations": ["wide_smelu:0.3"]})
    assert config.activations == (registry.Activation("wide_smelu", 0.3),)

    spec = FeatureSpec((CategoricalFeature("item", 5),), num_dense=1)
    model = build_model("mlp", spec, "wide_smelu:0.3", hidden_units=[4])
    assert model.get_config()["activation"]["config"]["beta"] == pytest.approx(0.6)

    probabilities = np.array([[0.2, 0.7, 0.4, 0.9], [0.25, 0.6, 0.4, 0.8]])
    row = experiment.summarize_predictions(
        registry.Activation.parse("wide_smelu:0.3"), ["tower_init"], probabilities,
        np.array([0.0, 1.0, 0.0, 1.0]))
    assert (row["activation"], row["beta"], row["label"]) == ("wide_smelu", 0.3,
                                                               "wide_smelu(β=0.3)")
    assert "wide_smelu(β=0.3)" in experiment.format_table([{**row, "train_seconds": 1.0}])


def test_an_unregistered_name_is_refused_everywhere():
    from absl import flags

    from tf_smelu import cli, experiment

    with pytest.raises(ValueError, match="Unknown activation"):
        registry.Activation.parse("wide_smelu:0.3")
    main_job = flags.FlagValues()
    cli.define_experiment_flags(experiment.CTRExperimentConfig(), "out", "quick",
                                flag_values=main_job)
    with pytest.raises(flags.IllegalFlagValueError, match="wide_smelu"):
        main_job(["prog", "--activations=relu,wide_smelu:0.3"])


@pytest.mark.parametrize("spec", ["smelu:1e300", "rescu:1e-320:3", "generalized_smelu:1e-45",
                                  "smelu:1e38"])
def test_a_beta_float32_cannot_compute_is_refused_when_parsed(spec):
    # The main job trains in Keras' float type; it must stop before training.
    with pytest.raises(ValueError, match="to be computed in float32. Received: ") as raised:
        registry.Activation.parse(spec)
    assert spec.split(":")[0] in str(raised.value) and "\n" not in str(raised.value)


def test_a_beta_in_range_parses():
    assert registry.Activation.parse("smelu:1e20").beta == 1e20
    assert registry.Activation.parse("rescu:1e-30:8").order == 8
