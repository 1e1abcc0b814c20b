"""Tests for streaming TFRecord files through tf.data (`tf_smelu.data.streaming`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_smelu.data import (
    DENSE_FEATURE_NAME,
    DataFileError,
    MalformedRecordError,
    TFRecordStream,
    check_tfrecord_files,
    fit_tfrecord_encoding,
    shard_policy,
    stream_error,
    stream_tfrecords,
)
from tf_smelu.models import build_model

sys.path.insert(0, os.path.dirname(__file__))
from test_tfrecord_data import _record, _serialize, _write  # noqa: E402

RECORDS_PER_FILE = 100


def _files(directory, count: int, first: int = 0, records=RECORDS_PER_FILE) -> str:
    directory.mkdir(exist_ok=True)
    for f in range(count):
        start = first + f * records
        _write(directory / f"part-{f:02d}.tfrecord",
               [_record(i) for i in range(start, start + records)])
    return str(directory / "*.tfrecord")


@pytest.fixture
def train_files(tmp_path):
    return _files(tmp_path / "train", 3)


@pytest.fixture
def encoding(train_files):
    return fit_tfrecord_encoding(train_files)


def _record_indices(batches, encoding) -> list[int]:
    """The `_record` index of every streamed row, recovered from its timestamp."""
    column = encoding.dense.index("timestamp")
    indices = []
    for features, _ in batches:
        scaled = features[DENSE_FEATURE_NAME].numpy()[:, column].astype(np.float64)
        timestamps = scaled * encoding.std[column] + encoding.mean[column]
        indices += np.rint((timestamps - 880_000_000) / 60).astype(int).tolist()
    return indices


def test_every_record_once_in_the_models_layout(train_files, encoding):
    batches = list(stream_tfrecords(train_files, encoding, batch_size=64, order_seed=5,
                                    shuffle_buffer=50))
    indices = _record_indices(batches, encoding)
    assert sorted(indices) == list(range(3 * RECORDS_PER_FILE))
    features, labels = batches[0]
    assert set(features) == {"city", "item_id", "user_id", DENSE_FEATURE_NAME}
    assert features["user_id"].dtype == tf.int64 and labels.dtype == tf.float32
    assert features[DENSE_FEATURE_NAME].shape == (64, 2)
    # Ids are the vocabulary's: popularity ranks of the raw values, as the in-memory reader.
    vocabulary = encoding.categorical["user_id"]
    expected = [vocabulary.index(str(i % 13).encode()) for i in indices[:64]]
    assert features["user_id"].numpy().tolist() == expected
    assert labels.numpy().tolist() == [float(i % 2) for i in indices[:64]]
    model = build_model("mlp", encoding.feature_spec, hidden_units=[8], embedding_dim=4)
    assert model(features).shape == (64, 1)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_seeded_order_repeats_and_reshuffles_each_epoch(train_files, encoding):
    def stream(seed):
        return stream_tfrecords(train_files, encoding, batch_size=300, order_seed=seed,
                                shuffle_buffer=40, cycle_length=2)

    first = stream(1)
    epoch_1, epoch_2 = _record_indices(first, encoding), _record_indices(first, encoding)
    assert _record_indices(stream(1), encoding) == epoch_1
    assert epoch_2 != epoch_1 and sorted(epoch_2) == sorted(epoch_1)
    assert _record_indices(stream(2), encoding) != epoch_1
    assert first.options().deterministic
    # No seed: sorted files, two at a time, record by record, no shuffle.
    unshuffled = _record_indices(stream(None), encoding)
    assert unshuffled[:4] == [0, 100, 1, 101] and unshuffled[-1] == 299


def test_held_out_files_use_the_training_vocabulary(tmp_path, encoding):
    (tmp_path / "eval").mkdir()
    held_out = _write(tmp_path / "eval" / "part-00.tfrecord",
                      [{**_record(i), "city": b"new-city" if i % 2 else b"city1"}
                       for i in range(1000, 1010)])
    (features, labels), = stream_tfrecords(str(held_out), encoding, batch_size=100)
    cities = encoding.categorical["city"]
    assert features["city"].numpy().tolist() == [cities.index(b"city1"), len(cities)] * 5
    assert labels.numpy().tolist() == [0.0, 1.0] * 5


def test_a_bounded_sample_fits_the_vocabulary(train_files):
    encoding = fit_tfrecord_encoding(train_files, sample_records=30)
    assert encoding.sample_rows == 30
    # 10 records from each file: item ids (i * 7) % 31 of i in 0-9, 100-109, 200-209.
    seen = {(i * 7) % 31 for start in (0, 100, 200) for i in range(start, start + 10)}
    assert len(encoding.categorical["item_id"]) == len(seen)
    (features, _), = stream_tfrecords(train_files, encoding, batch_size=300)
    assert set(features["item_id"].numpy()) <= set(range(len(seen) + 1))


def _rows_of(dataset) -> set[int]:
    return {int(ts * 1000) for features, _ in dataset
            for ts in features[DENSE_FEATURE_NAME].numpy()[:, 1]}


@pytest.mark.parametrize("files, policy", [(3, "FILE"), (1, "DATA")])
def test_input_pipelines_shard_by_file_or_by_record(tmp_path, files, policy):
    pattern = _files(tmp_path / "data", files, records=300 // files)
    encoding = fit_tfrecord_encoding(pattern)
    assert shard_policy(files, 2) == getattr(tf.data.experimental.AutoShardPolicy, policy)
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        dataset = TFRecordStream(pattern, encoding, batch_size=32, shuffle_buffer=20)(7, context)
        assert (dataset.options().experimental_distribute.auto_shard_policy
                == tf.data.experimental.AutoShardPolicy.OFF)
        shards.append(_record_indices(dataset, encoding))
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(300))
    if policy == "FILE":  # files 0 and 2 to pipeline 0, file 1 to pipeline 1
        assert {i // 100 for i in shards[0]} == {0, 2} and {i // 100 for i in shards[1]} == {1}
    else:  # every other record
        assert len(shards[0]) == len(shards[1]) == 150


@pytest.mark.slow
def test_a_replica_study_streams_through_make_dataset(tmp_path, train_files, encoding):
    from tf_smelu.reproducibility import ReplicaStudy

    held_out = stream_tfrecords(_files(tmp_path / "eval", 1, first=1000), encoding,
                                batch_size=100)
    seeds = []

    class Recorded(TFRecordStream):
        def __call__(self, order_seed, input_context=None):
            seeds.append(order_seed)
            return super().__call__(order_seed, input_context)

    def build(seed):
        model = build_model("mlp", encoding.feature_spec, hidden_units=[8], embedding_dim=4)
        model.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.BinaryCrossentropy(from_logits=True))
        return model

    train = Recorded(train_files, encoding, batch_size=50, shuffle_buffer=100)
    rows = ReplicaStudy(build, train, held_out, replicas=2, sources=("order",),
                        from_logits=True, epochs=1).run()
    assert len(set(seeds)) == 2
    assert rows[0]["rel_pd"] > 0
    control = ReplicaStudy(build, train, held_out, replicas=2, sources=(),
                           from_logits=True, epochs=1).run()
    assert control[0]["rel_pd"] == 0


# --------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------


def _stream_error(pattern, encoding) -> tf.errors.OpError:
    with pytest.raises(tf.errors.OpError) as raised:
        for _ in stream_tfrecords(pattern, encoding, batch_size=16, order_seed=1):
            pass
    return raised.value


@pytest.mark.parametrize("bad, problem", [
    ({"label": 3}, "the label feature 'label' must be 0 or 1"),
    ({"label": [0, 1]}, "feature 'label' holds several values"),
    ({"user_id": [1, 2]}, "feature 'user_id' holds several values"),
])
def test_a_bad_record_after_the_sample_names_file_and_record(train_files, encoding, tmp_path,
                                                             bad, problem):
    path = tmp_path / "train" / "part-99.tfrecord"
    _write(path, [_record(i) for i in range(40)] + [{**_record(40), **bad}])
    error = _stream_error(train_files, encoding)
    assert isinstance(error, tf.errors.InvalidArgumentError)
    assert str(stream_error(error)).startswith(
        f"Bad TFRecord data in {path} at record index 40: {problem}")


def test_a_file_cut_inside_a_header_is_not_taken_for_its_end(train_files, encoding):
    path = sorted(tf.io.gfile.glob(train_files))[1]
    data = open(path, "rb").read()
    open(path, "wb").write(data + data[:5])  # 5 bytes of a next record's header
    error = stream_error(_stream_error(train_files, encoding))
    assert str(error) == (
        f"Bad TFRecord data in {path} at record index {RECORDS_PER_FILE}: the file is "
        f"truncated (plain TFRecord): it ends inside the header of the record at byte "
        f"offset {len(data)}, after 5 of its 12 bytes")


def test_a_corrupted_record_is_located_by_check_tfrecord_files(train_files, encoding):
    path = sorted(tf.io.gfile.glob(train_files))[2]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    error = _stream_error(train_files, encoding)
    assert isinstance(error, tf.errors.DataLossError) and "corrupted record at" in error.message
    assert stream_error(error) is None
    with pytest.raises(MalformedRecordError, match=rf"{path} at record index \d+: the file is "
                       "damaged"):
        check_tfrecord_files(train_files)
    assert check_tfrecord_files(sorted(tf.io.gfile.glob(train_files))[0]) == RECORDS_PER_FILE


@pytest.mark.parametrize("content, why", [
    (b"user_id,item_id,label\n1,2,0\n" * 20, "its first bytes are no record header"),
    (b"abc", "3 bytes, less than a record header"),
])
def test_a_file_that_is_not_tfrecord_is_refused_when_the_stream_is_made(train_files, encoding,
                                                                        content, why):
    path = os.path.join(os.path.dirname(train_files), "clicks.tfrecord")  # sorted first
    open(path, "wb").write(content)
    expected = (f"Bad TFRecord data in {path}: not a TFRecord file ({why}; a CSV file would "
                "be csv:PATH)")
    for make in (lambda: stream_tfrecords(train_files, encoding, batch_size=8),
                 lambda: TFRecordStream(train_files, encoding, batch_size=8)(order_seed=1),
                 lambda: check_tfrecord_files(train_files),
                 lambda: fit_tfrecord_encoding(train_files)):
        with pytest.raises(MalformedRecordError) as raised:
            make()
        assert str(raised.value) == expected


def test_a_file_set_without_records_is_refused_and_an_empty_shard_is_fine(train_files, encoding,
                                                                          tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("part-0.tfrecord", "part-1.tfrecord"):
        (empty / name).write_bytes(b"")
    pattern = str(empty / "*.tfrecord")
    for make in (lambda: stream_tfrecords(pattern, encoding, batch_size=8),
                 lambda: check_tfrecord_files(pattern)):
        with pytest.raises(DataFileError) as raised:
            make()
        assert str(raised.value) == (
            f"The TFRecord files hold no records. Received: path={pattern!r}")
    (tmp_path / "train" / "part-99.tfrecord").write_bytes(b"")  # e.g. a writer's empty shard
    rows = sum(len(labels) for _, labels in stream_tfrecords(train_files, encoding,
                                                             batch_size=64))
    assert rows == 3 * RECORDS_PER_FILE


@pytest.mark.parametrize("arguments, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 8, "shuffle_buffer": -1}, "shuffle_buffer"),
    ({"batch_size": 8, "order_seed": -3}, "order_seed"),
    ({"batch_size": 8, "encoding": {"label": 1}}, "TFRecordEncoding"),
])
def test_bad_arguments(train_files, encoding, arguments, message):
    with pytest.raises(ValueError, match=message):
        stream_tfrecords(train_files, **{"encoding": encoding, **arguments})


def test_shard_policy_needs_files_and_workers():
    assert shard_policy(2, 2) == tf.data.experimental.AutoShardPolicy.FILE
    for files, workers in ((0, 2), (2, 0), (1.5, 1)):
        with pytest.raises(ValueError, match="num_"):
            shard_policy(files, workers)


def test_schema_problems_raise_while_fitting(train_files, tmp_path):
    with pytest.raises(DataFileError, match="label_column"):
        fit_tfrecord_encoding(train_files, label_column="clicked")
    with pytest.raises(FileNotFoundError):
        fit_tfrecord_encoding(str(tmp_path / "none-*.tfrecord"))
    with pytest.raises(ValueError, match="sample_records"):
        fit_tfrecord_encoding(train_files, sample_records=0)


# --------------------------------------------------------------------------
# Memory.
# --------------------------------------------------------------------------

_MEMORY_PROGRAM = textwrap.dedent("""
    import json, sys, time
    import psutil
    from tf_smelu.data import fit_tfrecord_encoding, stream_tfrecords
    from tf_smelu.processes import peak_rss

    pattern, shuffle_buffer = sys.argv[1], int(sys.argv[2])
    encoding = fit_tfrecord_encoding(pattern, sample_records=200)
    dataset = stream_tfrecords(pattern, encoding, batch_size=64, order_seed=1,
                               shuffle_buffer=shuffle_buffer)
    for _ in dataset.take(4):  # warm up: graph, tables, buffers
        pass

    peak_rss(reset=True)  # the peak from here on: what streaming adds
    start = psutil.Process().memory_info().rss
    began = time.monotonic()
    rows = sum(len(labels) for _, labels in dataset)
    peak = peak_rss()
    print(json.dumps({"rows": rows, "growth": peak - start, "rss": start,
                      "seconds": time.monotonic() - began}))
""")

_PAYLOAD_BYTES = 8192
_MEMORY_CAP = 200 * 2**20  # peak RSS growth allowed while streaming
_DATA_FILES, _FILE_RECORDS = 16, 2000  # 16 files of 2,000 records of 16 KB: 525 MB


def _padded_records(directory, files: int, records: int) -> str:
    """Files of records with two 8 KB bytes values that are not used (bulk).

    One file is written, the others are copies: a serialized `Example` is the
    merge of concatenated parts, so the bulk is serialized once.
    """
    directory.mkdir()
    payload = _serialize({"payload": [b"x" * _PAYLOAD_BYTES] * 2})
    first = directory / "part-00.tfrecord"
    _write(first, [_serialize(_record(i)) + payload for i in range(records)], serialized=True)
    for f in range(1, files):
        shutil.copyfile(first, directory / f"part-{f:02d}.tfrecord")
    return str(directory / "*.tfrecord")


@pytest.mark.slow
def test_streaming_reads_a_file_set_larger_than_a_memory_cap(tmp_path):
    """Streams 525 MB in a fresh process whose peak RSS may grow by at most 200 MB."""
    data_bytes = _DATA_FILES * _FILE_RECORDS * 2 * _PAYLOAD_BYTES
    free = shutil.disk_usage(tmp_path).free
    if free < 2 * data_bytes:
        pytest.skip(f"{tmp_path} has {free / 2**20:,.0f} MB free; the test writes "
                    f"{data_bytes / 2**20:,.0f} MB")
    pattern = _padded_records(tmp_path / "data", _DATA_FILES, _FILE_RECORDS)
    written = sum(os.path.getsize(path) for path in tf.io.gfile.glob(pattern))
    assert written > 2.5 * _MEMORY_CAP
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROGRAM, pattern, "1000"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"streamed {written / 2**20:,.0f} MB ({measured['rows']:,} rows) in "
          f"{measured['seconds']:.1f} s; peak RSS growth {measured['growth'] / 2**20:,.0f} MB "
          f"over {measured['rss'] / 2**20:,.0f} MB after warm-up")
    assert measured["rows"] == _DATA_FILES * _FILE_RECORDS  # every record, once
    # Holding the records would take 525 MB; the stream holds its shuffle buffer (1,000
    # records, 16 MB), a few files' read buffers and prefetched batches.
    assert measured["growth"] < _MEMORY_CAP, measured


def test_peak_rss_sees_what_this_process_allocates_after_a_reset():
    import numpy as np

    from tf_smelu.processes import peak_rss

    before = peak_rss(reset=True)
    block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    grown = peak_rss() - before
    del block
    assert 60 * 2**20 <= grown < 200 * 2**20
