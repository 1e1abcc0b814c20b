"""Tests for the TFRecord loader: plain and GZIP files, schemas, sampling, damage."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import tensorflow as tf

from tf_smelu.data import (
    DATA_ERRORS,
    DENSE_FEATURE_NAME,
    DataFileError,
    MalformedRecordError,
    describe_schema,
    load_dataset,
    load_tfrecord,
)
from tf_smelu.data import tfrecord as tfrecord_lib
from tf_smelu.data.sampling import ReservoirSample
from tf_smelu.models import build_model

NUM_RECORDS = 400


def _feature(value) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if values and isinstance(values[0], bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if values and isinstance(values[0], float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _serialize(features: dict) -> bytes:
    example = tf.train.Example(features=tf.train.Features(
        feature={name: _feature(value) for name, value in features.items()}))
    return example.SerializeToString()


def _record(index: int) -> dict:
    """One interaction: int64 ids, a bytes city, a float price (sometimes absent)."""
    features = {
        "user_id": index % 13,
        "item_id": (index * 7) % 31,
        "city": b"city%d" % (index % 5),
        "timestamp": 880_000_000 + 60 * index,
        "genres": [index % 3, 7],
        "label": index % 2,
    }
    if index % 20:
        features["price"] = 0.5 * index
    return features


def _write(path, records, compress: bool = False, serialized: bool = False):
    with tf.io.TFRecordWriter(str(path), options="GZIP" if compress else None) as writer:
        for record in records:
            writer.write(record if serialized else _serialize(record))
    return path


@pytest.fixture
def interactions(tmp_path):
    return _write(tmp_path / "interactions.tfrecord", [_record(i) for i in range(NUM_RECORDS)])


@pytest.mark.parametrize("compress", [False, True])
def test_plain_and_gzip_files_are_detected_and_read(tmp_path, compress):
    path = _write(tmp_path / "data.bin", [_record(i) for i in range(NUM_RECORDS)], compress)
    assert tfrecord_lib.compression_type(str(path)) == ("GZIP" if compress else "")
    loaded = load_dataset(f"tfrecord:{path}")
    assert len(loaded.train) + len(loaded.test) == NUM_RECORDS
    assert 0 < len(loaded.test) < 0.2 * NUM_RECORDS
    assert loaded.feature_spec.categorical_names == ("city", "item_id", "user_id")
    assert loaded.dense_names == ("price", "timestamp") and loaded.item_field == "item_id"
    for examples in (loaded.train, loaded.test):
        assert examples.features["user_id"].dtype == np.int64
        assert np.all(np.isfinite(examples.features[DENSE_FEATURE_NAME]))
        assert set(np.unique(examples.labels)) == {0.0, 1.0}
    assert loaded.feature_spec.vocab_sizes["city"] == 5 + 1
    np.testing.assert_allclose(loaded.train.features[DENSE_FEATURE_NAME].mean(0), 0, atol=1e-5)


def test_the_inferred_schema_is_recorded(interactions):
    schema = load_tfrecord(interactions).schema
    assert schema["decisions"]["columns"] == {
        "city": "inferred: bytes",
        "genres": "inferred: lists of up to 2 values, not supported",
        "item_id": "inferred: int64",
        "price": "inferred: float",
        "timestamp": "inferred: int64, time-like name",
        "user_id": "inferred: int64",
    }
    assert schema["ignored_columns"] == ["genres"]
    assert schema["missing_values"] == {"price": NUM_RECORDS // 20, "timestamp": 0}
    assert schema["rows_read"] == NUM_RECORDS and schema["label_column"] == "label"
    assert "missing values (dense, replaced by the training mean): price 20" in (
        describe_schema(schema))


def test_given_features_and_label_threshold(tmp_path):
    records = [{**_record(i), "stars": float(1 + i % 5)} for i in range(NUM_RECORDS)]
    path = _write(tmp_path / "ratings.tfrecord", records)
    loaded = load_dataset(
        f"tfrecord:{path}#stars", categorical_columns=["user_id", "timestamp"],
        dense_columns=["item_id"], label_threshold=4,
    )
    assert loaded.feature_spec.categorical_names == ("user_id", "timestamp")
    assert loaded.dense_names == ("item_id",)
    assert 0.3 < loaded.train.labels.mean() < 0.5  # 2 of 5 ratings are >= 4
    schema = loaded.schema
    assert (schema["label_column"], schema["label_threshold"]) == ("stars", 4.0)
    assert schema["ignored_columns"] == ["city", "genres", "label", "price"]
    with pytest.raises(MalformedRecordError, match=r"record index 1: label feature 'stars' "
                       r"must be 0 or 1 \(set --label_threshold"):
        load_dataset(f"tfrecord:{path}#stars")


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(label_column="click"), DataFileError,
         r"Column\(s\) \['click'\] not found in the first 400 records of .*set --label_column"),
        (dict(label_column="city"), DataFileError, "one int64 or float value per record"),
        (dict(categorical_columns=["town"]), DataFileError, "set --categorical_columns"),
        (dict(dense_columns=["city"]), DataFileError, "holds bytes and cannot be dense"),
        (dict(categorical_columns=["genres"]), DataFileError,
         "remove it from --categorical_columns"),
        (dict(dense_columns=["price"]), DataFileError, "no categorical feature column"),
    ],
)
def test_schema_problems_name_the_flag(interactions, options, error, message):
    with pytest.raises(error, match=message):
        load_tfrecord(interactions, **options)


def test_one_class_labels_and_a_bad_threshold_are_errors(interactions):
    with pytest.raises(DataFileError, match=r"Every label of .* is 1 \(400 rows\)"):
        load_tfrecord(interactions, label_column="user_id", label_threshold=0)
    with pytest.raises(ValueError, match="--label_threshold must be a finite number"):
        load_tfrecord(interactions, label_threshold=float("inf"))


def test_a_glob_reads_every_matching_file_once(tmp_path):
    _write(tmp_path / "part-0.tfrecord", [_record(i) for i in range(150)])
    _write(tmp_path / "part-1.tfrecord.gz", [_record(i) for i in range(150, 300)], compress=True)
    _write(tmp_path / "other.txt", [_record(0)])
    loaded = load_dataset(f"tfrecord:{tmp_path}/part-*")
    assert loaded.schema["rows_read"] == 300
    assert len(loaded.train) + len(loaded.test) == 300


def test_caps_keep_a_seeded_uniform_sample(tmp_path):
    # Label 1 in the second half of the file only: a sample of the first
    # rows would hold no positive.
    records = [{**_record(i), "label": int(i >= NUM_RECORDS // 2)} for i in range(NUM_RECORDS)]
    path = _write(tmp_path / "sorted.tfrecord", records)
    first = load_tfrecord(path, max_train_examples=50, max_test_examples=5, seed=3)
    again = load_tfrecord(path, max_train_examples=50, max_test_examples=5, seed=3)
    other = load_tfrecord(path, max_train_examples=50, max_test_examples=5, seed=4)
    assert (len(first.train), len(first.test)) == (50, 5)
    assert first.schema["rows_read"] == NUM_RECORDS  # the whole stream was read
    assert 0.3 < first.train.labels.mean() < 0.7
    for name, values in first.train.features.items():
        np.testing.assert_array_equal(values, again.train.features[name])
    assert not np.array_equal(first.train.labels, other.train.labels)


def test_the_reservoir_is_uniform_over_positions():
    # Every position of a 50-row stream is kept with probability 10/50.
    kept = np.zeros(50)
    for seed in range(400):
        reservoir = ReservoirSample(10, np.random.default_rng(seed))
        for start in range(0, 50, 7):  # uneven batches
            rows = np.arange(start, min(start + 7, 50))
            reservoir.add({"position": rows, "features": np.stack([rows, -rows], axis=1)})
        sample = reservoir.rows()["position"]
        assert len(sample) == 10 and len(set(sample.tolist())) == 10
        np.testing.assert_array_equal(reservoir.rows()["features"][:, 1], -sample)
        kept[sample] += 1
    assert kept.sum() == 4000
    assert kept.min() > 50 and kept.max() < 110  # expected 80 each; binomial sd ~8
    everything = ReservoirSample(None, np.random.default_rng(0))
    assert everything.rows() is None
    everything.add({"label": np.arange(3.0)})
    everything.add({"label": np.arange(3.0, 5.0)})
    np.testing.assert_array_equal(everything.rows()["label"], np.arange(5.0))
    with pytest.raises(ValueError, match="Received: capacity=0"):
        ReservoirSample(0, np.random.default_rng(0))


# --------------------------------------------------------------------------
# Damaged files and bad records.
# --------------------------------------------------------------------------


def _damage(kind: str, tmp_path):
    """A file damaged in one way, and the record index the error names."""
    records = [_record(i) for i in range(60)]
    if kind in ("truncated", "corrupted"):
        path = _write(tmp_path / "data.tfrecord", records)
        data = bytearray(path.read_bytes())
        record_bytes = len(data) // 60
        if kind == "truncated":
            data = data[: -record_bytes // 2]
        else:
            data[41 * record_bytes + record_bytes // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return path, 59 if kind == "truncated" else 41, "the file is damaged (plain TFRecord)"
    if kind in ("truncated_gzip", "corrupted_gzip"):
        path = _write(tmp_path / "data.tfrecord.gz", records, compress=True)
        data = bytearray(path.read_bytes())
        if kind == "truncated_gzip":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return path, None, "the file is damaged (GZIP TFRecord)"
    serialized = [_serialize(record) for record in records]
    if kind == "not_an_example":
        serialized[7] = b"\x0a\xff\xff garbage"
        problem = "not a tf.train.Example"
    elif kind == "wrong_type":
        serialized[45] = _serialize({**records[45], "price": 3})
        problem = "feature 'price' holds int64 values, but float values in the first records"
    elif kind == "missing_label":
        serialized[50] = _serialize({k: v for k, v in records[50].items() if k != "label"})
        problem = "the label feature 'label' is missing"
    elif kind == "list_value":
        serialized[33] = _serialize({**records[33], "user_id": [1, 2]})
        problem = "feature 'user_id' holds 2 values; one is expected"
    index = {"not_an_example": 7, "wrong_type": 45, "missing_label": 50, "list_value": 33}[kind]
    return _write(tmp_path / "data.tfrecord", serialized, serialized=True), index, problem


@pytest.mark.parametrize(
    "kind",
    ["truncated", "corrupted", "truncated_gzip", "corrupted_gzip", "not_an_example",
     "wrong_type", "missing_label", "list_value"],
)
def test_damaged_files_and_bad_records_name_file_and_record(tmp_path, monkeypatch, kind):
    # Infer from the first 20 records, so that most damage is found while streaming.
    monkeypatch.setattr(tfrecord_lib, "INFER_RECORDS", 20)
    monkeypatch.setattr(tfrecord_lib, "READ_BATCH_RECORDS", 16)
    path, index, problem = _damage(kind, tmp_path)
    with pytest.raises(MalformedRecordError) as raised:
        load_dataset(f"tfrecord:{path}")
    error = raised.value
    assert isinstance(error, DATA_ERRORS)
    message = str(error)
    assert message.startswith(f"Bad TFRecord data in {path}") and "\n" not in message
    assert problem in message and "function_node" not in message
    if index is not None:
        assert error.record_index == index and f"at record index {index}:" in message


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("cut", [1, 11, 12, 16, -2], ids=lambda cut: {
    1: "length", 11: "length_crc", 12: "data_start", 16: "data", -2: "data_crc"}[cut])
def test_a_file_cut_anywhere_in_a_record_names_the_record(tmp_path, monkeypatch, cut,
                                                          compress):
    """Inside the 12-byte header TF's reader sees the end of the file; elsewhere it fails.

    `compress`: a cut file gzipped afterwards (complete GZIP, cut records).
    """
    monkeypatch.setattr(tfrecord_lib, "INFER_RECORDS", 20)
    monkeypatch.setattr(tfrecord_lib, "READ_BATCH_RECORDS", 16)
    serialized = [_serialize(_record(i)) for i in range(40)]
    whole = _write(tmp_path / "whole.tfrecord", serialized, serialized=True).read_bytes()
    offset = sum(len(record) + 16 for record in serialized[:25])  # record 25 starts here
    end = offset + 16 + len(serialized[25])
    data = whole[: offset + cut if cut > 0 else end + cut]
    path = tmp_path / "cut.tfrecord"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(MalformedRecordError) as raised:
        load_dataset(f"tfrecord:{path}")
    message = str(raised.value)
    assert raised.value.record_index == 25, message
    assert message.startswith(f"Bad TFRecord data in {path} at record index 25: ")
    assert f" at {offset}" in message or f"byte offset {offset}" in message, message
    assert "\n" not in message and "function_node" not in message and "'" not in message


def test_a_file_that_changes_while_it_is_read_is_an_error(tmp_path, monkeypatch):
    """Another program appends records after the reading began."""
    path = _write(tmp_path / "growing.tfrecord", [_record(i) for i in range(30)])
    more = _write(tmp_path / "more.tfrecord", [_record(i) for i in range(30, 40)]).read_bytes()
    compression_type = tfrecord_lib.compression_type

    def detect_while_another_program_appends(name):
        with open(name, "ab") as writer:
            writer.write(more)
        return compression_type(name)

    monkeypatch.setattr(tfrecord_lib, "compression_type", detect_while_another_program_appends)
    with pytest.raises(DataFileError, match=f"{path} changed while it was read"):
        load_tfrecord(path)


def test_any_feature_name_gets_a_key(tmp_path):
    path = _write(tmp_path / "names.tfrecord", [
        {"user name": b"u%d" % (i % 5), "item.id": i % 7, "label": i % 2} for i in range(60)])
    loaded = load_tfrecord(path)
    assert loaded.feature_spec.columns == {"item.id": "item_id", "user name": "user_name"}
    assert loaded.schema["categorical_columns"] == ["item.id", "user name"]
    assert set(loaded.train.features) == {"item_id", "user_name", DENSE_FEATURE_NAME}
    model = build_model("mlp", loaded.feature_spec, hidden_units=[4], embedding_dim=2)
    assert model(loaded.test.features).shape == (len(loaded.test), 1)


def test_a_type_change_within_the_inspected_records_is_found_too(tmp_path):
    records = [_serialize(_record(i)) for i in range(10)]
    records[4] = _serialize({**_record(4), "city": 5})
    path = _write(tmp_path / "data.tfrecord", records, serialized=True)
    with pytest.raises(MalformedRecordError, match=r"record index 4: feature 'city' holds "
                       r"int64 values, but bytes values at record index 0"):
        load_tfrecord(path)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="No TFRecord file matches"):
        load_tfrecord(tmp_path / "nothing-*.tfrecord")
    (tmp_path / "shards").mkdir()
    with pytest.raises(IsADirectoryError, match=r"tfrecord:.*shards/\*"):
        load_tfrecord(tmp_path / "shards")
    empty = _write(tmp_path / "empty.tfrecord", [])
    with pytest.raises(DataFileError, match="hold no records"):
        load_tfrecord(empty)
    with pytest.raises(ValueError, match="always checked"):
        load_dataset(f"tfrecord:{empty}", on_error="skip")


def test_models_accept_the_examples(interactions):
    loaded = load_tfrecord(interactions)
    model = build_model("mlp", loaded.feature_spec, hidden_units=[8], embedding_dim=4)
    logits = model(loaded.test.features)
    assert logits.shape == (len(loaded.test), 1)
