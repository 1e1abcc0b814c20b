"""Tests for the seeded synthetic CTR data generator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tf_smelu.data.click_model import ClickWorld, zipf_probabilities
from tf_smelu.data.features import (
    DENSE_FEATURE_NAME,
    CategoricalFeature,
    CTRExamples,
    FeatureSpec,
)
from tf_smelu.data.synthetic import SyntheticCTRConfig, generate_examples, make_dataset

TINY_VOCAB = {
    "user_id": 500,
    "item_id": 200,
    "category": 20,
    "device": 4,
    "hour": 24,
    "region": 10,
}
# chunk_size below num_examples, and not dividing it, exercises chunk seams
# and the truncated last chunk.
TINY = SyntheticCTRConfig(
    num_examples=3_000,
    num_eval_examples=1_500,
    seed=7,
    vocab_sizes=TINY_VOCAB,
    chunk_size=1_024,
)


def _collect(dataset: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Concatenates a dataset of (features, label) into flat numpy arrays."""
    if dataset.element_spec[1].shape.rank == 0:  # unbatched: single examples
        dataset = dataset.batch(997)
    columns: dict[str, list[np.ndarray]] = {}
    for features, label in dataset.as_numpy_iterator():
        for name, value in {**features, "label": label}.items():
            columns.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def _as_columns(examples: CTRExamples) -> dict[str, np.ndarray]:
    return {**examples.features, "label": examples.labels}


def _assert_identical(
    left: dict[str, np.ndarray], right: dict[str, np.ndarray]
) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC; scores are continuous here, so ties do not matter."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    positives = labels > 0.5
    num_pos, num_neg = positives.sum(), (~positives).sum()
    return float(
        (ranks[positives].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)
    )


@pytest.fixture(scope="module")
def tiny_train() -> CTRExamples:
    return generate_examples(TINY)


@pytest.fixture(scope="module")
def large_sample() -> CTRExamples:
    """Enough rows for statistical checks, still ~0.2 s to generate."""
    return generate_examples(TINY, num_examples=30_000)


# -- determinism ------------------------------------------------------------


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_dataset_is_bit_identical_across_calls_and_batch_sizes(tiny_train):
    reference = _as_columns(tiny_train)
    for batch_size in (None, 1_000, 64, 4_096):
        _assert_identical(
            _collect(make_dataset(TINY, batch_size=batch_size)), reference
        )
    _assert_identical(_as_columns(generate_examples(TINY)), reference)


def test_first_rows_do_not_depend_on_num_examples(tiny_train):
    prefix = generate_examples(TINY, num_examples=1_500)
    _assert_identical(
        _as_columns(prefix),
        {name: column[:1_500] for name, column in _as_columns(tiny_train).items()},
    )


@pytest.mark.parametrize(
    "batch_size, drop_remainder, expected_sizes",
    [
        (1_000, True, [1_000] * 3),
        (2_049, False, [2_049, 951]),
        (None, False, [None] * 3_000),
    ],
)
def test_batch_sizes_and_cardinality(batch_size, drop_remainder, expected_sizes):
    dataset = make_dataset(TINY, batch_size=batch_size, drop_remainder=drop_remainder)
    assert int(dataset.cardinality()) == len(expected_sizes)
    sizes = [label.shape[0] if label.shape.rank else None for _, label in dataset]
    assert sizes == expected_sizes


def test_different_seeds_and_splits_give_different_data(tiny_train):
    other_seed = generate_examples(dataclasses.replace(TINY, seed=8))
    test_split = generate_examples(TINY, "test", num_examples=3_000)
    for other in (other_seed, test_split):
        assert not np.array_equal(
            other.features["user_id"], tiny_train.features["user_id"]
        )
        assert not np.array_equal(other.features["dense"], tiny_train.features["dense"])
        assert not np.array_equal(other.labels, tiny_train.labels)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_world_seed_pins_the_click_model_while_seed_resamples():
    first = dataclasses.replace(TINY, seed=1, world_seed=5)
    second = dataclasses.replace(TINY, seed=2, world_seed=5)
    world_a, world_b = ClickWorld(first), ClickWorld(second)
    for table_a, table_b in zip(
        world_a.latent_tables, world_b.latent_tables, strict=True
    ):
        np.testing.assert_array_equal(table_a, table_b)
    assert world_a.intercept == world_b.intercept
    assert not np.array_equal(
        generate_examples(first).features["user_id"],
        generate_examples(second).features["user_id"],
    )
    other_world = ClickWorld(dataclasses.replace(TINY, seed=1, world_seed=6))
    assert not np.array_equal(world_a.latent_tables[0], other_world.latent_tables[0])


def test_shuffle_seed_permutes_rows_deterministically(tiny_train):
    shuffled = _collect(make_dataset(TINY, batch_size=500, shuffle_seed=3))
    _assert_identical(
        shuffled, _collect(make_dataset(TINY, batch_size=97, shuffle_seed=3))
    )
    assert not np.array_equal(shuffled["user_id"], tiny_train.features["user_id"])
    # Same rows, different order: compare rows sorted by a unique key.
    reference = _as_columns(tiny_train)
    key_shuffled = np.argsort(shuffled["dense"][:, 0])
    key_reference = np.argsort(reference["dense"][:, 0])
    for name in reference:
        np.testing.assert_array_equal(
            shuffled[name][key_shuffled], reference[name][key_reference]
        )


def test_include_true_logits_matches_generate_examples(tiny_train):
    columns = _collect(make_dataset(TINY, batch_size=512, include_true_logits=True))
    np.testing.assert_array_equal(columns["true_logit"], tiny_train.true_logits)


# -- shapes, dtypes and ranges ----------------------------------------------


def test_element_spec_shapes_and_dtypes():
    features_spec, label_spec = make_dataset(TINY, batch_size=32).element_spec
    assert set(features_spec) == {*TINY_VOCAB, DENSE_FEATURE_NAME}
    for name in TINY_VOCAB:
        assert features_spec[name].dtype == tf.int64
        assert features_spec[name].shape.as_list() == [None]
    assert features_spec[DENSE_FEATURE_NAME].dtype == tf.float32
    assert features_spec[DENSE_FEATURE_NAME].shape.as_list() == [None, TINY.num_dense]
    assert label_spec.dtype == tf.float32 and label_spec.shape.as_list() == [None]

    single_features, single_label = make_dataset(TINY).element_spec
    assert single_features["user_id"].shape.rank == 0
    assert single_features[DENSE_FEATURE_NAME].shape.as_list() == [TINY.num_dense]
    assert single_label.shape.rank == 0


def test_values_are_in_range(large_sample):
    for name, vocab_size in TINY_VOCAB.items():
        ids = large_sample.features[name]
        assert ids.min() >= 0 and ids.max() < vocab_size, name
    assert set(np.unique(large_sample.labels)) == {0.0, 1.0}
    dense = large_sample.features[DENSE_FEATURE_NAME]
    assert np.all(np.isfinite(dense))
    np.testing.assert_allclose(dense.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(dense.std(axis=0), 1.0, atol=0.05)


def test_feature_spec_describes_the_data():
    spec = TINY.feature_spec()
    assert spec.categorical_names == tuple(TINY_VOCAB)
    assert spec.vocab_sizes == TINY_VOCAB
    assert spec.num_dense == TINY.num_dense
    assert FeatureSpec.from_config(spec.get_config()) == spec


# -- popularity -------------------------------------------------------------


def test_ids_follow_a_zipf_law(large_sample):
    counts = np.bincount(
        large_sample.features["user_id"], minlength=TINY_VOCAB["user_id"]
    )
    # Id == popularity rank: id 0 is the most frequent, far above the median.
    assert counts.argmax() == 0
    assert counts[0] > 20 * max(np.median(counts), 1.0)
    expected = zipf_probabilities(TINY_VOCAB["user_id"], TINY.zipf_exponent)
    np.testing.assert_allclose(counts[:5] / counts.sum(), expected[:5], rtol=0.1)


def test_zipf_exponent_zero_is_uniform():
    uniform = dataclasses.replace(TINY, zipf_exponent=0.0)
    counts = np.bincount(generate_examples(uniform).features["device"], minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), 0.25, atol=0.04)


# -- click model ------------------------------------------------------------


def test_tiny_config_ctr_and_ground_truth_auc(large_sample):
    assert 0.17 < large_sample.labels.mean() < 0.23  # base_ctr=0.2
    assert 0.75 < _roc_auc(large_sample.labels, large_sample.true_logits) < 0.9


def test_default_config_ctr_and_ground_truth_auc():
    examples = generate_examples(SyntheticCTRConfig(), "test", num_examples=30_000)
    assert 0.1 < examples.labels.mean() < 0.3
    assert 0.75 < _roc_auc(examples.labels, examples.true_logits) < 0.87


def test_logit_scale_controls_difficulty():
    sharp = generate_examples(
        dataclasses.replace(TINY, logit_scale=3.0), num_examples=10_000
    )
    flat = generate_examples(
        dataclasses.replace(TINY, logit_scale=0.5), num_examples=10_000
    )
    assert (
        _roc_auc(sharp.labels, sharp.true_logits)
        > _roc_auc(flat.labels, flat.true_logits) + 0.1
    )


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_examples", 0),
        ("num_eval_examples", -1),
        ("num_dense", 0),
        ("latent_dim", 1.5),
        ("chunk_size", 0),
        ("seed", -1),
        ("world_seed", -3),
        ("zipf_exponent", -0.5),
        ("zipf_exponent", float("nan")),
        ("base_ctr", 1.0),
        ("base_ctr", 0),
        ("logit_scale", 0.0),
        ("interaction_weight", -1.0),
        ("dense_latent_correlation", 1.0),
    ],
)
def test_bad_config_values_raise(field, value):
    with pytest.raises(ValueError, match=f"Received: {field}="):
        dataclasses.replace(TINY, **{field: value})


def test_bad_vocab_and_exponent_mappings_raise():
    with pytest.raises(ValueError, match="Received: vocab_size=0"):
        dataclasses.replace(TINY, vocab_sizes={"user_id": 0})
    with pytest.raises(ValueError, match="Received: categorical_names="):
        dataclasses.replace(TINY, vocab_sizes={"dense": 3})
    with pytest.raises(ValueError, match="Received: categorical="):
        dataclasses.replace(TINY, vocab_sizes={})
    with pytest.raises(ValueError, match="Received: zipf_exponent="):
        dataclasses.replace(TINY, zipf_exponent={"user_id": 1.0})
    with pytest.raises(ValueError, match="Received: first_order_weight=0"):
        dataclasses.replace(
            TINY, first_order_weight=0, interaction_weight=0, dense_weight=0
        )


def test_per_field_exponents_are_used():
    exponents = {name: 1.0 for name in TINY_VOCAB} | {"hour": 0.0}
    config = dataclasses.replace(TINY, zipf_exponent=exponents)
    assert config.exponent_for("hour") == 0.0 and config.exponent_for("user_id") == 1.0


def test_bad_call_arguments_raise():
    with pytest.raises(ValueError, match="Received: split='dev'"):
        make_dataset(TINY, "dev")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        make_dataset(TINY, batch_size=0)
    with pytest.raises(ValueError, match="Received: num_examples=0"):
        generate_examples(TINY, num_examples=0)
    with pytest.raises(ValueError, match="Received: name=''"):
        CategoricalFeature("", 3)
