"""Remedies (issue 22) on the replica study: each changes what it claims."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tensorflow as tf

from test_replica_study import FEATURES, _arrays, _build_mlp, _data
from tf_smelu import experiment, metrics
from tf_smelu.common import derived_seed
from tf_smelu.experiment.seeds import replica_seeds
from tf_smelu.registry import Activation
from tf_smelu.remedies import Codistill, Ema, Ensemble, LabelSmoothing, Recipe, WarmStart
from tf_smelu.reproducibility import ReplicaStudy


def _keeping(build, models: list, seeds: list):
    """`build`, recording every model it returns and the seed it was given."""

    def keep(seed):
        seeds.append(seed)
        models.append(build(seed))
        return models[-1]

    return keep


def _probabilities(model, x):
    return model.predict(x, batch_size=1024, verbose=0)[:, 0].astype(np.float64)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_each_ensemble_replica_is_the_mean_of_its_seeded_members():
    train, held_out = _data()
    models, seeds = [], []
    study = ReplicaStudy(_keeping(_build_mlp, models, seeds), train, held_out, replicas=2,
                         sources=("init",), epochs=1)
    [row] = study.compare(["ensemble:2"], baseline=None)  # the model as built: we keep it
    assert row["remedy"] == "ensemble:2" and row["label"] == "model+ensemble(K=2)"
    del models[0], seeds[0]  # the model compare built to check the remedies before training
    # Members of replica r: seeds derived from replica r's seed, all four different.
    replica = [s.tower_seed for s in replica_seeds(("init",), 2, 0)]
    assert seeds == [*Ensemble(2).member_seeds(replica[0]), *Ensemble(2).member_seeds(replica[1])]
    assert len(set(seeds)) == 4
    members = [_probabilities(m, held_out[0]) for m in models]
    first, second = (members[0] + members[1]) / 2, (members[2] + members[3]) / 2
    assert not np.array_equal(members[0], members[1])
    assert row["abs_pd"] == pytest.approx(metrics.absolute_pd(first, second), rel=1e-6)
    assert row["aucs"] == pytest.approx(
        [metrics.roc_auc(held_out[1], p) for p in (first, second)], abs=1e-6)
    assert row["steps"] == 32 and row["params"] == 2 * models[0].count_params()


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_ema_evaluates_with_the_averaged_weights():
    train, held_out = _data()
    with_ema, plain = [], []
    # One fit per replica: each model's own optimizer then holds its average.
    [row] = ReplicaStudy(_keeping(_build_mlp, with_ema, []), train, held_out, replicas=2,
                         sources=("init",), epochs=1, side_by_side=False,
                         ).compare(["ema:0.9"], baseline=None)
    ReplicaStudy(_keeping(_build_mlp, plain, []), train, held_out, replicas=2, sources=("init",),
                 epochs=1, side_by_side=False).run()
    del with_ema[0]  # the model compare built to check the remedies before training
    for averaged, raw in zip(with_ema, plain):
        optimizer = averaged.optimizer
        assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9)
        # fit ended by writing the average into the model's weights...
        for weight, average in zip(averaged.trainable_weights,
                                   optimizer._model_variables_moving_average):
            np.testing.assert_array_equal(weight.numpy(), average.numpy())
        # ... which are not the last step's weights (the same seed trained without EMA).
        assert int(optimizer.iterations) == int(raw.optimizer.iterations) == 16
        assert not np.allclose(averaged.get_weights()[0], raw.get_weights()[0])
    # The row measured the averaged models.
    p, q = (_probabilities(m, held_out[0]) for m in with_ema)
    assert row["abs_pd"] == pytest.approx(metrics.absolute_pd(p, q), rel=1e-6)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_label_smoothing_zero_is_the_baseline_bit_for_bit_and_more_changes_it():
    train, held_out = _data()
    # One fit per replica for the baseline too: side by side, fit logs sum in another order.
    study = ReplicaStudy(_build_mlp, train, held_out, replicas=2, sources=("init",), epochs=1,
                         side_by_side=False)
    relu, zero, smoothed = study.compare(["label_smoothing:0", "label_smoothing:0.2"])
    assert [r["label"] for r in (relu, zero, smoothed)] == [
        "relu", "relu+label_smoothing(0)", "relu+label_smoothing(0.2)"]
    assert "remedy" not in relu and zero["remedy"] == "label_smoothing:0.0"
    for field in ("aucs", "abs_pd", "rel_pd", "eval_metrics", "train_loss"):
        assert zero[field] == relu[field], field
    assert smoothed["aucs"] != relu["aucs"] and smoothed["abs_pd"] != relu["abs_pd"]
    # Smoothed targets keep the training loss away from 0: it cannot fall as low.
    assert min(smoothed["train_loss"]) > 0.1


def test_label_smoothing_keeps_the_loss_settings_per_output():
    loss = {"click": keras.saving.serialize_keras_object(
        keras.losses.BinaryCrossentropy(from_logits=True)), "genre": "categorical_crossentropy"}
    smoothed = LabelSmoothing(0.1).compile_config({"loss": loss})["loss"]
    click, genre = (keras.saving.deserialize_keras_object(smoothed[k]) for k in ("click", "genre"))
    assert isinstance(click, keras.losses.BinaryCrossentropy) and click.from_logits is True
    assert click.label_smoothing == genre.label_smoothing == pytest.approx(0.1)
    assert isinstance(genre, keras.losses.CategoricalCrossentropy)


@pytest.mark.parametrize("loss, optimizer, spec, message", [
    ("mse", "adam", "label_smoothing:0.1", "label_smoothing:0.1 re-creates .* which "
                                           "mean_squared_error does not take"),
    ("sparse_categorical_crossentropy", "adam", "label_smoothing:0.1",
     "which sparse_categorical_crossentropy does not take"),
])
def test_a_loss_that_cannot_smooth_labels_is_one_clear_error(loss, optimizer, spec, message):
    train, held_out = _data()

    def build(seed):
        model = _build_mlp(seed)
        model.compile(optimizer, loss)
        return model

    built = []
    with pytest.raises(ValueError, match=message):
        ReplicaStudy(_keeping(build, built, []), train, held_out, replicas=2).compare([spec])
    assert [int(m.optimizer.iterations) for m in built] == [0]  # before any training


@pytest.mark.parametrize("spec, message", [
    ("dropout:0.1", "Unknown remedy or activation 'dropout'"),
    ("ensemble:1", "K must be an integer >= 2"),
    ("ensemble:2.5", "expected ensemble:K"),
    ("ensemble", "needs a value"),
    ("ema:1", r"DECAY must lie in \(0, 1\)"),
    ("ema:0", r"DECAY must lie in \(0, 1\)"),
    ("ema:nan", r"DECAY must lie in \(0, 1\)"),
    ("label_smoothing:1", r"EPS must lie in \[0, 1\)"),
    ("label_smoothing:-0.1", r"EPS must lie in \[0, 1\)"),
    ("smelu:1+gelu", "one activation"),
    ("ema:0.9+ema:0.99", "different kinds"),
    ("distill:-0.5", "LAMBDA must be a number >= 0"),
    ("distill", "needs a value"),
    ("anchor:x", "anchor:LAMBDA .* with a number"),
    ("codistill:nan", "LAMBDA must be a number >= 0"),
    ("warm_start:1", "warm_start takes no value"),
    ("warm_start:", "warm_start takes no value"),
    ("", "non-empty string"),
    ("smelu:1+", "one part is empty"),
    ("+ema:0.9", "one part is empty"),
])
def test_spec_errors_are_one_line_before_any_training(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        Recipe.parse(spec)
    assert "Received: " in str(error.value) and "\n" not in str(error.value)
    train, held_out = _data()
    built = []
    with pytest.raises(ValueError, match=message):
        ReplicaStudy(_keeping(_build_mlp, built, []), train, held_out).compare(["smelu:1", spec])
    assert built == []


def test_specs_combine_an_activation_with_remedies():
    recipe = Recipe.parse("smelu:1+ema:0.999+ensemble:3")
    assert recipe.activation == Activation.parse("smelu:1")
    assert recipe.remedies == (Ema(0.999), Ensemble(3))
    assert recipe.remedy_spec == "ema:0.999+ensemble:3"
    assert Recipe.parse(recipe.remedy_spec).remedies == recipe.remedies
    assert recipe.label("smelu(β=1)") == "smelu(β=1)+ema(0.999)+ensemble(K=3)"
    assert Recipe.parse("ema:0.9999999").remedies[0].label == "ema(0.9999999)"
    assert Recipe.parse("relu") == Recipe(Activation.parse("relu"))
    both = Recipe.parse("warm_start+codistill:0.5")
    assert both.remedies == (WarmStart(), Codistill(0.5)) and both.remedy_spec == "warm_start+codistill:0.5"
    assert both.label("relu") == "relu+warm_start+codistill(0.5)"
    assert Recipe.parse(both.remedy_spec) == both


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_rows_carry_costs_match_the_schema_and_render(tmp_path, validate_results):
    train, held_out = _data()
    study = ReplicaStudy(_build_mlp, train, held_out, replicas=2, sources=("init",), epochs=1)
    relu, ensemble, smooth_ema = study.compare(["ensemble:2", "smelu:1+ema:0.9"])
    assert (smooth_ema["label"], smooth_ema["spec"], smooth_ema["remedy"]) == (
        "smelu(β=1)+ema(0.9)", "smelu:1.0", "ema:0.9")
    assert (relu["train_steps_ratio"], relu["serve_params_ratio"]) == (1.0, 1.0)
    assert (ensemble["train_steps_ratio"], ensemble["serve_params_ratio"]) == (2.0, 2.0)
    assert (smooth_ema["train_steps_ratio"], smooth_ema["serve_params_ratio"]) == (1.0, 1.0)
    # FLOPs per example, from TensorFlow's profiler: at least the two Dense layers'
    # multiply-adds (2 each); SmeLU's arithmetic adds some (the profiler counts none for
    # Relu); an ensemble serves K models.
    assert relu["flops"] >= 2 * (FEATURES * 12 + 12) and smooth_ema["flops"] > relu["flops"]
    assert smooth_ema["serve_flops_ratio"] == smooth_ema["flops"] / relu["flops"]
    assert (ensemble["flops"], ensemble["serve_flops_ratio"]) == (2 * relu["flops"], 2.0)
    assert all(r["train_seconds_ratio"] > 0 for r in (relu, ensemble, smooth_ema))
    logged = []
    results, _ = experiment.report([relu, ensemble, smooth_ema], study.config, str(tmp_path),
                                   log=logged.append)
    validate_results(results)
    table = logged[0]
    assert "relu+ensemble(K=2)" in table and "smelu(β=1)+ema(0.9)" in table
    # "vs relu" compares with the plain relu row, not with relu+ensemble.
    change = f"{ensemble['rel_pd'] / relu['rel_pd'] - 1:+.0%}"
    [line] = [ln for ln in table.splitlines() if "relu+ensemble" in ln]
    assert change in line.split()


def _earlier_data():
    """Data "before" the training data: another draw of the same generator."""
    (x, y), _ = _arrays(seed=1)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(50)


def _trained_with_seed(models: list, seeds: list, seed: int):
    [model] = [m for m, s in zip(models, seeds) if s == seed]
    return model


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_distill_zero_is_the_baseline_bit_for_bit_and_distill_and_anchor_pull_towards_their_targets():
    train, held_out = _data()
    models, seeds = [], []
    study = ReplicaStudy(_keeping(_build_mlp, models, seeds), train, held_out, replicas=2,
                         sources=("init",), epochs=1, side_by_side=False,
                         earlier_data=_earlier_data())
    [plain] = study.run()
    zero, distilled, anchored = study.compare(["distill:0", "distill:2", "anchor:2"],
                                              baseline=None)
    for field in ("aucs", "abs_pd", "rel_pd", "eval_metrics"):
        assert zero[field] == plain[field], field
    # The teacher and the previous model: trained once each, with seeds of their own.
    teacher = _trained_with_seed(models, seeds, derived_seed(0, 5, 0))
    previous = _trained_with_seed(models, seeds, derived_seed(0, 6, 0))
    assert seeds.count(derived_seed(0, 5, 0)) == seeds.count(derived_seed(0, 6, 0)) == 1
    x = held_out[0]
    baseline = [_probabilities(m, x) for m in models[:2]]
    # Builds after the baseline's two: the check before training, replica 0 of distill:0, the
    # teacher, replica 1; then distill:2's two replicas, anchor's first, the previous model, its second.
    by_spec = {"distill": models[6:8], "anchor": [models[8], models[10]]}
    for name, target in (("distill", teacher), ("anchor", previous)):
        target = _probabilities(target, x)
        for replica, plain_replica in zip(by_spec[name], baseline):
            pulled = np.mean(np.abs(_probabilities(replica, x) - target))
            assert pulled < np.mean(np.abs(plain_replica - target)), name
    # Their training time counts once into the rows that used them.
    assert distilled["setup_seconds"] == zero["setup_seconds"] > 0
    assert anchored["setup_seconds"] > 0 and "setup_seconds" not in plain
    assert distilled["train_seconds"] > distilled["setup_seconds"]
    assert anchored["steps"] == plain["steps"] and anchored["serve_params_ratio"] == 1.0


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_warm_start_replicas_start_from_the_previous_models_weights_exactly():
    train, held_out = _data()
    models, seeds, starts = [], [], []

    class Starts(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            starts.append([w.copy() for w in self.model.get_weights()])

    study = ReplicaStudy(_keeping(_build_mlp, models, seeds), train, held_out, replicas=3,
                         sources=("init",), epochs=1, earlier_data=_earlier_data(),
                         callbacks=[Starts()])
    [row] = study.compare(["warm_start"], baseline=None)
    previous = _trained_with_seed(models, seeds, derived_seed(0, 6, 0))
    # The previous model's own fit starts first; then the three replicas', from its weights.
    assert len(starts) == 4
    for replica in starts[1:]:
        for weight, expected in zip(replica, previous.get_weights()):
            np.testing.assert_array_equal(weight, expected)
    assert not np.array_equal(starts[0][0], starts[1][0])  # it had trained before they started
    # Replicas differ in their initialization only, which warm_start overrides: identical.
    assert row["abs_pd"] == 0.0 and row["setup_seconds"] > 0


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_codistilled_peers_train_together_and_pull_towards_each_other():
    train, held_out = _data()
    models, seeds = [], []
    study = ReplicaStudy(_keeping(_build_mlp, models, seeds), train, held_out, replicas=2,
                         sources=("init",), epochs=1, side_by_side=False)
    [plain] = study.run()
    zero, pulled = study.compare(["codistill:0", "codistill:3"], baseline=None)
    # Peer 0 has the replica's seed and is what the replica serves: with λ = 0, the baseline.
    for field in ("aucs", "abs_pd", "rel_pd", "eval_metrics"):
        assert zero[field] == plain[field], field
    replicas = [s.tower_seed for s in replica_seeds(("init",), 2, 0)]
    peer_seeds = [seed for replica in replicas for seed in Codistill(3).peer_seeds(replica)]
    assert seeds[3:] == peer_seeds * 2  # after run's two and the check: each spec's pairs
    x = held_out[0]

    def peer_gap(pairs):
        return [np.mean(np.abs(_probabilities(a, x) - _probabilities(b, x)))
                for a, b in zip(pairs[::2], pairs[1::2])]

    for apart, together in zip(peer_gap(models[3:7]), peer_gap(models[7:11])):
        assert together < apart
    # Two peers train (2x the steps); one is served.
    assert pulled["steps"] == zero["steps"] == 2 * plain["steps"]
    assert pulled["params"] == plain["params"] and pulled["flops"] == plain["flops"]


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_remedies_train_side_by_side_bit_for_bit_as_one_run_after_another():
    train, held_out = _data()
    # Every kind of change at once: compile arguments, peers, a teacher's pull (members
    # stack as replicas do).
    spec = "ema:0.9+label_smoothing:0.1+distill:0.5+codistill:0.5"
    rows, models = {}, {}
    for side_by_side in (False, True):
        models[side_by_side] = []
        study = ReplicaStudy(_keeping(_build_mlp, models[side_by_side], []), train, held_out,
                             replicas=2, sources=("init",), epochs=1, side_by_side=side_by_side)
        [rows[side_by_side]] = study.compare([spec], baseline=None)
    assert (rows[False]["side_by_side"], rows[True]["side_by_side"]) == (False, True)
    for field in ("aucs", "abs_pd", "rel_pd", "eval_metrics", "steps", "params", "flops"):
        assert rows[True][field] == rows[False][field], field
    assert rows[True]["steps"] == 2 * 16  # peers x steps
    x = held_out[0]
    for one_by_one, stacked in zip(*models.values()):  # the same builds in the same order
        np.testing.assert_array_equal(_probabilities(one_by_one, x), _probabilities(stacked, x))


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_the_pull_term_is_lambda_times_the_cross_entropy_per_output():
    """Logits and class outputs: the term compares probabilities, stop-gradient on the target."""
    from tf_smelu.reproducibility import stacking

    def build(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((FEATURES,))
        hidden = keras.layers.Dense(4, activation="relu")(inputs)
        model = keras.Model(inputs, {
            "click": keras.layers.Dense(1, name="click")(hidden),  # logits
            "genre": keras.layers.Dense(3, activation="softmax", name="genre")(hidden)})
        model.compile("sgd", {"click": keras.losses.BinaryCrossentropy(from_logits=True),
                              "genre": "categorical_crossentropy"})
        return model

    model, teacher = build(0), build(1)
    x = np.random.default_rng(0).normal(size=(8, FEATURES)).astype("float32")
    y = {"replica0_click": np.ones((8, 1), "float32"),
         "replica0_genre": np.eye(3, dtype="float32")[np.arange(8) % 3]}
    losses = {}
    for weight in (0.0, 0.5):
        stacked, _ = stacking._stack([model], stacking.Pulls(None, fixed=((weight, teacher),)))
        losses[weight] = float(stacked.compute_loss(x, y, stacked(x)))
    own, target = model(x), teacher(x)
    expected = 0.5 * (
        float(keras.ops.mean(keras.losses.binary_crossentropy(
            keras.ops.sigmoid(target["click"]), own["click"], from_logits=True)))
        + float(keras.ops.mean(keras.losses.categorical_crossentropy(
            target["genre"], own["genre"]))))
    assert losses[0.5] - losses[0.0] == pytest.approx(expected, rel=1e-5)
