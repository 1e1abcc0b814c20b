"""TFRecord files of `tf.train.Example`s (`--dataset=tfrecord:GLOB`).

Files
-----
`GLOB` is one file or a glob pattern (`tf.io.gfile.glob`); the matching
files are read in sorted order.  Each file may be plain or GZIP-compressed:
this is detected per file from the gzip magic bytes `1f 8b`, not from the
suffix.  (A plain TFRecord file starts with the little-endian length of its
first record, so it could start with those bytes only for a first record of
35,615 + k * 65,536 bytes; its checksum then fails with a clear error.)
ZLIB-compressed files are not supported.

Schema (the rules and flags of `tf_smelu.data.schema`)
-----------------------------------------------------
Every record is a `tf.train.Example` whose features hold at most one value
each.  Feature names and types are inferred from the first `INFER_RECORDS`
records:

* The label is the feature `label_column` (default `"label"`), int64 or
  float; its values must be 0 or 1 unless `label_threshold` is given.
* bytes features are categorical; int64 features are categorical, except
  those with a time-like name (`timestamp`, `created_at`), which are dense;
  float features are dense.
* A feature holding several values (a list) in an inspected record, or
  empty in all of them, is ignored (and listed as ignored in the schema).
  Features that first appear after the inspected records are not used.
* Inferred features are taken in name order (records do not order them).

`categorical_columns` and `dense_columns` name the features exactly as for
CSV files (the others are ignored); int64 and float features may be either,
bytes features only categorical.  A record may lack a feature: a missing
dense value is counted (`schema["missing_values"]`, as are non-finite
floats) and becomes the training mean; a missing categorical value is the
empty value, one id like any other.

Reading: one pass, capped rows in memory
----------------------------------------
The records are read once, as a stream (`tf.data.TFRecordDataset`, in
batches of `READ_BATCH_RECORDS`).  Each record goes to the train or test
split by a seeded hash of `"<file name>:<record index>"` (`SplitConfig`), and
each split keeps a seeded uniform random sample of at most
`max_train_examples` / `max_test_examples` records while streaming
(reservoir sampling), whatever the order of the files.  Only the sampled rows
are held in memory, so files larger than memory can be read.  Vocabularies
and the dense standardisation are fitted afterwards on the sampled training
rows (no second pass).  The replica harness then trains on this in-memory
`LoadedDataset` (R replicas share one copy of the rows): training on more
rows than fit in memory is not supported; the caps choose which rows train.
With `eval_pattern` (`--eval_dataset`) the test split is a sample of
those separate files instead, parsed with the training files' schema.

Errors
------
Damaged files (truncated anywhere, even inside a record's header, which
TF's reader takes for the end of the file; corrupted; bad GZIP data),
records that are not `tf.train.Example`s, a feature whose type changes
between records, a list where one value is expected, and a missing or bad
label raise
`MalformedRecordError` (a `MalformedRowError`): one line naming the file and,
when known, the record index (0-based).  A pattern matching no file raises
`FileNotFoundError`; a label or feature that the inspected records lack, a
`DataFileError` naming the flag to set; a file that changes while it is read
(its size or modification time, `tf_smelu.data.tabular.FileVersion`), a
`DataFileError` naming the file.

This module stays whole (about 500 lines, a fifth of them this docstring):
the survey, the batch parser and the error locators share the file and
record-index bookkeeping that makes every error name its record.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from tf_smelu.data.csv_data import CONSTANT_DENSE_NAME
from tf_smelu.data.encoding import RawColumns, Vocabulary, encode_splits
from tf_smelu.data.sampling import ReservoirSample, concatenate_rows
from tf_smelu.data.schema import (
    CATEGORICAL,
    DENSE,
    IGNORED,
    SchemaOptions,
    infer_item_column,
    looks_like_time,
    require_a_categorical_column,
    require_both_labels,
    require_columns,
    require_same_columns,
)
from tf_smelu.data.tabular import (
    DEFAULT_TEST_FRACTION,
    DataFileError,
    FileVersion,
    LoadedDataset,
    MalformedRowError,
    SplitConfig,
)

INFER_RECORDS = 1000
"""How many records (from the first files) the feature types are inferred from."""

READ_BATCH_RECORDS = 4096
"""Records read and parsed at a time."""

_GZIP_MAGIC = b"\x1f\x8b"
# A record is framed by its length (8 bytes) and two CRCs (4 bytes each).
_RECORD_FRAMING_BYTES = 16
_DTYPES = {"int64_list": tf.int64, "float_list": tf.float32, "bytes_list": tf.string}
_TYPE_NAMES = {"int64_list": "int64", "float_list": "float", "bytes_list": "bytes"}
# SeedSequence spawn key of the reservoir samples (the split and the row
# order have their own streams in `SplitConfig`).
_SAMPLE_STREAM = 13
# What TF's reader adds when the first record header of a file fails its checksum.
_NOT_TFRECORD = "Is this even a TFRecord file?"
_TF_ERROR_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", re.DOTALL)


class MalformedRecordError(MalformedRowError):
    """A TFRecord file is damaged or a record does not fit the schema.

    Attributes:
        path: The file.
        record_index: 0-based index of the record in the file, or `None`
            when the damage cannot be tied to one record.
        problem: What is wrong.
    """

    def __init__(self, path: str, record_index: int | None, problem: str) -> None:
        self.path = path
        self.record_index = record_index
        self.line_number = None
        self.problem = problem
        where = "" if record_index is None else f" at record index {record_index}"
        DataFileError.__init__(self, f"Bad TFRecord data in {path}{where}: {problem}")


def tfrecord_files(pattern: str) -> list[str]:
    """The sorted files matching `pattern`.

    Raises:
        FileNotFoundError: If nothing matches.
        IsADirectoryError: If a directory matches (use `DIR/*`).
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"No TFRecord file matches the pattern. Received: path={pattern!r}")
    directories = [path for path in files if tf.io.gfile.isdir(path)]
    if directories:
        raise IsADirectoryError(
            f"The TFRecord pattern matches directories {directories[:3]}; name the files, "
            f"e.g. tfrecord:{directories[0].rstrip('/')}/*. Received: path={pattern!r}"
        )
    return files


def compression_type(path: str) -> str:
    """`"GZIP"` if the file starts with the gzip magic bytes, else `""` (plain)."""
    with tf.io.gfile.GFile(path, "rb") as stream:
        return "GZIP" if stream.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC else ""


def _tf_problem(error: tf.errors.OpError) -> str:
    """The message of a TF error without its op and function decorations."""
    # TF's record reader says "truncated record at 980' failed with Read less bytes...".
    message = _TF_ERROR_NOISE.sub("", error.message).replace("' failed with ", ": ").strip()
    return message or type(error).__name__


def _damaged(path: str, compression: str, start: int, error: tf.errors.OpError
             ) -> MalformedRecordError:
    """The error of a file that failed to read after `start` good records.

    Re-reads the file one record at a time from `start` to find the index of
    the first record that cannot be read.
    """
    index = start
    records = tf.data.TFRecordDataset(path, compression_type=compression).skip(start)
    try:
        for _ in records:
            index += 1
    except tf.errors.OpError:
        pass
    if index == 0 and _NOT_TFRECORD in error.message:
        return _not_tfrecord(path, "its first bytes are no record header")
    kind = "GZIP" if compression else "plain"
    return MalformedRecordError(
        path, index, f"the file is damaged ({kind} TFRecord): {_tf_problem(error)}"
    )


def _not_tfrecord(path: str, why: str) -> MalformedRecordError:
    return MalformedRecordError(
        path, None, f"not a TFRecord file ({why}; a CSV file would be csv:PATH)")


def _no_records(pattern: str) -> DataFileError:
    return DataFileError(f"The TFRecord files hold no records. Received: path={pattern!r}")


def check_tfrecord_starts(pattern: str, files: Sequence[str], compressions: Sequence[str]
                          ) -> None:
    """Reads the first record of every file: each is a TFRecord file, one holds records.

    One small read per file, so that a stream refuses a file of another
    format, or a set with nothing to train on, before the first step
    instead of failing (or streaming nothing) inside `fit`.

    Raises:
        MalformedRecordError: Naming a file that is not TFRecord.
        DataFileError: If no file holds a record.
    """
    any_records = False
    for path, compression in zip(files, compressions, strict=True):
        first = list(read_record_batches(path, compression, 1, limit=1))
        if first:
            any_records = True
        elif not compression and (size := tf.io.gfile.stat(path).length):
            raise _not_tfrecord(path, f"{size} bytes, less than a record header")
    if not any_records:
        raise _no_records(pattern)


def read_record_batches(path: str, compression: str, batch_size: int,
                        limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yields `(index of the first record, serialized records)` of a file."""
    records = tf.data.TFRecordDataset(path, compression_type=compression)
    if limit is not None:
        records = records.take(limit)
    iterator = records.batch(batch_size).as_numpy_iterator()
    start = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            raise _damaged(path, compression, start, error) from None
        yield start, batch
        start += len(batch)


def _every_record_batch(path: str, compression: str, version: FileVersion
                        ) -> Iterator[tuple[int, np.ndarray]]:
    """`read_record_batches` of a whole file, then checks that nothing was left out.

    TF's reader stops without an error where a plain file ends inside the
    12-byte header of a record (and its GZIP reader was seen to end a
    truncated stream as if it were complete), which would silently drop the
    rest: the records' bytes must add up to the file's (decompressed) length.

    Raises:
        DataFileError: If the file changed since `version` was taken.
        MalformedRecordError: If the file is cut short, naming the record and
            its byte offset.
    """
    records = consumed = 0
    for start, batch in read_record_batches(path, compression, READ_BATCH_RECORDS):
        yield start, batch
        records += len(batch)
        consumed += sum(map(len, batch)) + _RECORD_FRAMING_BYTES * len(batch)
    version.require_unchanged()
    length = _gzip_content_length(path, records) if compression else version.size
    if length != consumed:
        kind = "GZIP" if compression else "plain"
        raise MalformedRecordError(
            path, records, f"the file is truncated ({kind} TFRecord): it ends inside the header "
            f"of the record at byte offset {consumed}{' (uncompressed)' if compression else ''}, "
            f"after {length - consumed} of its 12 bytes"
        )


def check_tfrecord_files(pattern: str | os.PathLike) -> int:
    """Reads every record of the files once, as `load_tfrecord` does, without parsing.

    `tf_smelu.data.streaming` points here to locate damage that TF's reader
    reports without the file ("corrupted record at <byte offset>").

    Args:
        pattern: A TFRecord file or glob pattern (`tf.io.gfile` paths).

    Returns:
        The number of records.

    Raises:
        FileNotFoundError: If no file matches.
        MalformedRecordError: Naming the file, record and offset of damage,
            or a file that is not TFRecord.
        DataFileError: If a file changes while it is read, or the files
            hold no records.
    """
    files = tfrecord_files(os.fspath(pattern))
    check_tfrecord_starts(os.fspath(pattern), files, [compression_type(path) for path in files])
    records = 0
    for path in files:
        version = FileVersion.of(path)
        for _, batch in _every_record_batch(path, compression_type(path), version):
            records += len(batch)
    if not records:
        raise _no_records(os.fspath(pattern))
    return records


def _gzip_content_length(path: str, records_read: int) -> int:
    """The decompressed length of a GZIP file; raises unless its stream is complete.

    zlib reports a missing end-of-stream marker reliably. It costs one more
    decompression of the file.
    """
    length = 0
    try:
        with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
            while chunk := stream.read(1 << 20):
                length += len(chunk)
    except (EOFError, OSError, zlib.error) as error:
        raise MalformedRecordError(
            path, records_read, f"the file is damaged (GZIP TFRecord): {error}") from None
    return length


def _example(path: str, index: int, serialized: bytes) -> tf.train.Example:
    try:
        return tf.train.Example.FromString(serialized)
    except DecodeError:
        raise MalformedRecordError(path, index, "the record is not a tf.train.Example") from None


# --------------------------------------------------------------------------
# Schema.
# --------------------------------------------------------------------------


class _FeatureSurvey:
    """Type and largest length of every feature of the inspected records."""

    def __init__(self) -> None:
        self.kinds: dict[str, tuple[str, str, int]] = {}  # name -> (kind, path, index)
        self.max_lengths: dict[str, int] = {}
        self.records = 0

    def add(self, path: str, index: int, example: tf.train.Example) -> None:
        self.records += 1
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kind is None:
                continue
            first = self.kinds.setdefault(name, (kind, path, index))
            if first[0] != kind:
                raise MalformedRecordError(
                    path, index, f"feature {name!r} holds {_TYPE_NAMES[kind]} values, but "
                    f"{_TYPE_NAMES[first[0]]} values at record index {first[2]} of {first[1]}"
                )
            length = len(getattr(feature, kind).value)
            self.max_lengths[name] = max(self.max_lengths.get(name, 0), length)

    def kind(self, name: str) -> str:
        return self.kinds[name][0]


def _survey(files: Sequence[str], compressions: Mapping[str, str]) -> _FeatureSurvey:
    survey = _FeatureSurvey()
    for path in files:
        wanted = INFER_RECORDS - survey.records
        if wanted <= 0:
            break
        for start, batch in read_record_batches(path, compressions[path], wanted, limit=wanted):
            for offset, serialized in enumerate(batch):
                survey.add(path, start + offset, _example(path, start + offset, serialized))
    return survey


def _inferred_choice(name: str, survey: _FeatureSurvey) -> tuple[str, str]:
    kind, length = survey.kind(name), survey.max_lengths[name]
    if length > 1:
        return IGNORED, f"inferred: lists of up to {length} values, not supported"
    if length == 0:
        return IGNORED, f"inferred: empty in the first {survey.records} records"
    if kind == "float_list":
        return DENSE, "inferred: float"
    if kind == "bytes_list":
        return CATEGORICAL, "inferred: bytes"
    if looks_like_time(name):
        return DENSE, "inferred: int64, time-like name"
    return CATEGORICAL, "inferred: int64"


def _choose_columns(source: str, survey: _FeatureSurvey, options: SchemaOptions
                    ) -> dict[str, tuple[str, str]]:
    label_column = options.label_column
    available = sorted(survey.kinds)
    where = f"the first {survey.records} records of {source}"
    require_columns(where, available, "label_column", [label_column])
    if survey.kind(label_column) == "bytes_list" or survey.max_lengths[label_column] != 1:
        raise DataFileError(
            f"The label feature {label_column!r} must hold one int64 or float value per "
            f"record ({where}); set --label_column to another feature of {available}. "
            f"Received: label_column={label_column!r}"
        )
    given = options.given_columns(available, where)
    if given is None:
        return {name: _inferred_choice(name, survey) for name in available
                if name != label_column}
    for name, (kind, _) in given.items():
        if kind == IGNORED:
            continue
        if survey.max_lengths[name] != 1:
            raise DataFileError(
                f"Feature {name!r} must hold one value per record, but holds up to "
                f"{survey.max_lengths[name]} in {where}; remove it from --{kind}_columns."
            )
        if kind == DENSE and survey.kind(name) == "bytes_list":
            raise DataFileError(
                f"Feature {name!r} holds bytes and cannot be dense; move it to "
                f"--categorical_columns. Received: dense_columns={list(options.dense_columns)!r}"
            )
    return given


# --------------------------------------------------------------------------
# Parsing batches of records.
# --------------------------------------------------------------------------


def _wrong_type(path: str, start: int, serialized: np.ndarray, survey: _FeatureSurvey,
                names: Sequence[str], error: tf.errors.OpError) -> MalformedRecordError:
    """The error of a batch that `tf.io.parse_example` refused, tied to its record."""
    for offset, record in enumerate(serialized):
        example = _example(path, start + offset, record)
        for name in names:
            feature = example.features.feature.get(name)
            kind = None if feature is None else feature.WhichOneof("kind")
            if kind is not None and kind != survey.kind(name):
                return MalformedRecordError(
                    path, start + offset, f"feature {name!r} holds {_TYPE_NAMES[kind]} values, "
                    f"but {_TYPE_NAMES[survey.kind(name)]} values in the first records"
                )
    return MalformedRecordError(
        path, None, f"records {start} to {start + len(serialized) - 1}: {_tf_problem(error)}"
    )


def _single_values(path: str, start: int, name: str, ragged: tf.RaggedTensor
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`(values, present)`: one value per record (undefined where not present)."""
    lengths = ragged.row_lengths().numpy()
    if lengths.size and lengths.max() > 1:
        index = int(np.argmax(lengths > 1))
        raise MalformedRecordError(
            path, start + index, f"feature {name!r} holds {lengths[index]} values; one is "
            "expected (lists are not supported)"
        )
    present = lengths == 1
    values = ragged.flat_values.numpy()
    full = np.zeros(len(lengths), dtype=values.dtype) if values.dtype != object else (
        np.full(len(lengths), b"", dtype=object))
    full[present] = values
    return full, present


def _labels(path: str, start: int, name: str, values: np.ndarray, present: np.ndarray,
            threshold: float | None) -> np.ndarray:
    values = values.astype(np.float64)
    bad = ~present | ~np.isfinite(values)
    if threshold is None:
        bad |= (values != 0) & (values != 1)
    if bad.any():
        index = int(np.argmax(bad))
        problem = (f"the label feature {name!r} is missing" if not present[index] else
                   f"label feature {name!r} must be 0 or 1 (set --label_threshold to binarize "
                   f"other values) and finite. Received: {name}={values[index]!r}")
        raise MalformedRecordError(path, start + index, problem)
    return (values >= threshold if threshold is not None else values).astype(np.float32)


def _categorical_values(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Raw categorical values as an object array of text (missing: empty)."""
    if values.dtype == object:  # bytes
        return values
    text = values.astype(np.str_).astype(object)
    text[~present] = ""
    return text


@dataclasses.dataclass(frozen=True)
class _BatchParser:
    """Turns a batch of serialized records into rows of the chosen features.

    Rows: `"label"` (float32 0/1), `"categorical:<name>"` (raw values as
    text or bytes, empty where missing) and `"dense"` (`[n, len(dense)]`
    float64, NaN where missing or not finite).
    """

    survey: _FeatureSurvey
    label_column: str
    categorical: tuple[str, ...]
    dense: tuple[str, ...]
    label_threshold: float | None

    @property
    def names(self) -> list[str]:
        return [self.label_column, *self.categorical, *self.dense]

    def parse(self, path: str, start: int, serialized: np.ndarray) -> dict[str, np.ndarray]:
        features = {name: tf.io.RaggedFeature(_DTYPES[self.survey.kind(name)],
                                              row_splits_dtype=tf.int64)
                    for name in self.names}
        try:
            parsed = tf.io.parse_example(serialized, features)
        except tf.errors.InvalidArgumentError as error:
            raise _wrong_type(path, start, serialized, self.survey, self.names, error) from None
        columns = {name: _single_values(path, start, name, parsed[name]) for name in self.names}
        rows = {"label": _labels(path, start, self.label_column, *columns[self.label_column],
                                 self.label_threshold)}
        for name in self.categorical:
            rows[f"categorical:{name}"] = _categorical_values(*columns[name])
        dense = np.full((len(serialized), len(self.dense)), np.nan)
        for column, name in enumerate(self.dense):
            values, present = columns[name]
            finite = present & np.isfinite(values)
            dense[finite, column] = values[finite]
        rows["dense"] = dense
        return rows


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TFRecordSource:
    """A TFRecord file set and its schema, before any record is loaded.

    Attributes:
        pattern: The glob pattern.
        files: The matching files, sorted.
        versions: Each file's size and modification time when first seen.
        compressions: Each file's compression, `"GZIP"` or `""`.
        choices: Feature -> `(kind, decision)` (`tf_smelu.data.schema`).
        parser: The batch parser of the chosen features; its
            `categorical` and `dense` name them in schema order.
    """

    pattern: str
    files: list[str]
    versions: dict[str, FileVersion]
    compressions: dict[str, str]
    choices: dict[str, tuple[str, str]]
    parser: _BatchParser

    def kind(self, name: str) -> str:
        """The feature's value type: `"int64_list"`, `"float_list"` or `"bytes_list"`."""
        return self.parser.survey.kind(name)


def inspect_tfrecords(pattern: str, options: SchemaOptions) -> TFRecordSource:
    """Finds the files and infers (or checks) the schema from their first records.

    Raises:
        FileNotFoundError: If no file matches.
        MalformedRecordError: For a damaged inspected record.
        DataFileError: For no records, a label or feature the inspected
            records lack, or no categorical feature.
    """
    files = tfrecord_files(pattern)
    versions = {path: FileVersion.of(path) for path in files}  # before reading any byte
    compressions = {path: compression_type(path) for path in files}
    check_tfrecord_starts(pattern, files, [compressions[path] for path in files])
    survey = _survey(files, compressions)
    if not survey.records:
        raise _no_records(pattern)
    choices = _choose_columns(pattern, survey, options)
    categorical = tuple(name for name, (kind, _) in choices.items() if kind == CATEGORICAL)
    dense = tuple(name for name, (kind, _) in choices.items() if kind == DENSE)
    require_a_categorical_column(pattern, list(categorical), list(dense))
    parser = _BatchParser(survey, options.label_column, categorical, dense,
                          options.label_threshold)
    return TFRecordSource(pattern, files, versions, compressions, choices, parser)


def _test_rows(split: SplitConfig, file_name: str, start: int, count: int,
               held_out: bool | None) -> np.ndarray:
    """Which of `count` records from index `start` of a file are test rows.

    `held_out`: whether the file is held-out data (`eval_pattern`); `None`:
    no held-out files, the seeded hash of `"<file name>:<record index>"` splits.
    """
    if held_out is not None:
        return np.full(count, held_out)
    return split.is_test(np.array([f"{file_name}:{start + offset}" for offset in range(count)],
                                  dtype=object))


def _held_out_source(pattern: str, training: TFRecordSource, options: SchemaOptions
                     ) -> TFRecordSource:
    """The held-out files, checked to hold the training files' features and types.

    Raises:
        DataFileError: Naming the held-out files and the missing, extra or
            retyped feature.
    """
    held_out = inspect_tfrecords(pattern, options)
    kinds, training_kinds = held_out.parser.survey.kinds, training.parser.survey.kinds
    require_same_columns(pattern, sorted(kinds), training.pattern, sorted(training_kinds),
                         what="features")
    for name, (kind, path, index) in kinds.items():
        if kind != training_kinds[name][0]:
            raise DataFileError(
                f"The held-out data {pattern} must have the features of the training data "
                f"{training.pattern}: feature {name!r} holds {_TYPE_NAMES[kind]} values at "
                f"record index {index} of {path}, {_TYPE_NAMES[training_kinds[name][0]]} "
                "values in the training data"
            )
    return held_out


def load_tfrecord(
    pattern: str | os.PathLike,
    *,
    label_column: str | None = None,
    categorical_columns: Sequence[str] | None = None,
    dense_columns: Sequence[str] | None = None,
    label_threshold: float | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    dataset: str | None = None,
    eval_pattern: str | os.PathLike | None = None,
) -> LoadedDataset:
    """Train and test examples sampled, in one streaming pass, from TFRecord files.

    See the module docstring for the files, the schema, memory and errors.

    Args:
        pattern: A TFRecord file or glob pattern (plain or GZIP files).
        label_column: The label feature; `None`: `"label"`.
        categorical_columns: Categorical features (`None` or empty with
            empty `dense_columns`: inferred).
        dense_columns: Numeric features.
        label_threshold: If given, `label = value >= label_threshold`;
            otherwise labels must be 0 or 1.
        test_fraction: Share of records in the test split.
        seed: Seed of the split, the samples and the row order.
        max_train_examples: At most this many training rows (a seeded
            uniform sample); `None`: all (then all must fit in memory).
        max_test_examples: The same for the test split.
        dataset: Name of the data in the schema (default `tfrecord:PATTERN`).
        eval_pattern: Separate held-out files (`--eval_dataset`): every
            record of `pattern` may train (a sample of at most
            `max_train_examples`), the test split is a sample of these
            files' records (at most `max_test_examples`), parsed with the
            training files' schema and encoded with the vocabularies and
            statistics of the training rows. Their inspected records must
            hold the same features with the same types.

    Returns:
        `LoadedDataset` with `schema`; `item_field` is a categorical
        feature named `item_id` or `item`, if any.

    Raises:
        FileNotFoundError: If no file matches.
        MalformedRecordError: For a damaged file or a bad record.
        DataFileError: For a label or feature the inspected records lack,
            no categorical feature, or an empty split.
    """
    pattern = os.fspath(pattern)
    split = SplitConfig(test_fraction, seed, max_train_examples, max_test_examples)
    options = SchemaOptions.of(label_column, categorical_columns, dense_columns, label_threshold)
    label_column = options.label_column
    dataset = dataset or f"tfrecord:{pattern}"

    source = inspect_tfrecords(pattern, options)
    parser, choices = source.parser, source.choices
    categorical, dense = list(parser.categorical), list(parser.dense)
    # (source, held-out rows or None: the hash split) in reading order.
    sources: list[tuple[TFRecordSource, bool | None]] = [(source, None if eval_pattern is None
                                                          else False)]
    if eval_pattern is not None:
        sources.append((_held_out_source(os.fspath(eval_pattern), source, options), True))

    rng = np.random.default_rng(np.random.SeedSequence([seed, _SAMPLE_STREAM]))
    samples = {"train": ReservoirSample(max_train_examples, rng),
               "test": ReservoirSample(max_test_examples, rng)}
    missing = np.zeros(len(dense), dtype=np.int64)
    rows_read = positives = training_rows = 0
    for read, held_out in sources:
        for path in read.files:
            file_name = os.path.basename(path)  # the split's key: files may move
            for start, serialized in _every_record_batch(path, read.compressions[path],
                                                         read.versions[path]):
                rows = parser.parse(path, start, serialized)
                missing += np.isnan(rows["dense"]).sum(axis=0)
                is_test = _test_rows(split, file_name, start, len(serialized), held_out)
                if not held_out:
                    positives += int(rows["label"].sum())
                    training_rows += len(serialized)
                samples["train"].add({name: values[~is_test] for name, values in rows.items()})
                samples["test"].add({name: values[is_test] for name, values in rows.items()})
                rows_read += len(serialized)

    require_both_labels(pattern, positives, training_rows, label_column, label_threshold)
    train_rows, test_rows = samples["train"].rows(), samples["test"].rows()
    split.require_rows(samples["train"].seen, samples["test"].seen, rows_read, pattern)
    all_rows = concatenate_rows([train_rows, test_rows])
    num_train = len(train_rows["label"])
    order = split.row_order_rng()
    dense_matrix = all_rows["dense"] if dense else np.zeros((len(all_rows["label"]), 1))
    raw = RawColumns({name: all_rows[f"categorical:{name}"] for name in categorical},
                     dense_matrix, all_rows["label"])
    train, test, feature_spec = encode_splits(
        raw,
        order.permutation(num_train),
        num_train + order.permutation(len(test_rows["label"])),
        fit_encoder=lambda _, values: Vocabulary.fit(values),
        standardize=True,
    )
    item_column = infer_item_column(categorical)
    schema = options.schema(
        dataset,
        choices,
        item_column=item_column,
        item_decision="inferred: name",
        missing_values=dict(zip(dense, missing.tolist(), strict=True)),
        rows_read=rows_read,
        feature_keys=feature_spec.columns,
    )
    return LoadedDataset(
        train,
        test,
        feature_spec,
        dense_names=tuple(dense) if dense else (CONSTANT_DENSE_NAME,),
        item_field=feature_spec.columns.get(item_column),
        schema=schema,
    )
