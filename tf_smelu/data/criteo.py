"""Criteo-format click logs (Kaggle Display Advertising Challenge layout).

File format
-----------
One example per line, 40 tab-separated columns:

    label  I1 ... I13  C1 ... C26

* `label`: `0` or `1` (click).
* `I1`..`I13`: integer counts, possibly negative, possibly empty.
* `C1`..`C26`: categorical values (hashed hex strings in the real data),
  possibly empty.

Files may be plain text or gzip; gzip is detected from the magic bytes, not
the suffix.  Criteo *test* files without the label column are not supported.

Preprocessing
-------------
* Integer features become `log1p(max(x, 0))` (the usual DLRM transform);
  an empty field counts as 0.  They form the float32 `"dense"` feature
  `[n, 13]`, columns in the order `I1`..`I13`; they are not
  standardised, so that the streaming and in-memory loaders agree.
* Each categorical field is hashed with `tf.strings.to_hash_bucket_fast`
  (stable FarmHash) into `num_buckets` ids, per field (default
  `DEFAULT_NUM_BUCKETS`); the empty string is hashed like any value,
  so "missing" has its own (shared) bucket.  No vocabulary is built, so a
  pass over the data is never needed before training.
* Train/test split: a seeded hash of the line number
  (`tf_smelu.data.tabular.SplitConfig`), identical in both loaders.

Malformed rows (wrong number of columns, label not 0/1, non-integer `I`
field) raise `MalformedRowError` naming the file, line and problem, or with
`on_error="skip"` are skipped and counted (`LoadedDataset.skipped_rows`, also
logged as a warning).

Entry points
------------
* `load_criteo`: train and test `CTRExamples` in memory (about 270 bytes
  per row: 26 int64 ids, 13 float32 and a label; 1M rows take ~270 MB, the
  full 45M-row Kaggle file ~12 GB, so cap it with
  `max_train_examples`/`max_test_examples`, which stops reading early).
* `criteo_dataset`: streaming `tf.data.Dataset` of one split; holds one
  chunk of `chunk_rows` rows at a time.
* `read_criteo_file`: the parsed chunks themselves, in file order.
* `tf_smelu.data.criteo_synthetic.write_synthetic_criteo_file`: a
  valid Criteo-format file from the synthetic click model, for examples and
  tests without the real data.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf

from tf_smelu.data.encoding import EncodedIds, RawColumns, encode_splits, hash_to_buckets
from tf_smelu.data.features import (
    DENSE_FEATURE_NAME,
    CategoricalFeature,
    FeatureSpec,
)
from tf_smelu.data.tabular import (
    DEFAULT_TEST_FRACTION,
    LoadedDataset,
    RowProblem,
    SkippedRows,
    SplitConfig,
    check_on_error,
    log_skipped,
    parse_binary_label,
    parse_rows,
    read_delimited,
    require_column_count,
    require_file,
)
from tf_smelu.validation import require_positive_int

INTEGER_FEATURE_NAMES: tuple[str, ...] = tuple(f"I{index}" for index in range(1, 14))
CATEGORICAL_FEATURE_NAMES: tuple[str, ...] = tuple(f"C{index}" for index in range(1, 27))
NUM_COLUMNS = 1 + len(INTEGER_FEATURE_NAMES) + len(CATEGORICAL_FEATURE_NAMES)

DEFAULT_NUM_BUCKETS = 2**15
"""Hash buckets per categorical field.  26 tables of 32768 x 8 float32 are
27 MB per model (x3 with Adam's slots), affordable for several replicas; the
real data has fields with millions of values, so raise it for accuracy."""

DEFAULT_CHUNK_ROWS = 16_384
"""Rows parsed per chunk: bounds the transient memory of the raw strings."""

_LAYOUT = "label, 13 integer and 26 categorical features, tab-separated"


@dataclasses.dataclass(frozen=True)
class CriteoChunk:
    """Consecutive parsed rows of a Criteo file.

    Attributes:
        line_numbers: int64 `[n]`, 1-based line of each row in the file.
        labels: float32 `[n]` 0/1 labels.
        dense: float32 `[n, 13]`, `log1p(max(I, 0))` (missing -> 0).
        categorical: `C1`..`C26` -> int64 `[n]` hash-bucket ids.
    """

    line_numbers: np.ndarray
    labels: np.ndarray
    dense: np.ndarray
    categorical: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: np.ndarray) -> CriteoChunk:
        return CriteoChunk(
            self.line_numbers[rows],
            self.labels[rows],
            self.dense[rows],
            {name: ids[rows] for name, ids in self.categorical.items()},
        )

    def features(self) -> dict[str, np.ndarray]:
        """The features dict of these rows, as the models expect it."""
        return {**self.categorical, DENSE_FEATURE_NAME: self.dense}


def resolve_num_buckets(num_buckets: int | Mapping[str, int]) -> dict[str, int]:
    """Hash buckets of every categorical field from one int or a mapping."""
    if isinstance(num_buckets, Mapping):
        if set(num_buckets) != set(CATEGORICAL_FEATURE_NAMES):
            raise ValueError(
                "`num_buckets` given as a mapping must have exactly the keys "
                f"C1..C26. Received: num_buckets={dict(num_buckets)!r}"
            )
        return {
            name: require_positive_int(f"num_buckets[{name!r}]", num_buckets[name])
            for name in CATEGORICAL_FEATURE_NAMES
        }
    require_positive_int("num_buckets", num_buckets)
    return {name: int(num_buckets) for name in CATEGORICAL_FEATURE_NAMES}


def criteo_feature_spec(num_buckets: int | Mapping[str, int] = DEFAULT_NUM_BUCKETS) -> FeatureSpec:
    """Model inputs of Criteo data: 26 hashed fields and 13 dense features.

    Args:
        num_buckets: Hash buckets per categorical field: one int for all, or
            a mapping `C1`..`C26` -> int (as given to `load_criteo`).

    Returns:
        The `FeatureSpec` of fields `C1`..`C26` with those vocabulary sizes
        and 13 dense features.

    Raises:
        ValueError: if a bucket count is not a positive integer or the
            mapping does not name exactly `C1`..`C26`.
    """
    buckets = resolve_num_buckets(num_buckets)
    return FeatureSpec(
        categorical=tuple(CategoricalFeature(name, size) for name, size in buckets.items()),
        num_dense=len(INTEGER_FEATURE_NAMES),
    )


def _parse_count(text: str, name: str) -> int:
    if not text:
        return 0  # missing: log1p(max(0, 0)) == 0, the documented fill value
    try:
        return int(text)
    except ValueError:
        raise RowProblem(
            f"integer feature {name} is not an integer. Received: {name}={text!r}"
        ) from None


def _parse_row(fields: list[str]) -> tuple[float, list[int], list[str]]:
    require_column_count(fields, NUM_COLUMNS, _LAYOUT)
    label = parse_binary_label(fields[0], "label")
    counts = [
        _parse_count(text, name)
        for text, name in zip(fields[1:14], INTEGER_FEATURE_NAMES, strict=True)
    ]
    return label, counts, fields[14:]


def _to_chunk(
    rows: list[tuple[int, tuple[float, list[int], list[str]]]], buckets: Mapping[str, int]
) -> CriteoChunk:
    line_numbers = np.array([line_number for line_number, _ in rows], dtype=np.int64)
    labels = np.array([label for _, (label, _, _) in rows], dtype=np.float32)
    # float64: the counts are unbounded Python ints.
    counts = np.array([counts for _, (_, counts, _) in rows], dtype=np.float64)
    strings = np.array([strings for _, (_, _, strings) in rows], dtype=object)
    return CriteoChunk(
        line_numbers=line_numbers,
        labels=labels,
        dense=np.log1p(np.maximum(counts, 0.0)).astype(np.float32),
        categorical={
            name: hash_to_buckets(strings[:, column], buckets[name])
            for column, name in enumerate(CATEGORICAL_FEATURE_NAMES)
        },
    )


def read_criteo_file(
    path: str | os.PathLike,
    *,
    num_buckets: int | Mapping[str, int] = DEFAULT_NUM_BUCKETS,
    on_error: str = "raise",
    skipped: SkippedRows | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[CriteoChunk]:
    """Parses a Criteo file into chunks of at most `chunk_rows` rows, in file order.

    Args:
        path: Plain or gzip Criteo file.
        num_buckets: Hash buckets per categorical field: one int for all, or
            a mapping `C1`..`C26` -> int.
        on_error: `"raise"`: a malformed row raises `MalformedRowError`;
            `"skip"`: it is left out and recorded in `skipped`.
        skipped: Collects the skipped rows; a fresh one if `None`.
        chunk_rows: Rows per chunk.

    Returns:
        An iterator of `CriteoChunk`s (line numbers, labels, dense and hashed
        categorical arrays); the file is read as it is iterated.

    Raises:
        FileNotFoundError: At the call, if `path` is not a file.
        ValueError: At the call, if `num_buckets`, `on_error` or
            `chunk_rows` is invalid.
    """
    path = require_file(path)
    buckets = resolve_num_buckets(num_buckets)
    check_on_error(on_error)
    require_positive_int("chunk_rows", chunk_rows)
    skipped = SkippedRows(path) if skipped is None else skipped

    def chunks() -> Iterator[CriteoChunk]:
        rows = parse_rows(
            path,
            read_delimited(path, delimiter="\t", quoted=False),
            _parse_row,
            on_error=on_error,
            skipped=skipped,
        )
        while batch := list(itertools.islice(rows, chunk_rows)):
            yield _to_chunk(batch, buckets)

    return chunks()


def load_criteo(
    path: str | os.PathLike,
    *,
    num_buckets: int | Mapping[str, int] = DEFAULT_NUM_BUCKETS,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    on_error: str = "raise",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    eval_path: str | os.PathLike | None = None,
) -> LoadedDataset:
    """Train and test examples of a Criteo file, held in memory.

    Memory: about 270 bytes per kept row (see the module docstring).  With
    both caps given, reading stops as soon as both splits are full, so the
    rows come from the beginning of the file; each split is then in a seeded
    random order.

    Args:
        path: Plain or gzip Criteo file.
        num_buckets: Hash buckets per categorical field (int or mapping).
        test_fraction: Share of rows in the test split.
        seed: Seed of the split and of the row order.
        max_train_examples: Cap on training rows; `None`: all.
        max_test_examples: Cap on test rows; `None`: all.
        on_error: `"raise"` or `"skip"` malformed rows.
        chunk_rows: Rows parsed at a time.
        eval_path: A separate held-out Criteo file (`--eval_dataset`): the
            rows of `path` all train (at most `max_train_examples`), the
            test split holds this file's rows (at most `max_test_examples`).
            The encoding (hashing, `log1p`) is fitted on nothing, so both
            files are encoded alike.

    Returns:
        `LoadedDataset` with fields `C1`..`C26`, dense `I1`..`I13` and the
        skipped-row count.

    Raises:
        FileNotFoundError: if `path` (or `eval_path`) is not a file.
        MalformedRowError: with `on_error="raise"`, at the first malformed
            row (naming the file and line).
        ValueError: if an argument is invalid, or the file has no valid rows.
    """
    split = SplitConfig(test_fraction, seed, max_train_examples, max_test_examples)
    skipped = SkippedRows(os.fspath(path))
    buckets = resolve_num_buckets(num_buckets)
    kept: list[CriteoChunk] = []
    held_out_masks: list[np.ndarray] = []
    counts = {False: 0, True: 0}  # rows kept: train, test
    caps = {False: max_train_examples or np.inf, True: max_test_examples or np.inf}
    # (file, whether it is held out; None: the hash split takes test rows from it)
    files = [(path, None)] if eval_path is None else [(path, False), (eval_path, True)]
    for number, (file, held_out) in enumerate(files):
        file_skipped = SkippedRows(os.fspath(file)) if number else skipped
        for chunk in read_criteo_file(file, num_buckets=buckets, on_error=on_error,
                                      skipped=file_skipped, chunk_rows=chunk_rows):
            is_test = (split.is_test(chunk.line_numbers) if held_out is None
                       else np.full(len(chunk), held_out))
            # Drop rows of a split that is already full: they would only cost memory.
            keep = np.where(is_test, counts[True] < caps[True], counts[False] < caps[False])
            kept.append(chunk.take(keep))
            held_out_masks.append(is_test[keep])
            counts[True] += int(np.sum(is_test & keep))
            counts[False] += int(np.sum(~is_test & keep))
            splits = (False, True) if held_out is None else (held_out,)
            if all(counts[split_] >= caps[split_] for split_ in splits):
                break
        log_skipped(file_skipped)
        if number:
            skipped.merge(file_skipped)
    if not counts[False] + counts[True]:
        raise ValueError(
            f"The Criteo file has no valid rows. Received: path={os.fspath(path)!r}, "
            f"skipped_rows={skipped.count}"
        )
    columns = RawColumns(
        categorical={
            name: np.concatenate([chunk.categorical[name] for chunk in kept])
            for name in CATEGORICAL_FEATURE_NAMES
        },
        dense=np.concatenate([chunk.dense for chunk in kept]),
        labels=np.concatenate([chunk.labels for chunk in kept]),
    )
    line_numbers = np.concatenate([chunk.line_numbers for chunk in kept])
    del kept  # the concatenated copy is all that is needed from here on
    is_test = None if eval_path is None else np.concatenate(held_out_masks)
    train_rows, test_rows = split.rows(line_numbers, source=os.fspath(path), is_test=is_test)
    train, test, feature_spec = encode_splits(
        columns,
        train_rows,
        test_rows,
        fit_encoder=lambda name, _: EncodedIds(buckets[name]),
        standardize=False,
    )
    return LoadedDataset(
        train,
        test,
        feature_spec,
        dense_names=INTEGER_FEATURE_NAMES,
        skipped_rows=skipped,
    )


def criteo_dataset(
    path: str | os.PathLike,
    split: str = "train",
    *,
    batch_size: int | None = None,
    drop_remainder: bool = False,
    num_buckets: int | Mapping[str, int] = DEFAULT_NUM_BUCKETS,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    on_error: str = "raise",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tf.data.Dataset:
    """Streaming `(features, label)` dataset of one split of a Criteo file.

    Rows are in file order (shuffle with `Dataset.shuffle` if needed) and
    the split equals that of `load_criteo` with the same `test_fraction` and
    `seed` (before its caps).  Each pass re-reads the file; memory holds
    about one chunk.  A malformed row stops iteration with a `tf.errors`
    exception whose message is the `MalformedRowError` text (file and line);
    with `on_error="skip"` a summary is logged after each pass.  Build the
    model with `criteo_feature_spec(num_buckets)`.

    Args:
        path: Plain or gzip Criteo file.
        split: `"train"` or `"test"`.
        batch_size: Rows per element; `None`: single examples.
        drop_remainder: Drop a final partial batch.
        num_buckets: As in `load_criteo`.
        test_fraction: As in `load_criteo`.
        seed: As in `load_criteo`.
        on_error: As in `load_criteo`.
        chunk_rows: As in `load_criteo`.

    Returns:
        A `tf.data.Dataset` of `(features, label)`: a features dict as
        `criteo_feature_spec(num_buckets)` describes and a float32 label,
        batched if `batch_size` is given.

    Raises:
        ValueError: if `split` is neither `"train"` nor `"test"`, or another
            argument is invalid (as for `load_criteo`).
        FileNotFoundError: if `path` is not a file.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    if batch_size is not None:
        require_positive_int("batch_size", batch_size)
    split_config = SplitConfig(test_fraction, seed)
    path = os.fspath(path)
    reader_arguments = dict(num_buckets=num_buckets, on_error=on_error, chunk_rows=chunk_rows)
    # Checks the file and arguments now rather than at the first element;
    # reading only starts when the returned generator is iterated.
    read_criteo_file(path, **reader_arguments)

    def generate() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        skipped = SkippedRows(path)
        for chunk in read_criteo_file(path, skipped=skipped, **reader_arguments):
            is_test = split_config.is_test(chunk.line_numbers)
            selected = chunk.take(is_test if split == "test" else ~is_test)
            yield selected.features(), selected.labels
        log_skipped(skipped)

    signature = (
        {
            **{name: tf.TensorSpec([None], tf.int64) for name in CATEGORICAL_FEATURE_NAMES},
            DENSE_FEATURE_NAME: tf.TensorSpec([None, len(INTEGER_FEATURE_NAMES)], tf.float32),
        },
        tf.TensorSpec([None], tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if batch_size is None:
        dataset = dataset.unbatch()
    else:
        dataset = dataset.rebatch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
