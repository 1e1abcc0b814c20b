"""The replica harness controls exactly the sources it claims to control."""

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_smelu import experiment
from tf_smelu.data import SyntheticCTRConfig, generate_examples
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.models import build_model
from tf_smelu.training.replicas import TrainConfig
from tf_smelu.training.updates import DelayedGradients, delay_schedule

TINY_VOCAB = {"user_id": 200, "item_id": 100, "category": 10, "device": 4}


@pytest.fixture(scope="module")
def tiny_problem():
    config = SyntheticCTRConfig(
        num_examples=2048, num_eval_examples=512, vocab_sizes=TINY_VOCAB, chunk_size=1024
    )
    train = generate_examples(config, "train")
    test = generate_examples(config, "test")
    spec = config.feature_spec()

    def model_fn(activation, embedding_seed, tower_seed):
        return build_model(
            "mlp", spec, activation=activation, embedding_dim=4, hidden_units=[16, 8],
            embedding_seed=embedding_seed, tower_seed=tower_seed,
        )

    def train_data_fn(order_seed):
        return batched_dataset(train.features, train.labels, 128, order_seed)

    eval_data = batched_dataset(test.features, test.labels, 512)
    return model_fn, train_data_fn, eval_data, 2048 // 128


def _run(tiny_problem, sources, activation="relu", replicas=2, **train_kwargs):
    model_fn, train_data_fn, eval_data, steps = tiny_problem
    return experiment.run_replicas(
        model_fn, train_data_fn, eval_data, experiment.Activation.parse(activation),
        sources, replicas, TrainConfig(**train_kwargs), seed=3,
        steps_per_epoch=steps, progress=False,
    )


@pytest.mark.parametrize("activation", ["relu", "smelu:0.2"])
def test_no_source_gives_bit_identical_replicas(tiny_problem, activation):
    row = _run(tiny_problem, (), activation)
    assert row["abs_pd"] == 0.0 and row["rel_pd"] == 0.0
    assert row["aucs"][0] == row["aucs"][1]


@pytest.mark.parametrize(
    "sources", [("tower_init",), ("embedding_init",), ("init",), ("order",), ("stale",)]
)
def test_each_source_alone_makes_replicas_differ(tiny_problem, sources):
    row = _run(tiny_problem, sources, max_delay=3)
    assert row["abs_pd"] > 0.0
    assert row["sources"] == list(sources)
    assert 0.5 < row["auc_mean"] < 1.0


def test_shared_stale_schedule_is_not_a_source(tiny_problem):
    """Stale updates with the same schedule everywhere change nothing between replicas."""
    row = _run(tiny_problem, (), update_mode="stale", max_delay=3)
    assert row["update_mode"] == "stale"
    assert row["abs_pd"] == 0.0


def test_row_has_the_documented_schema(tiny_problem):
    row = _run(tiny_problem, ("tower_init",), "smelu:0.1", replicas=3)
    expected = {
        "activation": str, "beta": float, "replicas": int, "sources": list,
        "auc_mean": float, "auc_std": float, "logloss_mean": float, "abs_pd": float,
        "rel_pd": float, "rel_pd_ci": list, "train_seconds": float,
    }
    for key, kind in expected.items():
        assert isinstance(row[key], kind), key
    lo, hi = row["rel_pd_ci"]
    assert lo <= row["rel_pd"] <= hi
    assert row["activation"] == "smelu" and row["beta"] == 0.1 and row["replicas"] == 3


def test_harness_restores_op_determinism(tiny_problem):
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    _run(tiny_problem, ())
    assert tf_config.is_op_determinism_enabled() == before


def test_replica_seeds_vary_only_what_is_switched_on():
    def distinct(rows, field):
        return len({getattr(r, field) for r in rows})

    off = experiment.replica_seeds((), 4, 0)
    assert all(distinct(off, f) == 1 for f in ("embedding_seed", "tower_seed", "schedule_seed"))
    assert {r.order_seed for r in off} == {None}
    tower = experiment.replica_seeds(("tower_init",), 4, 0)
    assert distinct(tower, "tower_seed") == 4 and distinct(tower, "embedding_seed") == 1
    both = experiment.replica_seeds(("init",), 4, 0)
    assert distinct(both, "tower_seed") == 4 and distinct(both, "embedding_seed") == 4
    order = experiment.replica_seeds(("order",), 4, 0)
    assert distinct(order, "order_seed") == 4 and distinct(order, "tower_seed") == 1
    # Replica 0 of any setting equals the shared seeds (comparable baselines).
    assert tower[0].embedding_seed == off[0].embedding_seed


def test_parse_sources_and_activations():
    assert experiment.parse_sources("tower_init+order") == ("order", "tower_init")
    assert experiment.parse_sources("none") == ()
    with pytest.raises(ValueError, match="Unknown source"):
        experiment.parse_sources("tower+order")
    assert experiment.Activation.parse("smelu:0.1") == experiment.Activation("smelu", 0.1)
    assert experiment.Activation.parse("rescu:0.2:3").order == 3
    assert experiment.Activation.parse("smelu").beta == 1.0
    for bad in ("relu:0.1", "smelu:-1", "smelu:x", "tanhh"):
        with pytest.raises(ValueError):
            experiment.Activation.parse(bad)


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # many ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(positives, negatives)
    )
    assert experiment.roc_auc(labels, scores) == pytest.approx(
        wins / (positives.size * negatives.size), abs=1e-12
    )
    with pytest.raises(ValueError, match="positive and negative"):
        experiment.roc_auc(np.ones(3), np.ones(3))


def test_log_loss_by_hand():
    assert experiment.log_loss(np.array([1.0, 0.0]), np.array([0.8, 0.4])) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2
    )


def test_delay_schedule_is_seeded():
    a = delay_schedule(100, 4, 7)
    assert np.array_equal(a, delay_schedule(100, 4, 7))
    assert not np.array_equal(a, delay_schedule(100, 4, 8))
    assert a.min() >= 0 and a.max() <= 4 and len(set(a)) == 5
    assert not np.array_equal(delay_schedule(100, 4, None), delay_schedule(100, 4, None))


def test_delayed_gradients_arrive_late():
    weight = tf.Variable([0.0, 0.0])
    table = tf.Variable(tf.zeros([3, 1]))
    delayed = DelayedGradients([weight, table], max_delay=2)
    delays = [2, 0, 1, 0]
    arrived = []
    for step, delay in enumerate(delays):
        grads = [
            tf.constant([float(step + 1), 0.0]),
            tf.IndexedSlices(tf.constant([[10.0 * (step + 1)]]), tf.constant([step % 3])),
        ]
        due = delayed.push_and_pop(grads, tf.constant(step, tf.int64), tf.constant(delay))
        arrived.append((due[0].numpy()[0], due[1].numpy()[:, 0].tolist()))
    # step 0's gradient (1) is due at step 2, step 1's (2) at once, step 2's (3) at step 3.
    assert [a[0] for a in arrived] == [0.0, 2.0, 1.0, 4.0 + 3.0]
    assert arrived[2][1] == [10.0, 0.0, 0.0]
    assert arrived[3][1] == [10.0 * 4, 0.0, 10.0 * 3]


def test_results_table_and_plot(tmp_path):
    rows = [
        dict(activation=a, beta=b, label=a, replicas=3, sources=["tower_init"], auc_mean=0.7 + i / 100,
             auc_std=0.001, logloss_mean=0.45, abs_pd=0.01, rel_pd=0.1 - i / 100,
             rel_pd_ci=[0.08 - i / 100, 0.12 - i / 100], train_seconds=1.0)
        for i, (a, b) in enumerate([("relu", None), ("smelu", 0.1)])
    ]
    table = experiment.format_table(rows)
    assert "-10%" in table and "relu" in table
    path = experiment.write_results(str(tmp_path), {"replicas": 3}, rows)
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["results"] == rows and saved["config"] == {"replicas": 3}
    assert "tensorflow" in saved["environment"]
    plot = experiment.plot_tradeoff(rows, os.path.join(tmp_path, "tradeoff.png"))
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_pd_by_evaluation_group(tiny_problem):
    mask = np.zeros(512, bool)
    mask[:100] = True
    model_fn, train_data_fn, eval_data, steps = tiny_problem
    row = experiment.run_replicas(
        model_fn, train_data_fn, eval_data, experiment.Activation("relu"), ("tower_init",), 2,
        steps_per_epoch=steps, progress=False,
        eval_groups={"first": mask, "rest": ~mask, "none": np.zeros(512, bool)},
    )
    groups = row["rel_pd_by_group"]
    assert set(groups) == {"first", "rest"}  # empty groups are left out
    assert groups["first"]["examples"] == 100
    # The overall mean is the example-weighted mean of the group means.
    overall = (100 * groups["first"]["rel_pd"] + 412 * groups["rest"]["rel_pd"]) / 512
    assert overall == pytest.approx(row["rel_pd"], rel=1e-9)
    assert "first" in experiment.format_group_table([row])
    with pytest.raises(ValueError, match="shape"):
        experiment.run_replicas(
            model_fn, train_data_fn, eval_data, experiment.Activation("relu"), (), 2,
            steps_per_epoch=steps, progress=False, eval_groups={"bad": np.ones(3, bool)},
        )


def test_undefined_numbers_are_written_as_null(tmp_path):
    row = {"rel_pd_ci": [float("nan"), float("nan")], "rel_pd_std": np.float64("nan"), "x": 1.0}
    path = experiment.write_results(str(tmp_path), {}, [row])
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)["results"][0]
    assert saved == {"rel_pd_ci": [None, None], "rel_pd_std": None, "x": 1.0}
