"""Building blocks shared by the real-data loaders (MovieLens, Criteo, CSV).

Every loader turns raw records into the interface of the synthetic data
(`tf_smelu.data.synthetic`): `CTRExamples` blocks whose features dict maps
each categorical field to int64 ids in `[0, vocab_size)` and
`DENSE_FEATURE_NAME` to float32 `[n, num_dense]`, plus a `FeatureSpec` for
the models, returned together as a `LoadedDataset`.  The common recipe is:

1. read raw columns (`tf_smelu.data.encoding.RawColumns`) and one *split
   key* per row;
2. `SplitConfig.rows` assigns rows to train or test by a seeded hash of
   their key, shuffles each split with the seed and caps its size;
3. `tf_smelu.data.encoding.encode_splits` fits the categorical encoders
   (`Vocabulary`, `HashBuckets`) and the dense `Standardizer` on the
   training rows only and applies them to both splits.

Real data has no ground-truth click model, so `CTRExamples.true_logits` is
all NaN for these loaders.

Text files are read with `read_delimited` (plain or gzip, detected from the
magic bytes) and `parse_rows`, which turns a row parser's `RowProblem` into a
`MalformedRowError` naming the file and line, or skips and counts the row in
`SkippedRows`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import logging
import math
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TextIO, TypeVar

import numpy as np
import tensorflow as tf

from tf_smelu.data.features import CTRExamples, FeatureSpec
from tf_smelu.validation import require_in_range, require_non_negative_int, require_positive_int

_logger = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = 0.1
"""Share of rows that the seeded hash split sends to the test split."""

ON_ERROR_CHOICES: tuple[str, ...] = ("raise", "skip")
"""What file loaders do with a malformed row: raise, or skip and count it."""

MAX_REPORTED_ROWS = 5
"""How many skipped rows `SkippedRows` keeps (line number and reason)."""

DEFAULT_TRAFFIC_QUANTILES: tuple[float, ...] = (0.5, 0.9)
"""Default head/torso/tail split of `popularity_buckets`: the most popular ids
carrying the first 50% of the traffic are the head, the next 40% the torso,
the last 10% the tail."""

_GZIP_MAGIC = b"\x1f\x8b"
# Hash range of the train/test split: fine enough that test_fraction is
# honoured to ~1e-9, small enough to stay well inside int64.
_SPLIT_HASH_BUCKETS = 2**30
# SeedSequence spawn key of the row shuffle, so that the shuffle and the
# split never share a random stream.
_ROW_ORDER_STREAM = 11

T = TypeVar("T")


# --------------------------------------------------------------------------
# Result type.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
    """Train and test examples of one dataset and the spec to build a model.

    Attributes:
        train: Training examples (numpy, in a seeded random order).
        test: Held-out examples.
        feature_spec: Categorical fields with vocabulary sizes and
            `num_dense`, for `tf_smelu.models.build_model`.
        dense_names: Name of each column of the dense feature matrix.
        item_field: Categorical field whose popularity defines head, torso
            and tail items (see `popularity_buckets`); `None` if the
            dataset has no natural item field.
        skipped_rows: Malformed rows skipped while reading a file
            (`on_error="skip"`); `None` for sources that are not files.
        schema: The columns actually used and how each was decided, as
            JSON-ready data (keys in `tf_smelu.data.schema`; print it with
            `describe_schema`); `load_dataset` fills it for every kind.
    """

    train: CTRExamples
    test: CTRExamples
    feature_spec: FeatureSpec
    dense_names: tuple[str, ...]
    item_field: str | None = None
    skipped_rows: SkippedRows | None = None
    schema: dict | None = None


# --------------------------------------------------------------------------
# Malformed rows: one error format, one skip counter.
# --------------------------------------------------------------------------


class RowProblem(Exception):
    """Raised by a row parser: what is wrong with the row (no location)."""


class DataFileError(ValueError):
    """A data file's content does not fit the loader: missing columns, no rows...

    Its message is one line naming the file (and the flag that fixes it, if
    any); command lines print it without a traceback (`DATA_ERRORS`).
    """


class MalformedRowError(DataFileError):
    """A row of a data file cannot be parsed; names the file and line.

    Args:
        path: The data file.
        line_number: The row's line in the file, counting from 1.
        problem: What is wrong with the row.
    """

    def __init__(self, path: str, line_number: int, problem: str) -> None:
        self.path = path
        self.line_number = line_number
        self.problem = problem
        super().__init__(f"Malformed row in {path} at line {line_number}: {problem}")


@dataclasses.dataclass
class SkippedRows:
    """Count and first few locations of the malformed rows skipped in a file.

    Args:
        path: The data file the rows were skipped in.
        count: Number of rows skipped so far.
        first: `(line number, problem)` of the first `MAX_REPORTED_ROWS`
            skipped rows.
    """

    path: str
    count: int = 0
    first: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def record(self, line_number: int, problem: str) -> None:
        """Counts one skipped row, keeping its location if among the first few.

        Args:
            line_number: The row's line in `path`.
            problem: What is wrong with the row.
        """
        self.count += 1
        if len(self.first) < MAX_REPORTED_ROWS:
            self.first.append((line_number, problem))

    @property
    def line_numbers(self) -> list[int]:
        """Line numbers of the first `MAX_REPORTED_ROWS` skipped rows."""
        return [line_number for line_number, _ in self.first]

    def merge(self, other: SkippedRows) -> None:
        """Adds the rows skipped in another file (its problems name that file).

        Args:
            other: The rows skipped in the other file.
        """
        for line_number, problem in other.first:
            self.record(line_number, f"{other.path}: {problem}")
        self.count += other.count - len(other.first)

    def summary(self) -> str:
        """One line for the log: how many rows were skipped, and the first few.

        Returns:
            The summary, naming `path`, the first rows' lines and problems.
        """
        if not self.count:
            return f"No malformed rows skipped in {self.path}."
        details = "; ".join(f"line {line}: {problem}" for line, problem in self.first)
        more = " ..." if self.count > len(self.first) else ""
        return (
            f"Skipped {self.count} malformed row(s) in {self.path} "
            f"(first: {details}{more})"
        )


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(
            f"`on_error` must be one of {ON_ERROR_CHOICES}. Received: on_error={on_error!r}"
        )
    return on_error


def require_column_count(fields: Sequence[str], expected: int, layout: str) -> None:
    """Raises `RowProblem` unless the row has `expected` columns."""
    if len(fields) != expected:
        raise RowProblem(
            f"expected {expected} columns ({layout}), found {len(fields)}. "
            f"Received: num_columns={len(fields)}"
        )


def parse_binary_label(
    text: str, column: str, threshold: float | None = None, hint: str = ""
) -> float:
    """A 0/1 label from text: must be 0 or 1, or `>= threshold` if given."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RowProblem(
            f"label column {column!r} is not a finite number. Received: {column}={text!r}"
        )
    if threshold is not None:
        return float(value >= threshold)
    if value not in (0.0, 1.0):
        raise RowProblem(
            f"label column {column!r} must be 0 or 1{hint}. Received: {column}={text!r}"
        )
    return value


# --------------------------------------------------------------------------
# Reading delimited text files.
# --------------------------------------------------------------------------


def require_file(path: str | os.PathLike) -> str:
    """`path` as a string; raises `FileNotFoundError` if it is no file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Data file not found. Received: path={path!r}")
    return path


@dataclasses.dataclass(frozen=True)
class FileVersion:
    """Size and modification time of a data file when its reading started.

    A file that a running job writes, copies or cuts while it is read would
    otherwise be used as read: part old, part new, or cut short.  Take the
    version before reading and call `require_unchanged` after the last
    byte.

    Attributes:
        path: The file (local, or a URL `tf.io.gfile` reads).
        size: Bytes.
        mtime_ns: Modification time, nanoseconds (whole seconds for URLs).
    """

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileVersion:
        """The file's version now.

        Raises:
            DataFileError: If the file is gone (e.g. removed while read).
        """
        path = os.fspath(path)
        try:
            if "://" in path:  # only tf.io.gfile reads URLs; it gives whole seconds
                stat = tf.io.gfile.stat(path)
                return cls(path, int(stat.length), int(stat.mtime_nsec))
            stat = os.stat(path)
            return cls(path, stat.st_size, stat.st_mtime_ns)
        except (OSError, tf.errors.OpError) as error:
            raise DataFileError(f"Cannot read the size of {path}: {error}") from None

    def require_unchanged(self) -> None:
        """Raises `DataFileError` if the file changed since this version.

        Raises:
            DataFileError: Naming the file and what changed.
        """
        try:
            now = FileVersion.of(self.path)
        except DataFileError:
            now = None
        if now != self:
            change = ("removed" if now is None else f"{self.size:,} -> {now.size:,} bytes"
                      if now.size != self.size else "modified")
            raise DataFileError(
                f"{self.path} changed while it was read ({change}): is something still writing "
                "or copying it? Run again when it is complete."
            )


def open_text(path: str | os.PathLike) -> TextIO:
    """Opens a UTF-8 text file for the csv module, gunzipping if it is gzip.

    Gzip is detected from the magic bytes, not the suffix, so a compressed
    file named `.txt` (or a plain one named `.gz`) still reads correctly.
    A leading UTF-8 byte-order mark (spreadsheets write one) is dropped, so
    that it does not become part of the first column's name.
    """
    path = require_file(path)
    with open(path, "rb") as stream:
        is_gzip = stream.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    if is_gzip:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _first_undecodable_line(path: str) -> int:
    """1-based number of the first line that is not UTF-8 (text is decoded in
    chunks, so the csv reader's line count does not say where it failed)."""
    with open(path, "rb") as stream:
        is_gzip = stream.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    with (gzip.open(path, "rb") if is_gzip else open(path, "rb")) as stream:
        for line_number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return line_number
    return 1  # only reached if the file changed meanwhile


def read_delimited(
    path: str | os.PathLike, *, delimiter: str, quoted: bool
) -> Iterator[tuple[int, list[str]]]:
    """Yields `(line_number, fields)` of the non-blank rows of a file.

    Args:
        path: Plain or gzip text file.
        delimiter: Column separator.
        quoted: Honour CSV double quotes; `False` takes every character
            literally (Criteo TSV).

    Line numbers are 1-based; for a quoted field spanning several lines it is
    the line where the row ends.  Problems the csv module cannot recover from
    (e.g. a NUL byte), text that is not UTF-8 and truncated gzip data raise
    `MalformedRowError` whatever `on_error`; a file that changes while it is
    read (`FileVersion`), a `DataFileError` after its last row.
    """
    path = os.fspath(path)
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    version = FileVersion.of(require_file(path))
    with open_text(path) as stream:
        reader = csv.reader(stream, delimiter=delimiter, quoting=quoting)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                version.require_unchanged()
                return
            except (csv.Error, UnicodeDecodeError, EOFError) as error:
                version.require_unchanged()  # damage may only be a write under way
                raise _unreadable(path, reader.line_num, error) from None
            if not fields:  # blank lines, e.g. a trailing empty line, carry no row
                continue
            try:
                yield reader.line_num, fields
            except GeneratorExit:  # the reader stops, e.g. at a bad row: a change is the cause
                version.require_unchanged()
                raise


def _unreadable(path: str, line_number: int, error: Exception) -> MalformedRowError:
    """The error of text the csv module could not read after `line_number`."""
    if isinstance(error, UnicodeDecodeError):
        return MalformedRowError(path, _first_undecodable_line(path),
                                 f"not UTF-8 text (a binary file?): {error.reason}")
    if isinstance(error, EOFError):  # gzip cut short
        return MalformedRowError(path, line_number + 1, f"the gzip data is truncated: {error}")
    return MalformedRowError(path, line_number, str(error))


def parse_rows(
    path: str | os.PathLike,
    numbered_rows: Iterable[tuple[int, list[str]]],
    parse_row: Callable[[list[str]], T],
    *,
    on_error: str,
    skipped: SkippedRows,
) -> Iterator[tuple[int, T]]:
    """Applies `parse_row` to each row; handles its `RowProblem`s.

    With `on_error="raise"` a problem raises `MalformedRowError`
    naming the file and line; with `"skip"` the row is left out and
    recorded in `skipped`.  Before raising, `numbered_rows` is closed, so
    that `read_delimited` can report a file changing while it is read (the
    likely cause of a cut row) instead.
    """
    for line_number, fields in numbered_rows:
        try:
            parsed = parse_row(fields)
        except RowProblem as problem:
            if on_error == "raise":
                if isinstance(numbered_rows, Generator):
                    numbered_rows.close()
                raise MalformedRowError(os.fspath(path), line_number, str(problem)) from None
            skipped.record(line_number, str(problem))
            continue
        yield line_number, parsed


def log_skipped(skipped: SkippedRows) -> None:
    if skipped.count:
        _logger.warning("%s", skipped.summary())


# --------------------------------------------------------------------------
# Train/test split.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Seeded, order-independent train/test split of keyed rows.

    A row goes to the test split iff a stable hash (FarmHash fingerprint via
    `tf.strings.to_hash_bucket_fast`) of `"{seed}:{key}"` falls in the
    first `test_fraction` of the hash range.  The assignment of a row
    depends only on its key and the seed, not on the other rows, the file
    order or the platform.  Each split is then put in a seeded random order
    (data files are often sorted by user or time, which would make
    consecutive training batches far from i.i.d.) and cut to at most
    `max_*_examples` rows, a random subset.

    Attributes:
        test_fraction: Expected share of rows in the test split, in (0, 1).
        seed: Seed of the split and of the row order.
        max_train_examples: Cap on the training rows; `None`: all.
        max_test_examples: Cap on the test rows; `None`: all.
    """

    test_fraction: float = DEFAULT_TEST_FRACTION
    seed: int = 0
    max_train_examples: int | None = None
    max_test_examples: int | None = None

    def __post_init__(self) -> None:
        require_in_range(
            "test_fraction",
            self.test_fraction,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        require_non_negative_int("seed", self.seed)
        for name in ("max_train_examples", "max_test_examples"):
            if getattr(self, name) is not None:
                require_positive_int(name, getattr(self, name))

    def is_test(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows (given by their keys) in the test split.

        Keys may be strings or integers (e.g. line numbers).
        """
        keys = tf.convert_to_tensor(np.asarray(keys))
        if keys.dtype != tf.string:
            keys = tf.strings.as_string(keys)
        salted = tf.strings.join([f"{self.seed}:", keys])
        buckets = tf.strings.to_hash_bucket_fast(salted, _SPLIT_HASH_BUCKETS).numpy()
        return buckets < round(self.test_fraction * _SPLIT_HASH_BUCKETS)

    def rows(self, keys: np.ndarray, source: str, is_test: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Shuffled, capped row indices `(train_rows, test_rows)`.

        Args:
            keys: The rows' keys.
            source: Names the data in errors.
            is_test: The test rows when they come from a separate held-out
                file (`--eval_dataset`); `None`: the seeded hash split.

        Raises:
            DataFileError: If a split is empty (too few rows in `source`).
        """
        if is_test is None:
            is_test = self.is_test(keys)
        rng = self.row_order_rng()
        train_rows = rng.permutation(np.flatnonzero(~is_test))[: self.max_train_examples]
        test_rows = rng.permutation(np.flatnonzero(is_test))[: self.max_test_examples]
        self.require_rows(len(train_rows), len(test_rows), len(is_test), source)
        return train_rows, test_rows

    def row_order_rng(self) -> np.random.Generator:
        """The seeded generator of the row order (never shared with the split)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, _ROW_ORDER_STREAM]))

    def require_rows(self, num_train: int, num_test: int, num_rows: int, source: str) -> None:
        """Raises `DataFileError` if a split of `source` is empty."""
        for split, size in (("train", num_train), ("test", num_test)):
            if not size:
                raise DataFileError(
                    f"The {split} split of {source} is empty: too few rows for "
                    f"test_fraction={self.test_fraction}. Received: "
                    f"num_rows={num_rows}, test_fraction={self.test_fraction}"
                )


# --------------------------------------------------------------------------
# Popularity groups for evaluation.
# --------------------------------------------------------------------------


def popularity_buckets(
    train_ids: np.ndarray,
    ids: np.ndarray,
    traffic_quantiles: Sequence[float] = DEFAULT_TRAFFIC_QUANTILES,
) -> np.ndarray:
    """Popularity bucket (0 = head, ..., last = tail) of each id, from counts.

    Ids are ranked by their number of occurrences in `train_ids`; bucket
    `k` is the smallest set of most frequent ids carrying
    `traffic_quantiles[k]` of the training traffic, minus the earlier
    buckets.  Ids absent from `train_ids` fall in the tail.  Works for any
    dataset, synthetic or real, since it needs only the training ids.

    Args:
        train_ids: Non-negative int ids of the training examples (one field).
        ids: Ids to classify, e.g. `test.features[item_field]`.
        traffic_quantiles: Strictly increasing cumulative traffic shares in
            `(0, 1)`; `len(traffic_quantiles) + 1` buckets result.

    Returns:
        int64 array with the shape of `ids`.

    Raises:
        ValueError: if `traffic_quantiles` is empty, not strictly increasing
            or not inside `(0, 1)`, `train_ids` is empty, or an id is
            negative.
    """
    quantiles = np.asarray(traffic_quantiles, dtype=np.float64)
    if (
        quantiles.ndim != 1
        or not quantiles.size
        or not np.all((quantiles > 0) & (quantiles < 1))
        or np.any(np.diff(quantiles) <= 0)
    ):
        raise ValueError(
            "`traffic_quantiles` must be a non-empty, strictly increasing sequence "
            f"of numbers in (0, 1). Received: traffic_quantiles={traffic_quantiles!r}"
        )
    train_ids = np.asarray(train_ids, dtype=np.int64).ravel()
    ids = np.asarray(ids, dtype=np.int64)
    if not train_ids.size or train_ids.min() < 0 or (ids.size and ids.min() < 0):
        raise ValueError(
            "`train_ids` must be non-empty and all ids non-negative. "
            f"Received: train_ids.size={train_ids.size}"
        )
    num_ids = int(max(train_ids.max(), ids.max(initial=0))) + 1
    counts = np.bincount(train_ids, minlength=num_ids)
    ids_by_popularity = np.argsort(-counts, kind="stable")
    rank = np.empty(num_ids, dtype=np.int64)
    rank[ids_by_popularity] = np.arange(num_ids)
    cumulative_share = np.cumsum(counts[ids_by_popularity]) / counts.sum()
    # +1: "rank that crosses the quantile" -> exclusive upper rank bound.
    boundaries = np.searchsorted(cumulative_share, quantiles, side="left") + 1
    return np.searchsorted(boundaries, rank[ids], side="right").astype(np.int64)
