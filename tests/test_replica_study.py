"""ReplicaStudy: R replicas of a user's compiled model trained by its own `fit`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from tf_smelu import experiment, metrics
from tf_smelu.experiment.results import results_schema
from tf_smelu.reproducibility import ReplicaStudy

FEATURES = 6


def _arrays(rows: int = 1200, seed: int = 0):
    """Separable-ish synthetic clicks: `((x_train, y_train), (x_held_out, y_held_out))`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=rows) > 0).astype("float32")
    split = rows * 2 // 3
    return (x[:split], y[:split]), (x[split:], y[split:])


def _data():
    """`(train dataset of 16 batches, (x_held_out, y_held_out))`."""
    train, held_out = _arrays()
    return tf.data.Dataset.from_tensor_slices(train).batch(50), held_out


def _make_dataset(orders: list):
    """`make_dataset(order_seed)` shuffling examples; records the seeds it is given."""
    train, _ = _arrays()

    def make_dataset(order_seed):
        orders.append(order_seed)
        return tf.data.Dataset.from_tensor_slices(train).shuffle(800, seed=order_seed).batch(50)

    return make_dataset


def _build_mlp(seed: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(12, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["auc"])
    return model


def _build_with_dropout(seed: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(12, activation="relu"),
        keras.layers.Dropout(0.2),  # its masks follow the pinned seed too
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    return model


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_no_source_gives_bit_identical_replicas_and_restores_op_determinism():
    train, held_out = _data()
    before = tf_config.is_op_determinism_enabled()
    [row] = ReplicaStudy(_build_with_dropout, train, held_out, replicas=2, sources=(), epochs=2).run()
    assert row["identical_replicas"] is True
    assert row["rel_pd"] == 0.0 and row["abs_pd"] == 0.0
    assert tf_config.is_op_determinism_enabled() == before
    # The replicas did learn: the control is not two untrained models.
    assert row["steps"] == 32 and row["auc_mean"] > 0.75, row["auc_mean"]


@pytest.mark.parametrize("sources, as_function", [
    (("init",), False), (("order",), False), (("order",), True)])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_each_source_alone_makes_replicas_differ(sources, as_function):
    train, held_out = _data()
    orders, models = [], []

    def build(seed):
        models.append(_build_mlp(seed))
        return models[-1]

    data = _make_dataset(orders) if as_function else train
    [row] = ReplicaStudy(build, data, held_out, replicas=2, sources=sources).run()
    assert row["sources"] == list(sources)
    assert row["identical_replicas"] is False
    assert 0 < row["rel_pd"] < 2 and 0 < row["abs_pd"] < 1
    assert row["rel_pd_pairs"] == [row["rel_pd"]]
    # The row's PD is tf_smelu.metrics' PD of the trained replicas' predictions. The study
    # predicts in batches of its own: on some CPUs float32 kernels round differently per
    # batch shape (PD differed by 2e-9 relative), so agreement is to float32 precision.
    p, q = (model.predict(held_out[0], verbose=0)[:, 0] for model in models)
    assert row["rel_pd"] == pytest.approx(metrics.relative_pd(p, q), rel=1e-6)
    assert row["abs_pd"] == pytest.approx(metrics.absolute_pd(p, q), rel=1e-6)
    if as_function:
        assert len(orders) == 2 and orders[0] != orders[1]


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_pinned_order_gives_a_function_the_same_seed_for_every_replica():
    _, held_out = _data()
    orders = []
    [row] = ReplicaStudy(_build_mlp, _make_dataset(orders), held_out, replicas=2, sources=(),
                         side_by_side=False).run()  # side by side, one fit reads it once
    assert len(orders) == 2 and orders[0] == orders[1] is not None
    assert row["rel_pd"] == 0.0


def _undocumented(rows: list[dict]) -> set[str]:
    """Row fields the results schema does not describe (it allows them, but should list ours)."""
    return {key for row in rows for key in row} - set(results_schema()["$defs"]["row"]["properties"])


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_compare_rows_match_the_schema_and_render_through_the_report(tmp_path, validate_results):
    train, held_out = _data()
    study = ReplicaStudy(_build_mlp, train, held_out, replicas=2, sources=("init",), epochs=1)
    rows = study.compare(["smelu:1"])  # ReLU, the baseline, is added first
    assert [r["label"] for r in rows] == ["relu", "smelu(β=1)"]
    assert [r["spec"] for r in rows] == ["relu", "smelu:1.0"]
    relu = rows[0]
    assert len(relu["aucs"]) == 2 and relu["rel_pd_ci"] == [pytest.approx(np.nan, nan_ok=True)] * 2
    # The model's own compiled AUC (Keras' approximation) agrees with the row's.
    assert relu["eval_metrics"]["auc"] == pytest.approx(relu["aucs"], abs=0.01)
    assert len(relu["train_loss"]) == 2 and relu["steps"] == 16

    logged = []
    results, plot = experiment.report(rows, study.config, str(tmp_path), log=logged.append)
    content = validate_results(results)
    assert not _undocumented(content["results"])
    assert content["config"]["sources"] == ["init"] and content["config"]["epochs"] == 1
    assert "smelu(β=1)" in logged[0] and "relu" in logged[0]
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_multi_output_model_gives_one_row_per_output(tmp_path, validate_results):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(900, FEATURES)).astype("float32")
    labels = {"click": (x[:, 0] > 0).astype("float32"),
              "genre": np.digitize(x[:, 1], [-0.5, 0.5]).astype("int32")}
    train = tf.data.Dataset.from_tensor_slices(
        (x[:600], {k: v[:600] for k, v in labels.items()})).batch(50)
    held_out = tf.data.Dataset.from_tensor_slices(
        (x[600:], {k: v[600:] for k, v in labels.items()})).batch(128)

    def build(seed):
        inputs = keras.Input((FEATURES,))
        hidden = keras.layers.Dense(12, activation="relu")(inputs)
        model = keras.Model(inputs, {
            "click": keras.layers.Dense(1, name="click")(hidden),  # logits
            "genre": keras.layers.Dense(3, activation="softmax", name="genre")(hidden),
        })
        model.compile(keras.optimizers.Adam(1e-2), loss={
            "click": keras.losses.BinaryCrossentropy(from_logits=True),
            "genre": "sparse_categorical_crossentropy"})
        return model

    rows = ReplicaStudy(build, train, held_out, replicas=2, sources=("init",)).run()
    assert [(r["output"], r["label"]) for r in rows] == [
        ("click", "model [click]"), ("genre", "model [genre]")]
    click, genre = rows
    # Logits went through a sigmoid (as probabilities they would be refused).
    assert "classes" not in click and click["auc_mean"] > 0.7 and click["logloss_mean"] < 0.69
    assert genre["classes"] == 3
    assert 0 < genre["top1_pd"] <= 1 and 0 < genre["l1_pd"] <= 1
    assert set(click["eval_metrics"]) >= {"loss", "click_loss", "genre_loss"}
    validate_results(experiment.write_results(str(tmp_path), {}, rows))
    assert not _undocumented(rows)


class OwnLossModel(keras.Model):
    """A subclassed model that computes its own loss from logits."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(12, activation="relu")
        self.out = keras.layers.Dense(1)
        self.loss_calls = 0

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        self.loss_calls += 1
        return keras.ops.mean(keras.losses.binary_crossentropy(
            keras.ops.reshape(y, (-1, 1)), y_pred, from_logits=True))


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_subclassed_model_with_its_own_compute_loss():
    train, held_out = _data()
    built = []

    def build(seed):
        model = OwnLossModel()
        model.compile(keras.optimizers.Adam(1e-2))
        built.append(model)
        return model

    with pytest.raises(ValueError, match="from_logits=True"):
        ReplicaStudy(build, train, held_out, replicas=2).run()
    built.clear()
    [row] = ReplicaStudy(build, train, held_out, replicas=2, sources=("init",),
                         from_logits=True).run()
    assert all(model.loss_calls > 0 for model in built) and len(built) == 2
    assert row["auc_mean"] > 0.8 and row["rel_pd"] > 0


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_fit_arguments_reach_every_replica_unchanged():
    train, held_out = _data()
    calls = []

    def schedule(epoch, learning_rate):
        calls.append(epoch)
        return 0.02 / (epoch + 1)

    study = ReplicaStudy(
        _build_mlp, train, held_out, replicas=2, sources=("init",), epochs=2,
        callbacks=[keras.callbacks.LearningRateScheduler(schedule)], class_weight={0: 1.0, 1: 2.0},
        side_by_side=False)  # one fit per replica (side by side: one fit, tested below)
    [row] = study.run()
    assert calls == [0, 1, 0, 1]
    assert row["fit_logs"]["learning_rate"] == pytest.approx([0.01, 0.01])
    assert row["steps"] == 32  # 2 epochs of 16 batches
    assert study.config["callbacks"] == ["LearningRateScheduler"]


# ---- side by side: R copies in one fit (issue 21, item 4) ----


def _train_both_ways(build, train, held_out, **kwargs):
    """Runs one study sequentially and side by side: `{side_by_side: (rows, models)}`."""
    runs = {}
    for side_by_side in (False, True):
        models = []

        def keep(seed):
            models.append(build(seed))
            return models[-1]

        rows = ReplicaStudy(keep, train, held_out, replicas=2, sources=("init",),
                            side_by_side=side_by_side, **kwargs).run()
        runs[side_by_side] = rows, models
    return runs


def _assert_same_replicas(runs, x):
    """Equal per-replica predictions (bitwise) and rows of one structure."""
    (sequential, one_by_one), (stacked, copies) = runs[False], runs[True]
    assert {r["side_by_side"] for r in sequential} == {False}
    assert {r["side_by_side"] for r in stacked} == {True}
    # The copies trained inside the stacked model: their own optimizers never stepped.
    assert [int(m.optimizer.iterations) for m in copies] == [0, 0]
    assert all(int(m.optimizer.iterations) > 0 for m in one_by_one)
    for a, b in zip(one_by_one, copies):
        keras.tree.map_structure(np.testing.assert_array_equal,
                                 # batch_size=1024: reuses the study's trace
                                 a.predict(x, batch_size=1024, verbose=0),
                                 b.predict(x, batch_size=1024, verbose=0))
    for seq, side in zip(sequential, stacked):
        assert set(seq) == set(side)
        assert seq["rel_pd"] == side["rel_pd"] > 0 and seq["aucs"] == side["aucs"]
        assert seq["steps"] == side["steps"] and seq["eval_metrics"] == side["eval_metrics"]
        assert set(seq["fit_logs"]) == set(side["fit_logs"])
        for name, values in seq["fit_logs"].items():  # running means, summed in another order
            assert side["fit_logs"][name] == pytest.approx(values, rel=1e-5), name


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_side_by_side_replicas_equal_sequential_ones_bitwise():
    train, held_out = _data()

    def build(seed):  # per-variable clipping, Dropout and class weights keep replicas apart
        inputs = keras.Input((FEATURES,))
        hidden = keras.layers.Dropout(0.2)(keras.layers.Dense(12, activation="relu")(inputs))
        # A Functional model with auto-named layers: each replica's output has another name.
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
        model.compile(keras.optimizers.Adam(1e-2, clipnorm=0.5), "binary_crossentropy",
                      metrics=["auc"])
        return model

    calls = []
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: calls.append(epoch) or lr)
    runs = _train_both_ways(build, train, held_out, epochs=2, callbacks=[schedule],
                            class_weight={0: 1.0, 1: 3.0})
    _assert_same_replicas(runs, held_out[0])
    assert calls == [0, 1, 0, 1, 0, 1]  # two sequential fits, then one side-by-side fit
    assert set(runs[True][0][0]["fit_logs"]) == {"loss", "auc", "learning_rate"}


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_multi_output_model_trains_side_by_side():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, FEATURES)).astype("float32")
    labels = {"click": (x[:, 0] > 0).astype("float32"),
              "genre": np.digitize(x[:, 1], [-0.5, 0.5]).astype("int32")}
    train = tf.data.Dataset.from_tensor_slices(
        (x[:400], {k: v[:400] for k, v in labels.items()})).batch(50)
    held_out = (x[400:], {k: v[400:] for k, v in labels.items()})

    def build(seed):
        inputs = keras.Input((FEATURES,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        model = keras.Model(inputs, {
            "click": keras.layers.Dense(1, name="click")(hidden),
            "genre": keras.layers.Dense(3, activation="softmax", name="genre")(hidden),
        }, name="two_heads")  # the same name in every copy
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss={
            "click": keras.losses.BinaryCrossentropy(from_logits=True),
            "genre": "sparse_categorical_crossentropy"}, loss_weights={"click": 1.0, "genre": 0.5},
            metrics={"click": ["auc"]})
        return model

    runs = _train_both_ways(build, train, held_out)
    _assert_same_replicas(runs, held_out[0])
    click, genre = runs[True][0]
    assert genre["classes"] == 3 and genre["top1_pd"] > 0
    assert set(click["fit_logs"]) >= {"loss", "click_loss", "genre_loss", "click_auc"}


def _build_clipped_globally(seed):
    model = _build_mlp(seed)
    model.compile(keras.optimizers.Adam(1e-2, global_clipnorm=1.0), "binary_crossentropy")
    return model


def _build_own_loss(seed):
    model = OwnLossModel()
    model.compile(keras.optimizers.Adam(1e-2))
    return model


@pytest.mark.parametrize("build, reason", [
    (_build_clipped_globally, "global_clipnorm=1.0 clips by the norm over all copies"),
    (_build_own_loss, "overrides `compute_loss`"),
])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_what_cannot_be_stacked_trains_one_replica_after_another(build, reason, caplog):
    train, held_out = _data()
    with pytest.raises(ValueError, match=f"side_by_side=True, but .*{reason}"):
        ReplicaStudy(build, train, held_out, replicas=2, from_logits=True, side_by_side=True).run()
    caplog.clear()
    [row] = ReplicaStudy(build, train, held_out, replicas=2, from_logits=True).run()
    assert row["side_by_side"] is False and row["rel_pd"] > 0
    [line] = [r.getMessage() for r in caplog.records if "one after another" in r.getMessage()]
    assert reason in line


def test_side_by_side_needs_a_pinned_order_and_a_known_setting():
    train, held_out = _data()
    with pytest.raises(ValueError, match="the data order varies between replicas"):
        ReplicaStudy(_build_mlp, train, held_out, replicas=2, sources=("order",),
                     side_by_side=True).run()
    with pytest.raises(ValueError, match="`side_by_side` must be 'auto', True or False"):
        ReplicaStudy(_build_mlp, train, held_out, side_by_side="yes")


@pytest.mark.slow
def test_the_benchmark_runs_both_ways_and_writes_its_json(tmp_path):
    import json
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "replica_study.py"), "--rows=600",
         "--held_out_rows=200", "--replicas=2", "--repeats=1", "--fields=2",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| 2 |" in result.stdout  # the table (the run checked both ways agree)
    [entry] = json.loads((tmp_path / "replica_study.json").read_text())["results"]
    assert entry["replicas"] == 2 and entry["ratio_fit"]["median"] > 0
    assert entry["rel_pd"] > 0


def _build_with_fixed_initializers(seed: int) -> keras.Model:
    """Ignores `seed`: every replica starts from the same weights."""
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(12, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
        keras.layers.Dense(1, activation="sigmoid",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=2)),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    return model


@pytest.mark.parametrize("side_by_side", [False, True])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_varying_init_leaves_a_seeded_order_pinned(side_by_side):
    # tf.data's seeded shuffles also take TensorFlow's global seed, which the
    # initialization seed sets: with identical weights, any PD here is order.
    _, (x_held_out, y_held_out) = _arrays()
    study = ReplicaStudy(_build_with_fixed_initializers, _make_dataset([]),
                         (x_held_out, y_held_out), replicas=2, sources=("init",),
                         side_by_side=side_by_side, epochs=1)
    (row,) = study.run()
    assert row["abs_pd"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": "a"}, "`seed` must be an integer"),
    ({"predict_batch_size": 0}, "`predict_batch_size` must be a positive integer"),
])
def test_argument_types_are_one_clear_line(kwargs, message):
    train, held_out = _data()
    with pytest.raises(ValueError, match=message) as error:
        ReplicaStudy(_build_mlp, train, held_out, replicas=2, **kwargs)
    assert "Received: " in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_compare_trains_a_spec_given_twice_once():
    train, held_out = _data()
    rows = ReplicaStudy(_build_mlp, train, held_out, replicas=2, epochs=1).compare(
        ["smelu:1", "relu", " smelu:1.0"])
    assert [row["label"] for row in rows] == ["relu", "smelu(β=1)"]


def test_compare_refuses_one_spec_string_instead_of_a_list():
    train, held_out = _data()
    with pytest.raises(ValueError, match=r"list of specs.*Received: specs='smelu:1'"):
        ReplicaStudy(_build_mlp, train, held_out, replicas=2).compare("smelu:1")


def _counting_fits(build, fits: list):
    def build_counting(seed):
        model = build(seed)
        fit = model.fit
        model.fit = lambda *args, **kwargs: fits.append(seed) or fit(*args, **kwargs)
        return model
    return build_counting


def test_a_from_logits_that_is_no_bool_stops_before_training():
    train, held_out = _data()
    fits = []
    with pytest.raises(ValueError, match=r"`from_logits` must be .*Received: from_logits='yes'"):
        ReplicaStudy(_counting_fits(_build_mlp, fits), train, held_out, replicas=2,
                     side_by_side=False, from_logits="yes", epochs=1).run()
    assert fits == []


@pytest.mark.parametrize("held_out, message", [
    (lambda x, y: (x, np.ones_like(y)), r"both classes present.*Received: \d+ positive and 0"),
    (lambda x, y: (x[:, :FEATURES - 1], y), r"cannot predict the held-out data.*Received: .*shape"),
])
def test_held_out_data_the_study_cannot_score_stops_before_training(held_out, message):
    train, (x, y) = _data()
    fits = []
    with pytest.raises(ValueError, match=message) as error:
        ReplicaStudy(_counting_fits(_build_mlp, fits), train, held_out(x, y), replicas=2,
                     side_by_side=False, epochs=1).run()
    assert "\n" not in str(error.value) and fits == []


@pytest.mark.parametrize("side_by_side", [False, True])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_diverged_replica_stops_the_study_naming_it(side_by_side):
    from tf_smelu.training.replicas import DivergedError

    def build_diverging(seed):
        model = _build_mlp(seed)
        model.compile(keras.optimizers.SGD(1e30), "binary_crossentropy")
        return model

    train, held_out = _data()
    with pytest.raises(DivergedError, match=r"replica run 0's held-out predictions .* NaN"):
        ReplicaStudy(build_diverging, train, held_out, replicas=2, side_by_side=side_by_side,
                     epochs=1).run()


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_compare_hands_over_finished_rows_before_a_later_spec_diverges():
    from tf_smelu.training.replicas import DivergedError

    handed = []

    def build(seed):  # diverges once the first spec has handed its rows over
        model = _build_mlp(seed)
        if handed:
            model.compile(keras.optimizers.SGD(1e30), "binary_crossentropy")
        return model

    train, held_out = _data()
    with pytest.raises(DivergedError, match="replica run 0"):
        ReplicaStudy(build, train, held_out, replicas=2, epochs=1).compare(
            ["smelu:1"], on_rows=handed.append)
    assert [[row["label"] for row in rows] for rows in handed] == [["relu"]]
    assert np.isfinite(handed[0][0]["rel_pd"]) and handed[0][0]["train_steps_ratio"] == 1
