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

from tf_smelu.data import DATA_ERRORS, load_dataset, movielens
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
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
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


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
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


def _no_network(*args, **kwargs):
    raise requests.exceptions.ConnectionError("Failed to resolve 'files.grouplens.org'")


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def _fake_tfds_load(calls: list[bool], on_download=None):
    """`tfds.load` of data that is not prepared; `on_download` runs for download=True."""

    def load(name, *, download, data_dir=None, **kwargs):
        calls.append(download)
        if download and on_download is not None:
            on_download(data_dir)
        raise AssertionError(f"Dataset {name}: could not find data in {data_dir}.")

    return load


@pytest.mark.parametrize("through_load_dataset", [False, True])
def test_offline_first_use_fails_fast_and_writes_nothing(monkeypatch, tmp_path,
                                                          through_load_dataset):
    calls: list[bool] = []
    monkeypatch.setattr(tfds, "load", _fake_tfds_load(calls))
    monkeypatch.setattr(requests, "head", _no_network)
    data_dir = tmp_path / "tfds"
    with pytest.raises(MovieLensUnavailableError) as raised:
        if through_load_dataset:
            load_dataset("movielens_100k", data_dir=data_dir)
        else:
            load_movielens("100k", data_dir=data_dir)
    assert calls == [False]  # TFDS never started its minutes of download retries
    assert not data_dir.exists()
    message = str(raised.value)
    for part in ("'movielens/100k-ratings'", "ml-100k.zip cannot be reached",
                 "ConnectionError", "nothing was written", "--data_dir", "TFDS_DATA_DIR",
                 "tfds.load('movielens/100k-ratings', data_dir='DIR')", str(data_dir)):
        assert part in message
    assert isinstance(raised.value, DATA_ERRORS) and "\n" not in message


def test_an_error_status_counts_as_unreachable(monkeypatch, tmp_path):
    calls: list[bool] = []
    monkeypatch.setattr(tfds, "load", _fake_tfds_load(calls))
    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: _Response(503))
    with pytest.raises(MovieLensUnavailableError, match="HTTP status 503"):
        load_movielens("1m", data_dir=tmp_path)
    assert calls == [False]


@pytest.mark.parametrize("data_dir_existed", [False, True])
def test_a_failed_download_leaves_nothing_behind(monkeypatch, tmp_path, data_dir_existed):
    data_dir = tmp_path / "tfds"
    kept = [data_dir / "downloads" / "other.zip", data_dir / "movielens" / "old" / "x.json"]
    if data_dir_existed:
        for path in kept:
            path.parent.mkdir(parents=True)
            path.write_text("kept")

    def partial_download(location):
        # What TFDS leaves after a failed download (seen with TFDS 4.9).
        for path in ("downloads/movielens/ml-100k.zip.tmp.1f/part",
                     "movielens/100k-ratings/incomplete.ZE46VK_0.1.1/x",
                     "movielens/.config/metadata.json"):
            (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / path).write_text("partial")
        raise requests.exceptions.ConnectionError("connection reset")

    calls: list[bool] = []
    monkeypatch.setattr(tfds, "load", _fake_tfds_load(calls, partial_download))
    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: _Response(200))
    with pytest.raises(MovieLensUnavailableError, match="downloading and preparing it failed"):
        load_movielens("100k", data_dir=data_dir)
    assert calls == [False, True]
    if data_dir_existed:
        left = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())
        assert left == ["downloads/other.zip", "movielens/old/x.json"]
    else:
        assert not data_dir.exists()


def test_without_download_nothing_touches_the_network(monkeypatch, tmp_path):
    calls: list[bool] = []
    monkeypatch.setattr(tfds, "load", _fake_tfds_load(calls))
    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: pytest.fail("network used"))
    with pytest.raises(MovieLensUnavailableError, match="not prepared under data_dir and "
                       "download=False") as raised:
        load_movielens("1m", download=False, data_dir=tmp_path / "none")
    assert calls == [False] and str(tmp_path / "none") in str(raised.value)


def test_a_prepared_copy_needs_no_network(mock_movielens, monkeypatch):
    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: pytest.fail("network used"))
    loaded = load_dataset("movielens_100k", train_examples=50, eval_examples=10,
                          label_threshold=0.5)
    assert len(loaded.train) == 50
    assert loaded.schema["label_column"] == "user_rating"
    assert loaded.schema["label_threshold"] == 0.5
    assert loaded.schema["decisions"]["label_threshold"] == "given"


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
