"""Tests for the MovieLens loader, on TFDS mock data (no network needed).

``tfds.testing.mock_data`` runs the real ``tfds.load`` code path but yields
random examples of the dataset's feature spec: ids are random strings (all
distinct), ``user_rating`` and ``bucketized_user_age`` are uniform floats in
[0, 1), ``timestamp`` small integers and ``movie_genres`` random lists.  So
the binary label is checked with ``positive_rating=0.5`` there, and
realistic hand-written ratings go through ``as_dataset_fn``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_smelu.data import load_dataset, movielens
from tf_smelu.data.features import DENSE_FEATURE_NAME
from tf_smelu.data.movielens import (
    CATEGORICAL_FEATURE_NAMES,
    DENSE_FEATURE_NAMES,
    MovieLensUnavailableError,
    load_movielens,
)
from tf_smelu.models import build_model

NUM_MOCK_EXAMPLES = 200
VARIANTS = ["100k", "1m"]


@pytest.fixture(scope="module")
def mock_movielens():
    with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES):
        yield


def _realistic_ratings(count: int = 80) -> list[dict]:
    """Ratings with real-looking values: 1-5 stars, some movies without genre."""
    return [
        {
            "user_id": f"{index % 7}".encode(),
            "movie_id": f"{100 + index % 11}".encode(),
            "movie_genres": [] if index % 6 == 0 else [index % 21, 3],
            "user_rating": float(1 + index % 5),
            "timestamp": 880_000_000 + 3_600 * index,
            "bucketized_user_age": float((1, 18, 25, 35)[index % 4]),
            "user_occupation_label": index % 22,
            "user_gender": index % 3 == 0,
        }
        for index in range(count)
    ]


def _realistic_as_dataset(self, split, decoders=None, read_config=None, count=80, **kwargs):
    """Replaces the random TFDS mock examples by :func:`_realistic_ratings`."""
    del self, split, decoders, read_config, kwargs
    scalar = {
        "user_id": tf.string,
        "movie_id": tf.string,
        "user_rating": tf.float32,
        "timestamp": tf.int64,
        "bucketized_user_age": tf.float32,
        "user_occupation_label": tf.int64,
        "user_gender": tf.bool,
    }
    signature = {name: tf.TensorSpec([], dtype) for name, dtype in scalar.items()}
    signature["movie_genres"] = tf.TensorSpec([None], tf.int64)
    return tf.data.Dataset.from_generator(
        lambda: iter(_realistic_ratings(count)), output_signature=signature
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_examples_match_the_model_interface(mock_movielens, variant):
    loaded = load_movielens(variant, seed=0)
    spec = loaded.feature_spec
    assert spec.categorical_names == CATEGORICAL_FEATURE_NAMES
    assert spec.num_dense == len(DENSE_FEATURE_NAMES) and loaded.dense_names == DENSE_FEATURE_NAMES
    assert loaded.item_field == "movie_id"
    assert len(loaded.train) + len(loaded.test) == NUM_MOCK_EXAMPLES
    assert 0 < len(loaded.test) < 0.25 * NUM_MOCK_EXAMPLES
    for examples in (loaded.train, loaded.test):
        assert set(examples.features) == {*CATEGORICAL_FEATURE_NAMES, DENSE_FEATURE_NAME}
        for field, vocab_size in spec.vocab_sizes.items():
            ids = examples.features[field]
            assert ids.dtype == np.int64 and ids.shape == (len(examples),)
            assert ids.min() >= 0 and ids.max() < vocab_size
        dense = examples.features[DENSE_FEATURE_NAME]
        assert dense.dtype == np.float32 and dense.shape == (len(examples), 3)
        assert examples.labels.dtype == np.float32
        assert np.all(np.isnan(examples.true_logits))
    # Standardised with training statistics.
    np.testing.assert_allclose(loaded.train.features[DENSE_FEATURE_NAME].mean(0), 0, atol=1e-5)
    # Mock ratings are < 1 star, so nothing reaches the default 4 stars.
    assert np.all(loaded.train.labels == 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_binary_label_thresholds_the_regression_label(mock_movielens, variant):
    ratings = load_movielens(variant, label="rating", seed=1)
    binary = load_movielens(variant, label="binary", positive_rating=0.5, seed=1)
    for split in ("train", "test"):
        rating_split, binary_split = getattr(ratings, split), getattr(binary, split)
        np.testing.assert_array_equal(
            rating_split.features["user_id"], binary_split.features["user_id"]
        )
        np.testing.assert_array_equal(
            binary_split.labels, (rating_split.labels >= 0.5).astype(np.float32)
        )
    assert 0 < binary.train.labels.mean() < 1
    assert len(np.unique(ratings.train.labels)) > 2


def test_split_is_deterministic_seeded_and_capped(mock_movielens):
    first = load_movielens("100k", seed=3)
    again = load_movielens("100k", seed=3)
    other = load_movielens("100k", seed=4)
    for name, values in first.train.features.items():
        np.testing.assert_array_equal(values, again.train.features[name])
    np.testing.assert_array_equal(first.test.labels, again.test.labels)
    assert not np.array_equal(
        first.train.features[DENSE_FEATURE_NAME][:20],
        other.train.features[DENSE_FEATURE_NAME][:20],
    )
    capped = load_movielens("100k", seed=3, max_train_examples=50, max_test_examples=5)
    assert (len(capped.train), len(capped.test)) == (50, 5)


def test_vocabulary_is_built_from_the_training_split(mock_movielens):
    loaded = load_movielens("1m", seed=0)
    user_vocab = loaded.feature_spec.vocab_sizes["user_id"]
    # Mock user ids are all distinct: every training user has its own id and
    # every test user is out of vocabulary (the last id).
    assert user_vocab == len(loaded.train) + 1
    assert np.all(loaded.test.features["user_id"] == user_vocab - 1)
    assert sorted(loaded.train.features["user_id"]) == list(range(len(loaded.train)))


def test_realistic_ratings_default_label_and_missing_genres():
    with tfds.testing.mock_data(as_dataset_fn=_realistic_as_dataset):
        binary = load_movielens("100k", test_fraction=0.25, seed=0)
        ratings = load_movielens("100k", label="rating", test_fraction=0.25, seed=0)
    np.testing.assert_array_equal(binary.train.labels, ratings.train.labels >= 4)
    assert set(np.unique(ratings.train.labels)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    first_genres = {tuple(row["movie_genres"][:1]) or (-1,) for row in _realistic_ratings()}
    assert binary.feature_spec.vocab_sizes["movie_genre"] <= len(first_genres) + 1
    assert binary.feature_spec.vocab_sizes["user_id"] <= 7 + 1
    assert binary.feature_spec.vocab_sizes["user_age"] == 4 + 1


def test_dense_columns_are_timestamp_hour_and_weekday():
    monday_1pm = 4 * 86_400 + 13 * 3_600  # 1970-01-05 13:00 UTC was a Monday
    dense = movielens._dense_columns(np.array([0, monday_1pm]))
    np.testing.assert_array_equal(dense, [[0, 0, 3], [monday_1pm, 13, 0]])


@pytest.mark.parametrize(
    "raised, download, message",
    [
        (requests.exceptions.ConnectionError("Failed to resolve files.grouplens.org"), True,
         "no network access"),
        (AssertionError("could not find data"), False, "not prepared"),
    ],
)
def test_unavailable_data_gives_a_clear_error(monkeypatch, raised, download, message):
    def failing_load(*args, **kwargs):
        raise raised

    monkeypatch.setattr(tfds, "load", failing_load)
    with pytest.raises(MovieLensUnavailableError, match=message) as error:
        load_movielens("1m", download=download, data_dir="/tmp/no_such_tfds_dir")
    assert "movielens/1m-ratings" in str(error.value)
    assert "/tmp/no_such_tfds_dir" in str(error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "20m"}, "Received: variant='20m'"),
        ({"label": "stars"}, "Received: label='stars'"),
        ({"test_fraction": 0.0}, "Received: test_fraction=0.0"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_movielens(**kwargs)


@pytest.mark.parametrize("spec, variant", [("movielens_100k", "100k"), ("movielens_1m", "1m")])
def test_dataset_spec_selects_movielens(mock_movielens, spec, variant):
    loaded = load_dataset(spec, train_examples=60, eval_examples=10, seed=2)
    expected = load_movielens(variant, seed=2, max_train_examples=60, max_test_examples=10)
    assert (len(loaded.train), len(loaded.test)) == (60, 10)
    assert loaded.feature_spec == expected.feature_spec
    np.testing.assert_array_equal(loaded.train.labels, expected.train.labels)


def test_models_accept_the_examples(mock_movielens):
    loaded = load_movielens("100k")
    model = build_model("mlp", loaded.feature_spec, hidden_units=[8], embedding_dim=4)
    logits = model(loaded.test.features)
    assert logits.shape == (len(loaded.test), 1)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
