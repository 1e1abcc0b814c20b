"""Tests for the CSV loader, the dataset-spec selector and shared helpers."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from tf_smelu.data import (
    DATASET_KINDS,
    DENSE_FEATURE_NAME,
    DatasetSpec,
    load_dataset,
    parse_dataset_spec,
    popularity_buckets,
    vocab_cap,
)
from tf_smelu.data.csv_data import CONSTANT_DENSE_NAME, load_csv
from tf_smelu.data.encoding import Vocabulary
from tf_smelu.data.tabular import MalformedRowError, SplitConfig

NUM_ROWS = 60
HEADER = "user,city,price,age,label"


def _data_lines(num_rows: int = NUM_ROWS) -> list[str]:
    """Rows with a string id, a string city, two numbers (one sometimes empty)."""
    cities = ["paris", "rome", "oslo"]
    return [
        f"u{index % 9},{cities[index % 3]},{index * 1.5:.1f},"
        f"{'' if index % 10 == 0 else 20 + index % 7},{index % 2}"
        for index in range(num_rows)
    ]


def _write_csv(tmp_path, lines: list[str], name: str = "data.csv", compress: bool = False):
    path = tmp_path / name
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def csv_path(tmp_path):
    return _write_csv(tmp_path, [HEADER, *_data_lines()])


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_column_types_are_inferred(tmp_path, compress):
    path = _write_csv(tmp_path, [HEADER, *_data_lines()], "data.csv.gz", compress)
    loaded = load_csv(path, test_fraction=0.25)
    assert loaded.feature_spec.categorical_names == ("user", "city")
    assert loaded.dense_names == ("price", "age") and loaded.feature_spec.num_dense == 2
    # Training vocabularies plus the out-of-vocabulary id.
    assert loaded.feature_spec.vocab_sizes == {"user": 10, "city": 4}
    assert len(loaded.train) + len(loaded.test) == NUM_ROWS
    for examples in (loaded.train, loaded.test):
        assert set(examples.features) == {"user", "city", DENSE_FEATURE_NAME}
        assert examples.features["user"].dtype == np.int64
        assert examples.features[DENSE_FEATURE_NAME].dtype == np.float32
        assert set(np.unique(examples.labels)) <= {0.0, 1.0}
        assert np.all(np.isfinite(examples.features[DENSE_FEATURE_NAME]))


def test_dense_columns_are_standardised_with_training_statistics(csv_path):
    loaded = load_csv(csv_path, test_fraction=0.25, seed=1)
    price = loaded.train.features[DENSE_FEATURE_NAME][:, 0]
    np.testing.assert_allclose([price.mean(), price.std()], [0.0, 1.0], atol=1e-5)
    # Missing ages become the training mean, i.e. 0 after standardising.
    raw_ages = np.array([line.split(",")[3] for line in _data_lines()])
    assert np.sum(loaded.train.features[DENSE_FEATURE_NAME][:, 1] == 0) >= 1
    assert np.sum(raw_ages == "") == NUM_ROWS // 10


def test_vocabulary_ids_are_training_popularity_ranks():
    vocabulary = Vocabulary.fit(np.array(["b", "a", "b", "c", "b", "a"], dtype=object))
    assert vocabulary.vocab_size == 4
    np.testing.assert_array_equal(vocabulary.encode(np.array(["b", "a", "c", "new"])), [0, 1, 2, 3])


def test_explicit_columns_numeric_ids_and_constant_dense(tmp_path):
    lines = ["user_id,item_id,clicked", *[f"{i % 5},{i % 4},{i % 2}" for i in range(40)]]
    path = _write_csv(tmp_path, lines)
    # Inferred, numeric ids look dense, and a model needs a categorical field.
    with pytest.raises(ValueError, match="dense_columns=\\['user_id', 'item_id'\\]"):
        load_csv(path, label_column="clicked")

    loaded = load_csv(
        path, label_column="clicked", categorical_columns=["user_id", "item_id"],
        item_column="item_id", test_fraction=0.3,
    )
    assert loaded.feature_spec.categorical_names == ("user_id", "item_id")
    assert loaded.dense_names == (CONSTANT_DENSE_NAME,) and loaded.item_field == "item_id"
    assert np.all(loaded.train.features[DENSE_FEATURE_NAME] == 0)


def test_hash_buckets_replace_the_vocabulary(csv_path):
    loaded = load_csv(csv_path, num_hash_buckets=7, test_fraction=0.25)
    assert loaded.feature_spec.vocab_sizes == {"user": 7, "city": 7}
    assert loaded.train.features["user"].max() < 7


def test_label_threshold_binarises_other_values(tmp_path):
    lines = ["item,rating", *[f"i{i % 3},{1 + i % 5}" for i in range(40)]]
    path = _write_csv(tmp_path, lines)
    with pytest.raises(MalformedRowError, match=r"line 3: .*must be 0 or 1 \(pass label_threshold"):
        load_csv(path, label_column="rating")
    loaded = load_csv(path, label_column="rating", label_threshold=4, test_fraction=0.3)
    assert 0.3 < loaded.train.labels.mean() < 0.5  # 2 of 5 ratings are >= 4


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("u1,paris,1.0,30", "expected 5 columns"),
        ("u1,paris,1.0,30,1,extra", "found 6"),
        ("u1,paris,1.0,30,yes", "not a finite number. Received: label='yes'"),
        ("u1,paris,1.0,30,2", "must be 0 or 1"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad_line, problem):
    lines = [HEADER, *_data_lines(5), bad_line, *_data_lines(5)]
    path = _write_csv(tmp_path, lines, "ragged.csv")
    with pytest.raises(MalformedRowError, match="ragged.csv at line 7") as raised:
        load_csv(path)
    assert problem in str(raised.value)


def test_non_numeric_value_in_a_dense_column_is_reported(tmp_path):
    lines = [HEADER, *_data_lines(5), "u1,paris,cheap,30,1"]
    path = _write_csv(tmp_path, lines, "prices.csv")
    with pytest.raises(MalformedRowError, match="prices.csv at line 7: dense column 'price'"):
        load_csv(path, categorical_columns=["user"], dense_columns=["price"])
    # Inference instead makes `price` categorical.
    inferred = load_csv(_write_csv(tmp_path, [HEADER, *_data_lines(), lines[-1]]))
    assert "price" in inferred.feature_spec.categorical_names


def test_skip_mode_counts_malformed_rows(tmp_path):
    lines = [HEADER, *_data_lines(30), "too,few", *_data_lines(30), "u1,rome,1,2,7"]
    loaded = load_csv(_write_csv(tmp_path, lines), on_error="skip", test_fraction=0.25)
    assert loaded.skipped_rows.count == 2
    assert loaded.skipped_rows.line_numbers == [32, 63]
    assert len(loaded.train) + len(loaded.test) == 60


def test_missing_label_column_lists_the_available_columns(csv_path):
    available = r"Available columns: \['user', 'city', 'price', 'age', 'label'\]"
    with pytest.raises(ValueError, match=available):
        load_csv(csv_path, label_column="click")
    with pytest.raises(ValueError, match="Received: categorical_columns=\\['town'\\]"):
        load_csv(csv_path, categorical_columns=["town"])


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "empty"),
        (["a,a,label", "1,2,0"], "unique, non-empty column names"),
    ],
)
def test_bad_headers_are_reported(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        load_csv(_write_csv(tmp_path, lines))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here.csv"):
        load_csv(tmp_path / "nothing_here.csv")


# --------------------------------------------------------------------------
# Dataset spec selector.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("synthetic", DatasetSpec("synthetic")),
        ("movielens_100k", DatasetSpec("movielens_100k")),
        ("movielens_1m", DatasetSpec("movielens_1m")),
        ("criteo:/data/day_0.gz", DatasetSpec("criteo", "/data/day_0.gz")),
        ("csv:/data/a.csv", DatasetSpec("csv", "/data/a.csv")),
        ("csv:/data/a.csv#clicked", DatasetSpec("csv", "/data/a.csv", "clicked")),
    ],
)
def test_dataset_specs_parse(spec, expected):
    assert parse_dataset_spec(spec) == expected
    assert DatasetSpec.parse(spec) == expected
    assert str(expected) == expected.to_text() == spec
    assert parse_dataset_spec(expected) is expected  # parsed once


ROUND_TRIP_SPECS = [
    DatasetSpec("synthetic"),
    DatasetSpec("movielens_100k"),
    DatasetSpec("movielens_1m"),
    DatasetSpec("criteo", "/data/day_0.gz"),
    DatasetSpec("criteo", "relative/dir:with#odd chars.tsv"),
    DatasetSpec("csv", "/data/a.csv"),
    DatasetSpec("csv", "data/a.csv", "clicked"),
    DatasetSpec("csv", "/data/with#hash.csv", "clicked"),
]


def test_every_kind_has_a_round_trip_case():
    assert {spec.kind for spec in ROUND_TRIP_SPECS} == set(DATASET_KINDS)


@pytest.mark.parametrize("spec", ROUND_TRIP_SPECS, ids=str)
def test_dataset_spec_text_parses_back_to_an_equal_spec(spec):
    assert DatasetSpec.parse(str(spec)) == spec
    assert parse_dataset_spec(spec.to_text()) == spec


def test_absolute_dataset_spec_resolves_only_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = DatasetSpec("csv", "data/a.csv", "clicked")
    assert spec.absolute() == DatasetSpec("csv", str(tmp_path / "data" / "a.csv"), "clicked")
    assert DatasetSpec.parse(str(spec.absolute())) == spec.absolute()
    assert DatasetSpec("synthetic").absolute() == DatasetSpec("synthetic")
    assert DatasetSpec("synthetic").is_synthetic
    assert not spec.is_synthetic


@pytest.mark.parametrize(
    "fields, message",
    [
        (("imagenet",), "Unknown dataset kind"),
        (("synthetic", "/x"), "takes no path"),
        (("criteo",), "needs a file path"),
        (("csv", ""), "needs a file path"),
        (("criteo", "/x", "label"), "only for csv"),
        (("csv", "/x", ""), "non-empty"),
        (("csv", "/x", "a#b"), "must not contain '#'"),
        (("csv", "/a#b.csv"), "needs an explicit label column"),
    ],
)
def test_dataset_specs_no_text_describes_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec(*fields)


@pytest.mark.parametrize(
    "spec, max_vocab_size, expected",
    [
        ("synthetic", None, None),
        ("synthetic", 0, None),
        ("synthetic", 50, 50),
        (DatasetSpec("synthetic"), 50, 50),
        ("criteo:/x.tsv", None, None),
        ("criteo:/x.tsv", 0, None),
        ("movielens_100k", 0, None),
    ],
)
def test_vocab_cap_zero_or_none_means_no_cap(spec, max_vocab_size, expected):
    assert vocab_cap(spec, max_vocab_size) == expected


@pytest.mark.parametrize(
    "spec, max_vocab_size, message",
    [
        ("criteo:/x.tsv", 100, "applies to synthetic data only. "
         "Received: dataset='criteo:/x.tsv', max_vocab_size=100"),
        ("csv:/x.csv#y", 1, "synthetic data only"),
        ("synthetic", -1, "non-negative integer. Received: max_vocab_size=-1"),
        ("criteo:/x.tsv", -1, "non-negative integer"),
        ("synthetic", 2.5, "non-negative integer"),
    ],
)
def test_vocab_cap_rejects_a_cap_of_real_data_and_negatives(spec, max_vocab_size, message):
    with pytest.raises(ValueError, match=message):
        vocab_cap(spec, max_vocab_size)
    with pytest.raises(ValueError, match=message):
        load_dataset(spec, max_vocab_size=max_vocab_size)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("imagenet", "Unknown dataset spec. Expected one of: synthetic, movielens_100k"),
        ("movielens", "Received: dataset='movielens'"),
        ("parquet:/x.parquet", "Unknown dataset spec"),
        ("criteo:", "needs a file path"),
        ("csv:/a.csv#", "label column after '#' is empty"),
    ],
)
def test_bad_dataset_specs_are_rejected(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_dataset_spec(spec)
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)


@pytest.mark.parametrize("label_in_spec", [False, True])
def test_dataset_spec_selects_a_csv_file(tmp_path, label_in_spec):
    lines = [line.replace("label", "clicked") for line in [HEADER]] + _data_lines()
    path = _write_csv(tmp_path, lines)
    if label_in_spec:
        loaded = load_dataset(f"csv:{path}#clicked", train_examples=30, eval_examples=3)
    else:
        loaded = load_dataset(
            f"csv:{path}", label_column="clicked", train_examples=30, eval_examples=3
        )
    assert (len(loaded.train), len(loaded.test)) == (30, 3)
    assert loaded.feature_spec.categorical_names == ("user", "city")


def test_dataset_spec_selects_synthetic_data():
    loaded = load_dataset("synthetic", train_examples=300, eval_examples=100, seed=1)
    assert (len(loaded.train), len(loaded.test)) == (300, 100)
    assert loaded.item_field == "item_id" and "item_id" in loaded.feature_spec.categorical_names
    assert np.all(np.isfinite(loaded.train.true_logits))


def test_load_dataset_takes_a_parsed_spec_and_a_zero_vocab_cap(tmp_path):
    path = _write_csv(tmp_path, [HEADER] + _data_lines())
    from_text = load_dataset(f"csv:{path}", train_examples=30, eval_examples=3)
    from_spec = load_dataset(
        DatasetSpec("csv", str(path)), train_examples=30, eval_examples=3, max_vocab_size=0
    )
    np.testing.assert_array_equal(from_spec.train.labels, from_text.train.labels)
    assert from_spec.feature_spec == from_text.feature_spec


def test_max_vocab_size_caps_synthetic_vocabularies():
    capped = load_dataset("synthetic", train_examples=200, eval_examples=50, max_vocab_size=30)
    assert max(capped.feature_spec.vocab_sizes.values()) == 30
    assert capped.feature_spec.vocab_sizes["device"] == 16  # smaller fields unchanged
    uncapped = load_dataset("synthetic", train_examples=200, eval_examples=50, max_vocab_size=0)
    assert uncapped.feature_spec.vocab_sizes["user_id"] == 100_000


# --------------------------------------------------------------------------
# Shared helpers: split and popularity groups.
# --------------------------------------------------------------------------


def test_split_depends_only_on_key_and_seed():
    keys = np.arange(1, 20_001)
    split = SplitConfig(test_fraction=0.2, seed=5)
    is_test = split.is_test(keys)
    assert abs(is_test.mean() - 0.2) < 0.02
    # A row's side does not depend on the other rows, and strings hash alike.
    np.testing.assert_array_equal(split.is_test(keys[::-1])[::-1], is_test)
    np.testing.assert_array_equal(split.is_test(keys.astype(str).astype(object)), is_test)
    assert not np.array_equal(SplitConfig(0.2, seed=6).is_test(keys), is_test)

    train_rows, test_rows = SplitConfig(0.2, 5, max_train_examples=100).rows(keys, "keys")
    assert len(train_rows) == 100 and len(test_rows) == is_test.sum()
    assert not is_test[train_rows].any() and is_test[test_rows].all()
    assert not np.all(np.diff(train_rows) > 0)  # shuffled


def test_split_with_an_empty_side_is_an_error():
    with pytest.raises(ValueError, match="test split of tiny is empty"):
        SplitConfig(test_fraction=0.01).rows(np.arange(3), "tiny")


def test_popularity_buckets_follow_training_traffic():
    # Id 0 carries 60% of the traffic, ids 1-2 the next 30%, id 3 10%.
    train_ids = np.array([0] * 6 + [1] * 2 + [2] + [3])
    np.testing.assert_array_equal(
        popularity_buckets(train_ids, np.array([0, 1, 2, 3, 9])), [0, 1, 1, 2, 2]
    )
    with pytest.raises(ValueError, match="traffic_quantiles"):
        popularity_buckets(train_ids, train_ids, (0.9, 0.5))
