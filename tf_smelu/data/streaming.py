"""Streaming TFRecord files through tf.data: data larger than memory.

`tf_smelu.data.tfrecord.load_tfrecord` keeps a capped sample of the rows in
memory.  This module reads *every* record of a TFRecord file set, batch by
batch, so a `keras.Model.fit` (or `tf_smelu.reproducibility.ReplicaStudy`)
trains on all of it, in the feature layout of `tf_smelu.data.features`:

    encoding = fit_tfrecord_encoding("train/*.tfrecord")
    train = TFRecordStream("train/*.tfrecord", encoding, batch_size=512)
    held_out = stream_tfrecords("eval/*.tfrecord", encoding, batch_size=512)
    study = ReplicaStudy(build_model, train, held_out, sources=("init", "order"))

Encoding (fitted once, on a bounded sample)
-------------------------------------------
`fit_tfrecord_encoding` infers the schema as `load_tfrecord` does (same
rules, flags and errors), reads a bounded sample (the first
`sample_records` records, spread evenly over the files) and fits on it, as
the in-memory reader does on its rows, a `Vocabulary` per categorical
feature (ids by frequency, one out-of-vocabulary id last) and the dense
`Standardizer`.  The stream then maps values in the graph: a
`tf.lookup.StaticHashTable` from the raw value (bytes, or the decimal text
of an int64, as the in-memory reader keys them) to its id, with the OOV id
as default.  A vocabulary rather than hashing keeps the ids exactly those
the in-memory reader gives the same rows (popularity ranks, no collisions)
and the tables bounded by the sample, not by the data; values first seen
after the sample share the OOV id (raise `sample_records` to see more).
The held-out files must be read with the training set's encoding.

Order, determinism, memory
--------------------------
A stream lists the files (sorted), shuffles that list with `order_seed`
(`Dataset.shuffle(len(files), seed)`), reads `cycle_length` files at a time
interleaved record by record (`interleave(..., deterministic=True)`), passes
the records through a seeded shuffle buffer of `shuffle_buffer` records,
then batches and parses them.  Every epoch reshuffles, by the same seeded
sequence, so a seed gives the same batches in every run;
`options.deterministic` is on.  (As for every tf.data shuffle, the order is
a function of `order_seed` *and* TensorFlow's global seed, the one
`keras.utils.set_random_seed` sets.)  `order_seed=None` reads the files in
sorted order without shuffling: held-out data.  At most `cycle_length`
files are open (each read 64 records at a time, with tf.data's read-ahead
buffers), `shuffle_buffer` records buffered and a few batches prefetched,
so peak memory does not grow with the data (measured in
`benchmarks/streaming.py`; see "Data beyond memory" in `docs/guide/own-training.md`).

Several workers (`tf.distribute.MultiWorkerMirroredStrategy`)
--------------------------------------------------------------
Pass the `tf.distribute.InputContext` of
`strategy.distribute_datasets_from_function` (`TFRecordStream` takes it as
its second argument).  The stream then shards itself, as TF's auto-shard
policies would (`shard_policy`): FILE when there are at least as many files
as input pipelines (pipeline `i` of `n` reads the sorted files `i, i + n,
...`), else DATA (every pipeline reads every file and keeps every `n`-th
record, before the shuffle buffer); the dataset's own
`auto_shard_policy` is set to OFF, since it is sharded already.  Without an
input context, a stream given to `strategy.experimental_distribute_dataset`
is left to TF's AUTO policy.

Errors
------
Making a stream reads the first record of every file: a file that is not
TFRecord (e.g. a CSV file matched by the glob) raises `MalformedRecordError`
naming it, and a file set without any record a `DataFileError`, before
any training step (an empty file among others is fine).  Schema problems
and damage in the inspected or sampled records raise while fitting the
encoding, as `load_tfrecord` raises them (`MalformedRecordError`
naming file and record).  While streaming, errors surface from the iterator
(from `fit`) as `tf.errors.InvalidArgumentError` whose message holds the
in-memory reader's line, `Bad TFRecord data in FILE at record index I:
...` (`stream_error` turns it back into that `MalformedRecordError`), for
a missing, non-finite or non-0/1 label, a list where one value is
expected, and a plain file cut inside a record header (TF's reader takes
that for the end of the file; the stream counts each file's bytes).  TF's
own reader reports a corrupted or cut record itself, as a
`tf.errors.DataLossError` naming the byte offset but not the file
("corrupted record at 30"); `check_tfrecord_files` reads the files once and
raises the `MalformedRecordError` naming file, record and offset.  A GZIP
file cut short may end early without an error while streaming
(`check_tfrecord_files` finds it); a feature whose type changes raises TF's
`InvalidArgumentError` naming the feature.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tf_smelu.data.encoding import Standardizer, Vocabulary
from tf_smelu.data.features import DENSE_FEATURE_NAME, CategoricalFeature, FeatureSpec, feature_keys
from tf_smelu.data.sampling import concatenate_rows
from tf_smelu.data.schema import SchemaOptions
from tf_smelu.data.tfrecord import (
    READ_BATCH_RECORDS,
    MalformedRecordError,
    TFRecordSource,
    check_tfrecord_starts,
    compression_type,
    inspect_tfrecords,
    read_record_batches,
    tfrecord_files,
)
from tf_smelu.validation import require_non_negative_int, require_positive_int

DEFAULT_SAMPLE_RECORDS = 100_000
"""Records the vocabularies and dense statistics are fitted on, by default."""

DEFAULT_SHUFFLE_BUFFER = 10_000
"""Records in a training stream's shuffle buffer, by default."""

DEFAULT_CYCLE_LENGTH = 4
"""Files a stream reads at a time, by default."""

_RECORD_FRAMING_BYTES = 16  # length (8 bytes) and two CRCs (4 bytes each)
_COUNT_BATCH_RECORDS = 64  # records counted at a time in each file (held in memory)
_FILE_SIZE_UNKNOWN = -1  # GZIP files: the decompressed size is not known
# The stream's own assert messages inside TF's error text (quotes escaped by TF).
_STREAM_PROBLEM = re.compile(
    r"assertion failed: \[Bad TFRecord data in (?P<path>.+?) at record index (?P<index>-?\d+): "
    r"(?P<problem>.*?)\]\n", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class TFRecordEncoding:
    """How a stream turns records into features: schema, vocabularies, statistics.

    Attributes:
        label_column: The label feature.
        label_threshold: `label = value >= label_threshold`; `None`: 0/1.
        categorical: Feature -> its vocabulary, values as bytes (int64
            values as their decimal text), most frequent first; the OOV id
            is `len(vocabulary)`.
        dense: Dense feature names, in matrix column order.
        kinds: Feature -> value type (`"int64_list"`, `"float_list"`,
            `"bytes_list"`), the label included.
        mean: Per dense column, the sample mean.
        std: Per dense column, the sample standard deviation.
        feature_spec: The models' `FeatureSpec` of the stream.
        sample_rows: How many records the encoding was fitted on.
    """

    label_column: str
    label_threshold: float | None
    categorical: dict[str, tuple[bytes, ...]]
    dense: tuple[str, ...]
    kinds: dict[str, str]
    mean: np.ndarray
    std: np.ndarray
    feature_spec: FeatureSpec
    sample_rows: int


def fit_tfrecord_encoding(
    pattern: str | os.PathLike,
    *,
    label_column: str | None = None,
    categorical_columns: Sequence[str] | None = None,
    dense_columns: Sequence[str] | None = None,
    label_threshold: float | None = None,
    sample_records: int = DEFAULT_SAMPLE_RECORDS,
) -> TFRecordEncoding:
    """The schema, vocabularies and dense statistics of a TFRecord file set.

    Reads the first `ceil(sample_records / len(files))` records of each
    file, in sorted order, up to `sample_records` in all: memory is bounded
    by the sample, not the data.

    Args:
        pattern: The training files (a file or glob pattern).
        label_column: The label feature; `None`: `"label"`.
        categorical_columns: Categorical features (`None`: inferred).
        dense_columns: Dense features (`None`: inferred).
        label_threshold: If given, `label = value >= label_threshold`;
            otherwise labels must be 0 or 1.
        sample_records: Records to fit on.

    Returns:
        The `TFRecordEncoding` for `stream_tfrecords`.

    Raises:
        FileNotFoundError: If no file matches.
        MalformedRecordError: For a damaged file or a bad record in the sample.
        DataFileError: For a schema problem (see `load_tfrecord`).
        ValueError: If `sample_records` is not a positive integer.
    """
    require_positive_int("sample_records", sample_records)
    options = SchemaOptions.of(label_column, categorical_columns, dense_columns, label_threshold)
    source = inspect_tfrecords(os.fspath(pattern), options)
    rows = _sample_rows(source, sample_records)
    parser = source.parser
    keys = feature_keys(parser.categorical)
    vocabularies = {name: tuple(_as_bytes(value) for value in
                                Vocabulary.fit(rows[f"categorical:{name}"]).values)
                    for name in parser.categorical}
    standardizer = Standardizer.fit(rows["dense"]) if parser.dense else (
        Standardizer(np.zeros(1), np.ones(1)))
    spec = FeatureSpec(
        tuple(CategoricalFeature(keys[name], len(vocabulary) + 1, column=name)
              for name, vocabulary in vocabularies.items()),
        num_dense=max(len(parser.dense), 1),
    )
    return TFRecordEncoding(
        label_column=options.label_column,
        label_threshold=options.label_threshold,
        categorical=vocabularies,
        dense=parser.dense,
        kinds={name: source.kind(name) for name in parser.names},
        mean=np.asarray(standardizer.mean, np.float64),
        std=np.asarray(standardizer.std, np.float64),
        feature_spec=spec,
        sample_rows=len(rows["label"]),
    )


def _sample_rows(source: TFRecordSource, sample_records: int) -> dict[str, np.ndarray]:
    per_file = math.ceil(sample_records / len(source.files))
    parts, taken = [], 0
    for path in source.files:
        limit = min(per_file, sample_records - taken)
        if limit <= 0:
            break
        for start, serialized in read_record_batches(path, source.compressions[path],
                                                     READ_BATCH_RECORDS, limit=limit):
            parts.append(source.parser.parse(path, start, serialized))
            taken += len(serialized)
    return concatenate_rows(parts)


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def stream_error(error: tf.errors.OpError) -> MalformedRecordError | None:
    """The `MalformedRecordError` a stream's iterator error stands for, if it is one.

    Command lines and callers of `fit` catch `tf.errors.OpError` and pass it
    here to print the one-line error naming file and record.

    Args:
        error: What iterating the stream raised.

    Returns:
        The error of a record the stream refused (see the module
        docstring), or `None` for any other error (e.g. TF's own
        `DataLossError`: `check_tfrecord_files` locates that damage).
    """
    match = _STREAM_PROBLEM.search(error.message)
    if match is None:
        return None
    return MalformedRecordError(_unescape(match["path"]), int(match["index"]),
                                _unescape(match["problem"]))


def _unescape(text: str) -> str:
    """Undoes TF's C escaping of quotes and backslashes in an assert message."""
    return re.sub(r"\\(['\"\\])", r"\1", text)


# --------------------------------------------------------------------------
# Sharding.
# --------------------------------------------------------------------------


def shard_policy(num_files: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE if every worker (input pipeline) gets at least one file, else DATA.

    Args:
        num_files: Number of files the stream reads.
        num_workers: Number of input pipelines (workers) reading it.

    Returns:
        `AutoShardPolicy.FILE` (each worker reads whole files) or `DATA`
        (each worker reads every file and keeps its share of the records).

    Raises:
        ValueError: If either count is not a positive integer.
    """
    require_positive_int("num_files", num_files)
    require_positive_int("num_workers", num_workers)
    if num_files >= num_workers:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def _shard(num_files: int, input_context: tf.distribute.InputContext | None
           ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """`(ids of the files this pipeline reads, (pipelines, id) to shard records by)`."""
    file_ids = np.arange(num_files)
    if input_context is None or input_context.num_input_pipelines == 1:
        return file_ids, None
    pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
    if shard_policy(num_files, pipelines) == tf.data.experimental.AutoShardPolicy.FILE:
        return file_ids[pipeline::pipelines], None
    return file_ids, (pipelines, pipeline)


# --------------------------------------------------------------------------
# The stream.
# --------------------------------------------------------------------------


def stream_tfrecords(
    pattern: str | os.PathLike,
    encoding: TFRecordEncoding,
    *,
    batch_size: int,
    order_seed: int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Every record of a TFRecord file set as batches of `(features, labels)`.

    See the module docstring for the order, memory, sharding and errors.

    Args:
        pattern: The files (a file or glob pattern), plain or GZIP.
        encoding: From `fit_tfrecord_encoding` on the *training* files.
        batch_size: Records per batch (per replica batch under an
            `input_context`: `input_context.get_per_replica_batch_size`
            is up to you); the last batch may be smaller.
        order_seed: Seeds the file order and the shuffle buffer; `None`:
            sorted files, no shuffle (held-out data).
        shuffle_buffer: Records in the shuffle buffer (with a seed).
        cycle_length: Files read at a time, interleaved record by record.
        input_context: From `strategy.distribute_datasets_from_function`:
            this pipeline's shard (`shard_policy`).

    Returns:
        A `tf.data.Dataset` of `(features, labels)`: `features` maps each
        categorical feature key to int64 ids `[batch]` in
        `[0, vocab_size)` and `"dense"` to float32 `[batch, num_dense]`;
        `labels` are float32 `[batch]`.

    Raises:
        FileNotFoundError: If no file matches.
        MalformedRecordError: For a file that is not TFRecord (its first
            record is read when the stream is made).
        DataFileError: If no file holds a record.
        ValueError: For a bad argument.
    """
    require_positive_int("batch_size", batch_size)
    require_positive_int("shuffle_buffer", shuffle_buffer)
    require_positive_int("cycle_length", cycle_length)
    if order_seed is not None:
        require_non_negative_int("order_seed", order_seed)
    if not isinstance(encoding, TFRecordEncoding):
        raise ValueError("`encoding` must be a TFRecordEncoding (fit_tfrecord_encoding on the "
                         f"training files). Received: {type(encoding).__name__}")
    files = tfrecord_files(os.fspath(pattern))
    compressions = [compression_type(path) for path in files]
    check_tfrecord_starts(os.fspath(pattern), files, compressions)
    sizes = [_FILE_SIZE_UNKNOWN if compression else tf.io.gfile.stat(path).length
             for path, compression in zip(files, compressions, strict=True)]
    file_ids, data_shard = _shard(len(files), input_context)

    table = tf.data.Dataset.from_tensor_slices(
        (file_ids, [files[i] for i in file_ids], [compressions[i] for i in file_ids],
         np.asarray([sizes[i] for i in file_ids], np.int64)))
    if order_seed is not None:
        table = table.shuffle(len(file_ids), seed=order_seed, reshuffle_each_iteration=True)
    records = table.interleave(_file_records, cycle_length=cycle_length, block_length=1,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if data_shard is not None:
        records = records.shard(*data_shard)
    if order_seed is not None:
        records = records.shuffle(shuffle_buffer, seed=order_seed, reshuffle_each_iteration=True)
    batches = records.batch(batch_size).map(
        _Parser(encoding, tuple(files)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


def _file_records(file_id: tf.Tensor, path: tf.Tensor, compression: tf.Tensor,
                  size: tf.Tensor) -> tf.data.Dataset:
    """`(file id, record index, record)` of one file, then checks its bytes add up.

    TF's reader ends a plain file cut inside a record's 12-byte header as if
    it were complete; an empty batch after the last one compares the bytes
    read with the file's size (taken when the stream was built).  Records
    are counted in batches: a function per record would cost more than
    reading it.
    """
    batches = tf.data.TFRecordDataset(path, compression_type=compression).batch(
        _COUNT_BATCH_RECORDS)
    end = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))

    def count(counted, records):
        consumed, seen = counted[0], counted[1]
        rows = tf.size(records, out_type=tf.int64)
        complete = tf.logical_or(rows > 0, tf.logical_or(tf.equal(size, _FILE_SIZE_UNKNOWN),
                                                         tf.equal(consumed, size)))
        check = tf.debugging.Assert(complete, [tf.strings.join([
            "Bad TFRecord data in ", path, " at record index ", tf.strings.as_string(seen),
            ": the file is truncated (plain TFRecord): it ends inside the header of the record "
            "at byte offset ", tf.strings.as_string(consumed), ", after ",
            tf.strings.as_string(size - consumed), " of its 12 bytes"])])
        record_bytes = tf.reduce_sum(tf.strings.length(records, unit="BYTE"))
        with tf.control_dependencies([check]):
            counted = counted + tf.stack(
                [tf.cast(record_bytes, tf.int64) + _RECORD_FRAMING_BYTES * rows, rows])
        indices = seen + tf.range(rows, dtype=tf.int64)
        return counted, (tf.fill([rows], tf.cast(file_id, tf.int64)), indices, records)

    return batches.concatenate(end).scan(tf.zeros([2], tf.int64), count).unbatch()


class _Parser:
    """Maps a batch of `(file id, record index, record)` to `(features, labels)`."""

    def __init__(self, encoding: TFRecordEncoding, files: tuple[str, ...]) -> None:
        self.encoding = encoding
        self.files = tf.constant(files)
        keys = feature_keys(encoding.categorical)
        self.tables = {
            keys[name]: (name, tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(vocabulary or (b"",), tf.string),
                    tf.range(max(len(vocabulary), 1), dtype=tf.int64)),
                default_value=len(vocabulary)))
            for name, vocabulary in encoding.categorical.items()
        }

    def __call__(self, file_ids: tf.Tensor, indices: tf.Tensor, serialized: tf.Tensor):
        encoding = self.encoding
        names = [encoding.label_column, *encoding.categorical, *encoding.dense]
        parsed = tf.io.parse_example(serialized, {
            name: tf.io.RaggedFeature(_DTYPES[encoding.kinds[name]], row_splits_dtype=tf.int64)
            for name in names})
        rules, columns = [], {}  # rules: (rows that are good, problem)
        for name in names:
            lengths = parsed[name].row_lengths()
            rules.append((lengths <= 1, f"feature {name!r} holds several values; one is "
                          "expected (lists are not supported)"))
            columns[name] = (parsed[name].to_tensor(shape=[None, 1])[:, 0], tf.equal(lengths, 1))
        label, present = columns[encoding.label_column]
        label = tf.cast(label, tf.float64)
        good = present & tf.math.is_finite(label)
        if encoding.label_threshold is None:
            good &= tf.equal(label, 0.0) | tf.equal(label, 1.0)
            label_rule = "must be 0 or 1 (set --label_threshold to binarize other values)"
        else:
            label_rule = "must be present and finite"
        rules.append((good, f"the label feature {encoding.label_column!r} {label_rule}"))
        if encoding.label_threshold is not None:
            label = tf.cast(label >= encoding.label_threshold, tf.float64)
        with tf.control_dependencies([self._require(rules, file_ids, indices)]):
            labels = tf.cast(tf.identity(label), tf.float32)
        features = {key: table.lookup(self._text(*columns[name], encoding.kinds[name]))
                    for key, (name, table) in self.tables.items()}
        features[DENSE_FEATURE_NAME] = self._dense(columns, tf.shape(serialized)[0])
        return features, labels

    def _require(self, rules: list[tuple[tf.Tensor, str]], file_ids: tf.Tensor,
                 indices: tf.Tensor) -> tf.Operation:
        """One assert for all rules; its message, the in-memory reader's line for the
        first bad row, is built only when a row breaks a rule."""
        goods = tf.stack([good for good, _ in rules])  # [rules, rows]
        all_good = tf.reduce_all(goods)

        def message() -> tf.Tensor:
            row = tf.argmin(tf.cast(tf.reduce_all(goods, axis=0), tf.int32))
            rule = tf.argmin(tf.cast(goods[:, row], tf.int32))
            return tf.strings.join([
                "Bad TFRecord data in ", tf.gather(self.files, file_ids[row]),
                " at record index ", tf.strings.as_string(indices[row]), ": ",
                tf.gather(tf.constant([problem for _, problem in rules]), rule)])

        return tf.debugging.Assert(all_good, [tf.cond(all_good, lambda: tf.constant(""),
                                                      message)])

    @staticmethod
    def _text(values: tf.Tensor, present: tf.Tensor, kind: str) -> tf.Tensor:
        """Raw values as the vocabulary keys them: bytes, or int64s as decimal text."""
        if kind != "bytes_list":
            values = tf.strings.as_string(values)
        return tf.where(present, values, tf.constant(b""))

    def _dense(self, columns: dict, rows: tf.Tensor) -> tf.Tensor:
        encoding = self.encoding
        if not encoding.dense:
            return tf.zeros([rows, 1], tf.float32)
        standardized = []
        for column, name in enumerate(encoding.dense):
            values, present = columns[name]
            values = tf.cast(values, tf.float64)
            finite = present & tf.math.is_finite(values)
            scaled = (values - encoding.mean[column]) / encoding.std[column]
            standardized.append(tf.where(finite, scaled, tf.zeros_like(scaled)))
        return tf.cast(tf.stack(standardized, axis=1), tf.float32)


_DTYPES = {"int64_list": tf.int64, "float_list": tf.float32, "bytes_list": tf.string}


# --------------------------------------------------------------------------
# `make_dataset(order_seed)` for `ReplicaStudy` and `fit`.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TFRecordStream:
    """`make_dataset(order_seed[, input_context])`: a training stream per seed.

    Give it to `tf_smelu.reproducibility.ReplicaStudy` as `train_data`
    (each replica streams the files in the order of its `order_seed`), or
    to `strategy.distribute_datasets_from_function(lambda context:
    stream(seed, context))`.

    Attributes:
        pattern: The training files.
        encoding: From `fit_tfrecord_encoding(pattern)`.
        batch_size: Records per batch.
        shuffle_buffer: Records in the shuffle buffer.
        cycle_length: Files read at a time.
    """

    pattern: str
    encoding: TFRecordEncoding
    batch_size: int
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    cycle_length: int = DEFAULT_CYCLE_LENGTH

    def __call__(self, order_seed: int,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """`stream_tfrecords` of the files, shuffled with `order_seed`."""
        return stream_tfrecords(self.pattern, self.encoding, batch_size=self.batch_size,
                                order_seed=order_seed, shuffle_buffer=self.shuffle_buffer,
                                cycle_length=self.cycle_length, input_context=input_context)
