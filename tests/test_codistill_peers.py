"""`codistill:LAMBDA[:K]`: K peers, each pulled towards the mean of the other K − 1 (issue 22)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from test_replica_study import FEATURES, _build_mlp, _data
from tf_smelu.common import derived_seed
from tf_smelu.experiment.costs import expected_costs
from tf_smelu.experiment.seeds import op_determinism, replica_seeds
from tf_smelu.remedies import Codistill, Recipe
from tf_smelu.remedies.base import PEERS, Pull


def test_k_defaults_to_two_shows_in_label_and_spec_only_when_other_and_costs_k():
    two = Recipe.parse("codistill:0.5")
    assert two == Recipe.parse("codistill:0.5:2") and two.remedies == (Codistill(0.5),)
    [remedy] = two.remedies
    # K = 2 is what codistill:0.5 has always been: spec, label, seeds, pull.
    assert (str(remedy), remedy.label) == ("codistill:0.5", "codistill(0.5)")
    assert remedy.peer_seeds(11) == [11, derived_seed(11, 7, 1)]
    assert remedy.pulls() == (Pull(0.5, PEERS),)
    three = Recipe.parse("smelu:1+codistill:0.25:3")
    assert three.remedy_spec == "codistill:0.25:3" and Recipe.parse(three.remedy_spec) == Recipe(
        None, three.remedies)
    assert three.label("smelu(β=1)") == "smelu(β=1)+codistill(0.25, K=3)"
    seeds = three.peer_seeds(11)
    assert seeds[:2] == remedy.peer_seeds(11) and len(set(seeds)) == 3
    assert expected_costs(three) == {"train": 3.0, "serve": 1.0}
    assert expected_costs(two) == {"train": 2.0, "serve": 1.0}
    # Per ensemble member, K peers.
    assert expected_costs(Recipe.parse("ensemble:2+codistill:1:4")) == {"train": 8.0, "serve": 2.0}


def _small(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)  # as the study builds every copy
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    return model


def test_each_of_k_peers_is_pulled_towards_the_mean_of_the_other_peers():
    from tf_smelu.reproducibility import stacking

    peers = [_small(seed) for seed in (0, 1, 2)]
    x = np.random.default_rng(0).normal(size=(8, FEATURES)).astype("float32")
    losses = {}
    for weight in (0.0, 0.5):
        stacked, _ = stacking._stack(peers, stacking.Pulls(False, peer_weight=weight, group=3))
        predicted = stacked(x)
        y = {name: np.ones((8, 1), "float32") for name in predicted}  # one output per peer
        losses[weight] = float(stacked.compute_loss(x, y, predicted))
    own = [keras.ops.convert_to_numpy(model(x)).astype(np.float64) for model in peers]
    expected = 0.0
    for copy in range(3):
        target = np.mean([own[p] for p in range(3) if p != copy], axis=0)
        expected += 0.5 * float(keras.ops.mean(keras.losses.binary_crossentropy(
            target.astype("float32"), own[copy].astype("float32"))))
    assert losses[0.5] - losses[0.0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_with_lambda_zero_each_of_three_peers_trains_as_its_own_baseline_replica():
    from tf_smelu.reproducibility import ReplicaStudy

    train, held_out = _data()
    models, seeds = [], []

    def build(seed):
        seeds.append(seed)
        models.append(_build_mlp(seed))
        return models[-1]

    study = ReplicaStudy(build, train, held_out, replicas=2, sources=("init",), epochs=1)
    [plain] = study.run()
    [zero] = study.compare(["codistill:0:3"], baseline=None)
    assert zero["label"].endswith("codistill(0, K=3)") and zero["side_by_side"]
    for field in ("aucs", "abs_pd", "rel_pd", "eval_metrics"):  # peer 0 is served
        assert zero[field] == plain[field], field
    assert zero["steps"] == 3 * plain["steps"]  # three peers train; one is served
    assert zero["params"] == plain["params"]
    replicas = [s.tower_seed for s in replica_seeds(("init",), 2, 0)]
    expected = [seed for replica in replicas for seed in Codistill(0, 3).peer_seeds(replica)]
    assert seeds[-6:] == expected and len(set(expected)) == 6
    pulls = study._pulls(Recipe.parse("codistill:0.5:3"), {})
    assert (pulls.peer_weight, pulls.group, pulls.peer_stale) == (0.5, 3, None)
    assert study._pulls(Recipe.parse("codistill:0.5:3:100"), {}).peer_stale == 100
    x = held_out[0]
    with op_determinism(True):
        for seed, peer in zip(expected[1:3], models[-5:-3]):  # replica 0's peers 1 and 2
            keras.utils.set_random_seed(seed)  # as the study builds every copy
            alone = _build_mlp(seed)
            alone.fit(train, epochs=1, verbose=0, shuffle=False)
            np.testing.assert_array_equal(alone.predict(x, verbose=0), peer.predict(x, verbose=0))


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_stale_peers_pull_towards_a_snapshot_refreshed_every_stale_steps():
    from tf_smelu.reproducibility import stacking

    train, (x, _) = _data()  # 16 steps

    def trained(seeds, **pulls):
        models = [_small(seed) for seed in seeds]
        stacking.fit_side_by_side(models, train, {"epochs": 1}, stacking.Pulls(False, **pulls))
        return [model.predict(x, verbose=0) for model in models]

    with op_determinism(True):
        fresh = trained([1, 2], peer_weight=0.5, group=2)
        # Refreshed before every step: the snapshot predicts what the step's own pass does.
        every_step = trained([1, 2], peer_weight=0.5, group=2, peer_stale=1)
        never = trained([1, 2], peer_weight=0.5, group=2, peer_stale=10**9)
        every_4 = trained([1, 2], peer_weight=0.5, group=2, peer_stale=4)
        # Never refreshed after step 0: peer 0 is pulled towards peer 1 as it started, as
        # towards a fixed teacher that is an untrained copy of peer 1.
        [towards_start] = trained([1], fixed=((0.5, _small(2)),))
    for a, b in zip(fresh, every_step):
        np.testing.assert_array_equal(a, b)
    # To the last bits only: the teacher's forward pass is another graph than the snapshot's.
    np.testing.assert_allclose(never[0], towards_start, rtol=0, atol=1e-6)
    assert np.abs(never[0] - fresh[0]).max() > 1e-3  # (fresh peers pull elsewhere)
    assert not np.array_equal(every_4[0], fresh[0]) and not np.array_equal(every_4[0], never[0])
    assert Recipe.parse("codistill:0.5:2:1") == Recipe.parse("codistill:0.5")  # STALE=1: fresh
    [stale] = Recipe.parse("codistill:0.5:3:100").remedies
    assert (str(stale), stale.label) == ("codistill:0.5:3:100", "codistill(0.5, K=3, stale=100)")
    assert stale.pulls() == (Pull(0.5, PEERS, 100),)
