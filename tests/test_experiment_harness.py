"""The replica harness controls exactly the sources it claims to control."""

import numpy as np
import pytest

from tf_smelu import experiment
from tf_smelu.data import SyntheticCTRConfig, generate_examples
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.models import build_model
from tf_smelu.training.config import TrainingConfig

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
        model_fn, train_data_fn, eval_data, activation,
        sources, replicas, TrainingConfig(**train_kwargs), seed=3,
        steps_per_epoch=steps, progress=False,
    )


@pytest.mark.parametrize("activation", ["relu", "smelu:0.2"])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_no_source_gives_bit_identical_replicas(tiny_problem, activation):
    row = _run(tiny_problem, (), activation)
    assert row["abs_pd"] == 0.0 and row["rel_pd"] == 0.0
    assert row["aucs"][0] == row["aucs"][1]


@pytest.mark.parametrize(
    "sources", [("tower_init",), ("embedding_init",), ("init",), ("order",), ("stale",)]
)
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_each_source_alone_makes_replicas_differ(tiny_problem, sources):
    row = _run(tiny_problem, sources, max_delay=3)
    assert row["abs_pd"] > 0.0
    assert row["sources"] == list(sources)
    assert 0.5 < row["auc_mean"] < 1.0


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_shared_stale_schedule_is_not_a_source(tiny_problem):
    """Stale updates with the same schedule everywhere change nothing between replicas."""
    row = _run(tiny_problem, (), update_mode="stale", max_delay=3)
    assert row["update_mode"] == "stale"
    assert row["abs_pd"] == 0.0


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
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


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_pd_by_evaluation_group(tiny_problem):
    mask = np.zeros(512, bool)
    mask[:100] = True
    model_fn, train_data_fn, eval_data, steps = tiny_problem
    row = experiment.run_replicas(
        model_fn, train_data_fn, eval_data, "relu", ("tower_init",), 2,
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
            model_fn, train_data_fn, eval_data, "relu", (), 2,
            steps_per_epoch=steps, progress=False, eval_groups={"bad": np.ones(3, bool)},
        )


def test_predicting_new_models_row_after_row_logs_no_retracing_warning(caplog):
    import keras
    import tensorflow as tf

    from tf_smelu.training.replicas import predict_probabilities

    features = np.ones((8, 3), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((features, np.ones(8, np.float32))).batch(4)
    with caplog.at_level("WARNING", logger="tensorflow"):
        for _ in range(8):  # TF warns after 5 traces: each call traces its new models once
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
            probabilities, labels = predict_probabilities([model], dataset)
    assert probabilities.shape == (1, 8) and labels.shape == (8,)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


@pytest.mark.parametrize("steps", [None, 1])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_diverging_run_stops_with_the_step_the_rows_label_and_the_learning_rate(
        tiny_problem, steps):
    from tf_smelu.common import UserError
    from tf_smelu.training.replicas import DivergedError

    # steps=1: the one loss is finite; the update after it is caught in the predictions.
    with pytest.raises(DivergedError) as raised:
        _run(tiny_problem, ("tower_init",), "smelu:0.2", learning_rate=1e30, steps=steps)
    message = str(raised.value)
    assert "smelu(β=0.2) [tower_init]" in message and "learning rate 1e+30" in message
    assert ("held-out predictions" in message) == (steps == 1), message
    assert isinstance(raised.value, UserError)  # command lines print it as one line
