"""Your own Keras model in the replica tools: `--model=PATH.keras` or `module:function`."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from absl import flags

from tf_smelu import layers as smelu_layers
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment import run_replicas
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.problem import (
    UserModelBuilder,
    UserModelError,
    load_training_data,
    model_builder,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TrainingConfig(train_examples=512, eval_examples=256, max_vocab_size=40, batch_size=128)

# The models under test, importable as `user_models:<function>` (the module
# is written to a temporary directory on sys.path).
USER_MODELS = textwrap.dedent('''
    import keras
    from tf_smelu.conversion import activation_layer, derive_seed, seeded_initializer


    def functional(feature_spec, activation="relu", seeds=None, names=None, id_dtype="int64",
                   output_units=1, output_activation="sigmoid", dense=True, as_list=False):
        """ReLU in Dense `activation=`, a ReLU() layer; a sigmoid click output.

        `dense=False` leaves the dense features out; `as_list` takes a list of inputs.
        """
        embedding_seed, tower_seed = seeds or (None, None)
        names = names or feature_spec.categorical_names
        inputs = {name: keras.Input(shape=(), dtype=id_dtype, name=name) for name in names}
        if dense:
            inputs["dense"] = keras.Input(shape=(feature_spec.num_dense,), name="dense")
        embedded = [
            keras.layers.Embedding(
                feature.vocab_size, 4, name=f"embedding_{feature.name}",
                embeddings_initializer=seeded_initializer(
                    "uniform", derive_seed(embedding_seed, feature.name)))(inputs[name])
            for name, feature in zip(names, feature_spec.categorical)
        ]
        x = keras.layers.Concatenate(name="concat")(
            [*embedded, *([inputs["dense"]] if dense else [])])
        kernel = lambda role: seeded_initializer("glorot_uniform", derive_seed(tower_seed, role))
        if activation == "relu":
            x = keras.layers.Dense(16, activation="relu", kernel_initializer=kernel("h1"),
                                   name="hidden_1")(x)
            x = keras.layers.Dense(8, kernel_initializer=kernel("h2"), name="hidden_2")(x)
            x = keras.layers.ReLU(name="hidden_2_relu")(x)
        else:
            x = keras.layers.Dense(16, kernel_initializer=kernel("h1"), name="hidden_1")(x)
            x = activation_layer(activation, "hidden_1_activation")(x)
            x = keras.layers.Dense(8, kernel_initializer=kernel("h2"), name="hidden_2")(x)
            x = activation_layer(activation, "hidden_2_activation")(x)
        outputs = keras.layers.Dense(output_units, activation=output_activation,
                                     kernel_initializer=kernel("click"), name="click")(x)
        return keras.Model(list(inputs.values()) if as_list else inputs, outputs,
                           name="user_model")


    def template(feature_spec):
        return functional(feature_spec)


    def ids_only(feature_spec):
        return functional(feature_spec, dense=False)


    def first_ids_as_list(feature_spec, activation, embedding_seed, tower_seed):
        return functional(feature_spec, activation, (embedding_seed, tower_seed),
                          names=feature_spec.categorical_names[:2], dense=False,
                          as_list=True, output_activation=None)


    def replica(feature_spec, activation, embedding_seed, tower_seed):
        return functional(feature_spec, activation, (embedding_seed, tower_seed),
                          output_activation=None)


    def ignores_seeds(feature_spec, activation, embedding_seed, tower_seed):
        return functional(feature_spec, activation, (0, 0), output_activation=None)


    def half_signature(feature_spec, activation):
        return functional(feature_spec, activation)
''')


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("user_models")
    (directory / "user_models.py").write_text(USER_MODELS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(directory))
        patch.delitem(sys.modules, "user_models", raising=False)
        yield importlib.import_module("user_models")


@pytest.fixture(scope="module")
def data():
    return load_training_data(TINY)


@pytest.fixture
def save(tmp_path, user_models, data):
    """`save(**options)`: writes `functional(spec, **options)` to a .keras file."""

    def write(name="model", spec=None, **options):
        path = str(tmp_path / f"{name}.keras")
        user_models.functional(spec or data.feature_spec, **options).save(path)
        return path

    return write


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


# -- the model field and flag -------------------------------------------------


def test_model_field_takes_files_and_functions(save):
    path = save()
    assert TrainingConfig(model=path).model == path
    assert TrainingConfig(model="user_models:template").model == "user_models:template"
    assert TrainingConfig(model="dcn").model == "dcn"


@pytest.mark.parametrize("model, message", [
    ("rnn", "`model` must be one of"),
    ("/nowhere/model.keras", "`model` file not found"),
    ("user models:build", "Received: model='user models:build'"),
    ("user_models:", "package.module:function"),
])
def test_bad_model_values_fail_in_the_config_and_the_flag(model, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(model=model)
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainingConfig, flag_values=flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="model"):
        flag_values(["program", f"--model={model}"])


# -- a saved model --------------------------------------------------------------


def test_saved_model_builds_seeded_converted_replicas(save, data):
    builder = model_builder(dataclasses.replace(TINY, model=save()), data.feature_spec)
    assert isinstance(builder, UserModelBuilder)
    assert builder.report.replaced == ("hidden_1", "hidden_2_relu")
    assert builder.report.outputs == ("click",) and builder.report.sigmoid_removed == ("click",)
    replica = builder(smelu_layers.SmeLU(beta=0.2), embedding_seed=1, tower_seed=2)
    kinds = [type(layer).__name__ for layer in replica.layers]
    assert kinds.count("SmeLU") == 2 and replica.get_layer("click").get_config()[
        "activation"] == "linear"
    features = {k: v[:5] for k, v in data.test.features.items()}
    assert replica(features).shape == (5, 1)


def test_same_seeds_give_identical_replicas_and_each_seed_its_part(save, data):
    builder = UserModelBuilder(save(), data.feature_spec)
    base = _weights(builder("relu", embedding_seed=1, tower_seed=2))
    same = _weights(builder("relu", embedding_seed=1, tower_seed=2))
    new_embeddings = _weights(builder("relu", embedding_seed=3, tower_seed=2))
    new_tower = _weights(builder("relu", embedding_seed=1, tower_seed=3))
    for path, value in base.items():
        np.testing.assert_array_equal(value, same[path], err_msg=path)
        is_embedding = path.startswith("embedding_")
        assert np.array_equal(value, new_embeddings[path]) != is_embedding, path
        if not path.endswith("bias"):  # biases start at zero
            assert np.array_equal(value, new_tower[path]) == is_embedding, path


def test_inputs_that_do_not_match_the_data_list_both_sides(save, data):
    spec = data.feature_spec
    path = save(names=("user", *spec.categorical_names[1:]))
    with pytest.raises(UserModelError) as error:
        UserModelBuilder(path, spec)
    message = str(error.value)
    assert "Model inputs: ['category', 'dense', 'device'" in message
    assert f"data features: {[*spec.categorical_names, 'dense']}" in message
    assert "missing from the data: ['user']" in message
    assert "not taken by the model: ['user_id']" in message


@pytest.fixture(scope="module")
def ids_only_data(tmp_path_factory):
    """A CSV of id columns only (one named with a space): the dense feature is a constant."""
    path = tmp_path_factory.mktemp("ids") / "ids.csv"
    path.write_text("user name,item,click\n" + "".join(
        f"u{i % 11},i{(i * 3) % 7},{int(i % 3 == 0)}\n" for i in range(300)), encoding="utf-8")
    return load_training_data(TrainingConfig(dataset=f"csv:{path}", label_column="click"))


def _inner_model(replica: keras.Model) -> keras.Model:
    (inner,) = [layer for layer in replica.layers if isinstance(layer, keras.Model)]
    return inner


@pytest.mark.parametrize("source", ["file", "function"])
def test_a_model_of_the_id_columns_only_is_used_on_data_without_numbers(
        source, save, ids_only_data, caplog):
    spec = ids_only_data.feature_spec
    assert spec.categorical_names == ("user_name", "item")
    model = save(spec=spec, dense=False) if source == "file" else "user_models:ids_only"
    with caplog.at_level("WARNING"):
        builder = UserModelBuilder(model, spec)
    assert builder.ignored_features == ("dense",)
    assert [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()] == [
        f"Your model {model} takes 2 of the data's 3 features; it ignores dense."]
    replica = builder("relu", embedding_seed=1, tower_seed=2)
    features = {k: v[:50] for k, v in ids_only_data.test.features.items()}
    inner = _inner_model(replica)
    expected = inner({name: features[name] for name in ("user_name", "item")})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(replica(features)),
                                  keras.ops.convert_to_numpy(expected))


def test_a_model_of_some_features_gets_exactly_its_inputs(user_models, data, caplog):
    """A list of inputs, two of the six id fields, no dense: the rest is never fed to it."""
    spec = data.feature_spec
    with caplog.at_level("WARNING"):
        builder = UserModelBuilder("user_models:first_ids_as_list", spec)
    assert builder.ignored_features == (*spec.categorical_names[2:], "dense")
    assert "takes 2 of the data's 7 features; it ignores category, device" in caplog.text
    replica = builder(smelu_layers.SmeLU(beta=0.3), embedding_seed=1, tower_seed=2)
    features = {k: v[:20] for k, v in data.test.features.items()}
    names = spec.categorical_names[:2]
    expected = _inner_model(replica)([features[name] for name in names])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(replica(features)),
                                  keras.ops.convert_to_numpy(expected))


@pytest.mark.parametrize("options, message", [
    ({"output_units": 2}, r"one click logit per example.*\(2, 2\)"),
    ({"activation": "gelu"}, "no hidden ReLU"),
])
def test_models_that_do_not_fit_fail_before_training(save, data, options, message):
    with pytest.raises(UserModelError, match=message):
        UserModelBuilder(save(**options), data.feature_spec)


def test_float_ids_must_hold_every_id_exactly(save, data):
    spec = data.feature_spec
    large = type(spec)((type(spec.categorical[0])("user_id", 5000), *spec.categorical[1:]),
                       spec.num_dense)
    with pytest.raises(UserModelError, match=r"ids in \[0, 5000\), which float16 cannot"):
        UserModelBuilder(save(spec=large, id_dtype="float16"), large)
    assert UserModelBuilder(save(spec=large, id_dtype="float32"), large).report.replaced


def test_too_small_embedding_tables_fail_on_the_probe_batch(save, data):
    spec = data.feature_spec
    smaller = type(spec)(tuple(type(f)(f.name, max(1, f.vocab_size // 2))
                               for f in spec.categorical), spec.num_dense)
    with pytest.raises(UserModelError, match="fails on a batch shaped like the data"):
        UserModelBuilder(save(spec=smaller), spec)


def test_an_unreadable_file_fails_clearly(tmp_path, data):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip file")
    with pytest.raises(UserModelError, match="cannot load the Keras file"):
        UserModelBuilder(str(path), data.feature_spec)


# -- module:function ------------------------------------------------------------


def test_function_returning_a_template_is_used_like_a_file(user_models, data):
    builder = UserModelBuilder("user_models:template", data.feature_spec)
    assert builder.report.replaced == ("hidden_1", "hidden_2_relu")
    first = _weights(builder("gelu", 1, 2))
    np.testing.assert_array_equal(first["hidden_1/kernel"],
                                  _weights(builder("gelu", 1, 2))["hidden_1/kernel"])


def test_function_building_replicas_itself(user_models, data):
    builder = UserModelBuilder("user_models:replica", data.feature_spec)
    assert builder.report is None
    replica = builder(smelu_layers.SmeLU(beta=0.3), embedding_seed=1, tower_seed=2)
    assert [type(layer).__name__ for layer in replica.layers].count("SmeLU") == 2


@pytest.mark.parametrize("function, message", [
    ("ignores_seeds", "do not depend on embedding_seed or tower_seed"),
    ("half_signature", r"either \(feature_spec\) or"),
    ("missing", "has no function 'missing'"),
])
def test_bad_functions_fail_clearly(user_models, data, function, message):
    with pytest.raises(UserModelError, match=message):
        UserModelBuilder(f"user_models:{function}", data.feature_spec)


def test_a_module_that_does_not_import_fails_clearly(data):
    with pytest.raises(UserModelError, match="cannot import module 'no_such_module'.*PYTHONPATH"):
        UserModelBuilder("no_such_module:build", data.feature_spec)


# -- training -------------------------------------------------------------------


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_the_replica_harness_trains_a_saved_model(save, data):
    builder = model_builder(dataclasses.replace(TINY, model=save()), data.feature_spec)

    def train_data_fn(order_seed):
        return batched_dataset(data.train.features, data.train.labels, TINY.batch_size,
                               order_seed)

    eval_data = batched_dataset(data.test.features, data.test.labels, 256)
    row = run_replicas(builder, train_data_fn, eval_data, "smelu:0.2", ["tower_init"], 2, TINY,
                       progress=False)
    assert row["replicas"] == 2 and row["label"] == "smelu(β=0.2)"
    assert 0.0 < row["rel_pd"] and np.isfinite(row["auc_mean"])
    control = run_replicas(builder, train_data_fn, eval_data, "relu", [], 2, TINY,
                           progress=False)
    assert control["identical_replicas"] and control["rel_pd"] == 0.0


def _run(script, *args, timeout=900):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False,
    )


@pytest.mark.slow
def test_main_job_trains_a_saved_model(tmp_path, user_models, validate_results):
    spec = load_training_data(TrainingConfig(train_examples=10, eval_examples=10)).feature_spec
    path = str(tmp_path / "model.keras")
    user_models.functional(spec).save(path)
    output = tmp_path / "out"
    result = _run("examples/recsys_reproducibility.py", f"--model={path}", "--quick",
                  "--replicas=2", "--train_examples=4000", "--eval_examples=1000",
                  f"--output_dir={output}", "--noprogress")
    assert result.returncode == 0, result.stderr[-3000:]
    results = validate_results(output / "results.json")
    assert results["config"]["model"] == path
    assert [r["label"] for r in results["results"]] == ["relu", "smelu(β=1)"]  # --quick
    assert all(r["replicas"] == 2 and np.isfinite(r["auc_mean"]) for r in results["results"])


@pytest.mark.slow
def test_main_job_rejects_a_mismatched_model_before_training(tmp_path, user_models):
    spec = load_training_data(TrainingConfig(train_examples=10, eval_examples=10)).feature_spec
    path = str(tmp_path / "model.keras")
    user_models.functional(spec, names=("user", *spec.categorical_names[1:])).save(path)
    result = _run("examples/recsys_reproducibility.py", f"--model={path}", "--quick",
                  f"--output_dir={tmp_path / 'out'}", "--noprogress", timeout=300)
    assert result.returncode != 0
    assert "missing from the data: ['user']" in result.stderr
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_fine_tune_benchmark_runs_with_tiny_flags(tmp_path):
    result = _run("benchmarks/fine_tune.py", "--train_examples=1000", "--eval_examples=300",
                  "--max_vocab_size=50", "--replicas=2", "--hidden_units=8",
                  "--batch_size=128", "--activations=smelu:0.3", "--noprogress",
                  f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Base ReLU model" in result.stdout and "fine-tune smelu(β=0.3)" in result.stdout
    with open(tmp_path / "fine_tune.json", encoding="utf-8") as f:
        content = json.load(f)
    assert [r["label"] for r in content["results"]] == [
        "fine-tune relu", "fine-tune smelu(β=0.3)", "scratch relu", "scratch smelu(β=0.3)"]
    assert all(r["sources"] == ["order"] and r["replicas"] == 2 for r in content["results"])
    assert 0.0 <= content["base"]["auc"] <= 1.0  # too little data to learn much
    help_text = _run("benchmarks/fine_tune.py", "--help", timeout=120).stdout
    for flag in ("--activations", "--replicas", "--finetune_epochs", "--model"):
        assert flag in help_text
