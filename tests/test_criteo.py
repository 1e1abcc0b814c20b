"""Tests for the Criteo-format file loaders and the synthetic Criteo writer."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import tensorflow as tf

from tf_smelu.data import criteo, load_dataset
from tf_smelu.data.criteo import (
    CATEGORICAL_FEATURE_NAMES,
    INTEGER_FEATURE_NAMES,
    criteo_dataset,
    criteo_feature_spec,
    load_criteo,
    read_criteo_file,
)
from tf_smelu.data.criteo_synthetic import write_synthetic_criteo_file
from tf_smelu.data.features import DENSE_FEATURE_NAME
from tf_smelu.data.tabular import MalformedRowError, SkippedRows

NUM_BUCKETS = 1000
SYNTHETIC_ROWS = 1500


def _line(label="0", integers=("",) * 13, categoricals=("",) * 26) -> str:
    return "\t".join([label, *integers, *categoricals]) + "\n"


def _write(path, lines: list[str], compress: bool = False):
    data = "".join(lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _integers(*values: str) -> tuple[str, ...]:
    return tuple(values) + ("",) * (13 - len(values))


def _categoricals(*values: str) -> tuple[str, ...]:
    return tuple(values) + ("",) * (26 - len(values))


HAND_WRITTEN = [
    _line("1", _integers("5", "-3", "", "0", "1"), _categoricals("68fd1e64", "", "a")),
    _line("0"),  # every feature missing
    _line("0", ("7",) * 13, ("05db9164",) * 26),
]


def _sorted_rows(features: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """The rows as a float matrix in a canonical order, to compare row sets."""
    matrix = np.concatenate(
        [
            labels[:, None],
            features[DENSE_FEATURE_NAME],
            np.stack([features[name] for name in CATEGORICAL_FEATURE_NAMES], axis=1),
        ],
        axis=1,
    ).astype(np.float64)
    return matrix[np.lexsort(matrix.T[::-1])]


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory) -> tuple[str, str]:
    """The same synthetic rows, plain and gzip (written once: ~2 s each)."""
    directory = tmp_path_factory.mktemp("criteo")
    return (
        write_synthetic_criteo_file(directory / "train.txt", SYNTHETIC_ROWS, seed=3),
        write_synthetic_criteo_file(directory / "train.gz", SYNTHETIC_ROWS, seed=3, gzip=True),
    )


@pytest.fixture(scope="module")
def synthetic_file(synthetic_files) -> str:
    return synthetic_files[0]


# --------------------------------------------------------------------------
# Parsing.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file_name, compress",
    [("plain.txt", False), ("packed.gz", True), ("gzip_without_suffix.txt", True)],
)
def test_hand_written_rows_parse_to_expected_values(tmp_path, file_name, compress):
    path = _write(tmp_path / file_name, HAND_WRITTEN, compress)
    (chunk,) = read_criteo_file(path, num_buckets=NUM_BUCKETS)

    np.testing.assert_array_equal(chunk.line_numbers, [1, 2, 3])
    np.testing.assert_array_equal(chunk.labels, [1.0, 0.0, 0.0])
    expected_first = np.zeros(13, np.float32)
    expected_first[:5] = np.log1p([5, 0, 0, 0, 1])  # -3 -> max(-3, 0); "" -> 0
    np.testing.assert_allclose(chunk.dense[0], expected_first, rtol=1e-6)
    np.testing.assert_array_equal(chunk.dense[1], np.zeros(13))
    np.testing.assert_allclose(chunk.dense[2], np.full(13, np.log1p(7)), rtol=1e-6)
    assert chunk.dense.dtype == np.float32

    def bucket(value: str) -> int:
        return int(tf.strings.to_hash_bucket_fast([value], NUM_BUCKETS)[0])

    assert chunk.categorical["C1"][0] == bucket("68fd1e64")
    assert chunk.categorical["C2"][0] == bucket("")  # missing has its own bucket
    assert chunk.categorical["C3"][0] == bucket("a")
    assert chunk.categorical["C26"][2] == bucket("05db9164")
    assert all(ids.dtype == np.int64 for ids in chunk.categorical.values())


def test_hashing_is_stable_across_versions(tmp_path):
    # Pinned values: a change would silently remap every trained embedding.
    row = _line("0", categoricals=_categoricals("68fd1e64", "", "a"))
    path = _write(tmp_path / "pinned.txt", [row])
    (chunk,) = read_criteo_file(path, num_buckets=2**15)
    assert [int(chunk.categorical[name][0]) for name in ("C1", "C2", "C3")] == [19078, 16463, 30179]


def test_chunks_split_rows_in_file_order(tmp_path):
    path = _write(tmp_path / "rows.txt", HAND_WRITTEN * 3)
    chunks = list(read_criteo_file(path, chunk_rows=4))
    assert [len(chunk) for chunk in chunks] == [4, 4, 1]
    np.testing.assert_array_equal(
        np.concatenate([chunk.line_numbers for chunk in chunks]), np.arange(1, 10)
    )


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("0\t1\t2\n", "expected 40 columns"),
        (_line("0", categoricals=("x",) * 25), "found 39"),
        (_line("2"), "must be 0 or 1. Received: label='2'"),
        (_line("yes"), "not a finite number. Received: label='yes'"),
        (_line("1", _integers("3", "abc")), "I2 is not an integer. Received: I2='abc'"),
        (_line("1", _integers("1.5")), "I1 is not an integer"),
    ],
)
def test_malformed_row_error_names_file_line_and_problem(tmp_path, bad_line, problem):
    path = _write(tmp_path / "broken_file.tsv", [HAND_WRITTEN[0], HAND_WRITTEN[1], bad_line])
    with pytest.raises(MalformedRowError, match="broken_file.tsv at line 3") as raised:
        load_criteo(path)
    assert problem in str(raised.value)
    assert raised.value.line_number == 3


def test_skip_mode_counts_malformed_rows(tmp_path):
    lines = [HAND_WRITTEN[0], _line("9"), *HAND_WRITTEN[1:], "bad\n", *HAND_WRITTEN * 3]
    path = _write(tmp_path / "some_bad.txt", lines)
    skipped = SkippedRows(str(path))
    chunks = list(read_criteo_file(path, on_error="skip", skipped=skipped))
    assert sum(len(chunk) for chunk in chunks) == len(lines) - 2
    assert skipped.count == 2 and skipped.line_numbers == [2, 5]
    assert "Skipped 2 malformed row(s)" in skipped.summary()
    assert "line 2: label column 'label' must be 0 or 1" in skipped.summary()

    loaded = load_criteo(path, on_error="skip", test_fraction=0.5)
    assert loaded.skipped_rows.count == 2
    assert len(loaded.train) + len(loaded.test) == len(lines) - 2


def test_skipped_rows_keep_only_the_first_few_locations(tmp_path):
    path = _write(tmp_path / "many_bad.txt", [HAND_WRITTEN[0]] * 2 + ["bad\n"] * 8)
    skipped = SkippedRows(str(path))
    (chunk,) = read_criteo_file(path, on_error="skip", skipped=skipped)
    assert len(chunk) == 2 and skipped.count == 8
    assert skipped.line_numbers == [3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"on_error": "ignore"}, "Received: on_error='ignore'"),
        ({"num_buckets": 0}, "Received: num_buckets=0"),
        ({"num_buckets": {"C1": 10}}, "exactly the keys C1..C26"),
        ({"test_fraction": 1.0}, "Received: test_fraction=1.0"),
        ({"max_train_examples": 0}, "Received: max_train_examples=0"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path, kwargs, message):
    path = _write(tmp_path / "ok.txt", HAND_WRITTEN)
    with pytest.raises(ValueError, match=message):
        load_criteo(path, **kwargs)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: path=.*nowhere.txt"):
        load_criteo(tmp_path / "nowhere.txt")


# --------------------------------------------------------------------------
# Synthetic file, in-memory and streaming loaders.
# --------------------------------------------------------------------------


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_synthetic_writer_gzip_holds_the_same_valid_rows(synthetic_files):
    plain, packed = synthetic_files
    with open(packed, "rb") as stream:
        packed_bytes = stream.read()
    assert packed_bytes[:2] == b"\x1f\x8b"
    with open(plain, encoding="utf-8") as stream:
        text = stream.read()
    assert gzip.decompress(packed_bytes).decode("utf-8") == text  # same seed, same rows
    lines = text.splitlines()
    assert len(lines) == SYNTHETIC_ROWS
    assert all(len(line.split("\t")) == 40 for line in lines)
    assert any("\t\t" in line for line in lines)  # some fields are missing


def test_gzip_and_plain_files_load_identically(synthetic_files):
    plain, packed = (load_criteo(path, seed=2) for path in synthetic_files)
    for name, values in plain.train.features.items():
        np.testing.assert_array_equal(values, packed.train.features[name])
    np.testing.assert_array_equal(plain.test.labels, packed.test.labels)


def test_load_criteo_matches_the_interface_of_the_synthetic_data(synthetic_file):
    loaded = load_criteo(synthetic_file, num_buckets=NUM_BUCKETS, seed=5)
    spec = loaded.feature_spec
    assert spec == criteo_feature_spec(NUM_BUCKETS)
    assert spec.categorical_names == CATEGORICAL_FEATURE_NAMES
    assert loaded.dense_names == INTEGER_FEATURE_NAMES and spec.num_dense == 13
    assert len(loaded.train) + len(loaded.test) == SYNTHETIC_ROWS
    assert 0.05 < len(loaded.test) / SYNTHETIC_ROWS < 0.15
    for examples in (loaded.train, loaded.test):
        assert set(examples.features) == {*CATEGORICAL_FEATURE_NAMES, DENSE_FEATURE_NAME}
        for name in CATEGORICAL_FEATURE_NAMES:
            ids = examples.features[name]
            assert ids.dtype == np.int64 and ids.shape == (len(examples),)
            assert 0 <= ids.min() and ids.max() < NUM_BUCKETS
        dense = examples.features[DENSE_FEATURE_NAME]
        assert dense.dtype == np.float32 and dense.shape == (len(examples), 13)
        assert dense.min() >= 0 and np.all(np.isfinite(dense))
        assert set(np.unique(examples.labels)) == {0.0, 1.0}
        assert np.all(np.isnan(examples.true_logits))
    assert 0.1 < loaded.train.labels.mean() < 0.35
    assert loaded.skipped_rows.count == 0


def test_load_criteo_is_deterministic_and_seeded(synthetic_file):
    first = load_criteo(synthetic_file, seed=1)
    second = load_criteo(synthetic_file, seed=1)
    other = load_criteo(synthetic_file, seed=2)
    for name, values in first.train.features.items():
        np.testing.assert_array_equal(values, second.train.features[name])
    assert len(first.test) != len(other.test) or not np.array_equal(
        first.test.labels, other.test.labels
    )


def test_caps_take_exactly_that_many_rows(synthetic_file):
    loaded = load_criteo(synthetic_file, max_train_examples=300, max_test_examples=40)
    assert (len(loaded.train), len(loaded.test)) == (300, 40)


@pytest.mark.parametrize("split", ["train", "test"])
def test_streaming_split_has_the_rows_of_the_in_memory_split(synthetic_file, split):
    loaded = load_criteo(synthetic_file, num_buckets=NUM_BUCKETS, seed=4)
    dataset = criteo_dataset(
        synthetic_file, split, batch_size=256, num_buckets=NUM_BUCKETS, seed=4, chunk_rows=500
    )
    batches = list(dataset.as_numpy_iterator())
    features = {
        name: np.concatenate([batch[0][name] for batch in batches]) for name in batches[0][0]
    }
    labels = np.concatenate([batch[1] for batch in batches])
    expected = getattr(loaded, split)
    np.testing.assert_array_equal(
        _sorted_rows(features, labels), _sorted_rows(expected.features, expected.labels)
    )


def test_streaming_unbatched_elements_are_single_examples(synthetic_file):
    features, label = next(iter(criteo_dataset(synthetic_file)))
    assert label.shape == () and features["C1"].shape == ()
    assert features[DENSE_FEATURE_NAME].shape == (13,)


def test_streaming_reports_malformed_rows_with_file_and_line(tmp_path):
    path = _write(tmp_path / "stream_broken.txt", [HAND_WRITTEN[0], "0\tx\n"])
    with pytest.raises(tf.errors.OpError, match="stream_broken.txt at line 2"):
        list(criteo_dataset(path))


def test_dataset_spec_selects_a_criteo_file(synthetic_file):
    loaded = load_dataset(
        f"criteo:{synthetic_file}", train_examples=200, eval_examples=30, seed=0
    )
    assert (len(loaded.train), len(loaded.test)) == (200, 30)
    assert loaded.feature_spec == criteo_feature_spec(criteo.DEFAULT_NUM_BUCKETS)
