"""Generic CSV files with a header and a named binary label column.

The first non-blank row is the header (column names); every later non-blank
row must have as many fields.  Files may be plain or gzip (detected from the
magic bytes); fields are stripped of surrounding whitespace and CSV double
quotes are honoured.

Columns
-------
* Label: `label_column` (default `"label"`).  Its values must be 0 or 1
  (`"1.0"` is fine), unless `label_threshold` is given: then the label
  is `1.0` where `value >= label_threshold` (e.g. ratings, dwell times).
* Features: if neither `categorical_columns` nor `dense_columns` is
  given, every other column is used and its type inferred from all rows:
  a column whose non-empty values all parse as numbers is dense, any other
  is categorical.  **Numeric id columns (user ids, zip codes) are then taken
  as dense**: name such columns in `categorical_columns`.  If either list
  is given, exactly the listed columns are used (a `None` list is empty)
  and the other columns are ignored.
* Categorical columns become int64 ids: by default a `Vocabulary` of the
  *training* values (popularity ranks, out-of-vocabulary id
  `vocab_size - 1` for values first seen in the test split); with
  `num_hash_buckets` the stable hash of `HashBuckets` instead.  The empty
  string is a value like any other.
* Dense columns are standardised with the mean and standard deviation of
  the training split; empty fields count as missing and become 0 (the
  training mean).  A file without dense columns gets one all-zero dense
  column `"constant_zero"`, because the models need a dense input.

The train/test split hashes the line number with the seed (`SplitConfig`).

Errors: a missing file raises `FileNotFoundError`; a missing label or
feature column a `ValueError` listing the available columns; a row with the
wrong number of fields, a non-numeric value in a dense column or a bad label
a `MalformedRowError` with file and line (or, with `on_error="skip"`, the
row is skipped and counted).

The whole file is held in memory as strings while it is parsed, so this
loader is meant for files of up to a few million rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from tf_smelu.data.encoding import (
    CategoricalEncoder,
    HashBuckets,
    RawColumns,
    Vocabulary,
    encode_splits,
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

DEFAULT_LABEL_COLUMN = "label"
CONSTANT_DENSE_NAME = "constant_zero"


def _parse_float(text: str) -> float:
    """A number from a stripped field; empty (or `nan`) means missing.

    Raises:
        ValueError: For text that is not a number, or an infinite one.
    """
    value = float(text) if text else math.nan
    if math.isinf(value):
        raise ValueError(f"infinite value {text!r}")
    return value


def _float_column(values: np.ndarray) -> np.ndarray | None:
    """The values as float64, or `None` if one is not a number."""
    try:
        return np.array([_parse_float(text) for text in values.tolist()], dtype=np.float64)
    except ValueError:
        return None


def _require_columns(path: str, header: Sequence[str], argument: str, names: Sequence[str]) -> None:
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(
            f"Column(s) {missing} not found in {path}. Available columns: "
            f"{list(header)}. Received: {argument}={names!r}"
        )


def _explicit_columns(
    path: str,
    header: Sequence[str],
    label_column: str,
    categorical_columns: Sequence[str] | None,
    dense_columns: Sequence[str] | None,
) -> tuple[list[str], list[str]] | None:
    """The requested feature columns, checked; `None` means "infer"."""
    if categorical_columns is None and dense_columns is None:
        return None
    for argument, names in (
        ("categorical_columns", categorical_columns),
        ("dense_columns", dense_columns),
    ):
        if isinstance(names, str):
            raise ValueError(
                f"`{argument}` must be a sequence of column names, not a string. "
                f"Received: {argument}={names!r}"
            )
    categorical = list(categorical_columns or ())
    dense = list(dense_columns or ())
    _require_columns(path, header, "categorical_columns", categorical)
    _require_columns(path, header, "dense_columns", dense)
    named = categorical + dense
    if label_column in named or len(set(named)) != len(named):
        raise ValueError(
            "Each feature column must be named once, and not be the label column "
            f"{label_column!r}. Received: categorical_columns={categorical!r}, "
            f"dense_columns={dense!r}"
        )
    return categorical, dense


def _read_header(path: str, rows, delimiter: str) -> list[str]:
    try:
        _, header = next(rows)
    except StopIteration:
        raise ValueError(
            f"The CSV file is empty (no header row). Received: path={path!r}"
        ) from None
    header = [name.strip() for name in header]
    if len(set(header)) != len(header) or "" in header:
        raise ValueError(
            f"The header of {path} must have unique, non-empty column names "
            f"(is delimiter={delimiter!r} right?). Received: header={header!r}"
        )
    return header


def load_csv(
    path: str | os.PathLike,
    *,
    label_column: str = DEFAULT_LABEL_COLUMN,
    categorical_columns: Sequence[str] | None = None,
    dense_columns: Sequence[str] | None = None,
    label_threshold: float | None = None,
    num_hash_buckets: int | None = None,
    item_column: str | None = None,
    delimiter: str = ",",
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    on_error: str = "raise",
) -> LoadedDataset:
    """Train and test examples of a CSV file with a binary label column.

    See the module docstring for column handling and errors.

    Args:
        path: Plain or gzip CSV file with a header row.
        label_column: Name of the label column.
        categorical_columns: Categorical feature columns (see module
            docstring for the inference when both lists are `None`).
        dense_columns: Numeric feature columns.
        label_threshold: If given, `label = value >= label_threshold`;
            otherwise values must be 0 or 1.
        num_hash_buckets: Hash categorical values into this many ids per
            column instead of building training vocabularies.
        item_column: Categorical column reported as `item_field` (for
            popularity groups); `None`: none.
        delimiter: Column separator, e.g. `"\\t"` for TSV.
        test_fraction: Share of rows in the test split.
        seed: Seed of the split and of the row order.
        max_train_examples: Cap on training rows; `None`: all.
        max_test_examples: Cap on test rows; `None`: all.
        on_error: `"raise"` or `"skip"` malformed rows.

    Returns:
        `LoadedDataset`; the categorical fields and dense columns are named
        after the CSV columns.
    """
    path = require_file(path)
    split = SplitConfig(test_fraction, seed, max_train_examples, max_test_examples)
    check_on_error(on_error)
    if num_hash_buckets is not None:
        require_positive_int("num_hash_buckets", num_hash_buckets)

    rows = read_delimited(path, delimiter=delimiter, quoted=True)
    header = _read_header(path, rows, delimiter)
    _require_columns(path, header, "label_column", [label_column])
    explicit = _explicit_columns(path, header, label_column, categorical_columns, dense_columns)
    label_index = header.index(label_column)
    checked_dense = [header.index(name) for name in explicit[1]] if explicit else []
    layout = f"one per header column of {path}"

    def parse_row(fields: list[str]) -> tuple[float, list[str]]:
        require_column_count(fields, len(header), layout)
        fields = [text.strip() for text in fields]
        label = parse_binary_label(
            fields[label_index],
            label_column,
            label_threshold,
            hint=" (pass label_threshold to binarize other values)",
        )
        for index in checked_dense:
            try:
                _parse_float(fields[index])
            except ValueError:
                name = header[index]
                raise RowProblem(
                    f"dense column {name!r} is not a finite number. "
                    f"Received: {name}={fields[index]!r}"
                ) from None
        return label, fields

    skipped = SkippedRows(path)
    parsed = list(parse_rows(path, rows, parse_row, on_error=on_error, skipped=skipped))
    log_skipped(skipped)
    if not parsed:
        raise ValueError(
            f"The CSV file has no valid data rows. Received: path={path!r}, "
            f"skipped_rows={skipped.count}"
        )
    line_numbers = np.array([line_number for line_number, _ in parsed], dtype=np.int64)
    labels = np.array([label for _, (label, _) in parsed], dtype=np.float32)
    table = np.array([fields for _, (_, fields) in parsed], dtype=object)
    del parsed
    by_name = {name: table[:, index] for index, name in enumerate(header)}

    if explicit is None:
        feature_names = [name for name in header if name != label_column]
        floats = {name: _float_column(by_name[name]) for name in feature_names}
        categorical = [name for name in feature_names if floats[name] is None]
        dense = [name for name in feature_names if floats[name] is not None]
    else:
        categorical, dense = explicit
        floats = {name: _float_column(by_name[name]) for name in dense}
    if not categorical:
        raise ValueError(
            f"{path} needs at least one categorical feature column for the models; "
            "name numeric id columns in `categorical_columns`. "
            f"Received: categorical_columns={categorical!r}, dense_columns={dense!r}"
        )
    if item_column is not None and item_column not in categorical:
        raise ValueError(
            f"`item_column` must be one of the categorical columns {categorical}. "
            f"Received: item_column={item_column!r}"
        )
    if dense:
        dense_matrix = np.stack([floats[name] for name in dense], axis=1)
        dense_names = tuple(dense)
    else:
        dense_matrix = np.zeros((len(labels), 1))
        dense_names = (CONSTANT_DENSE_NAME,)

    def fit_encoder(_: str, train_values: np.ndarray) -> CategoricalEncoder:
        if num_hash_buckets is None:
            return Vocabulary.fit(train_values)
        return HashBuckets(num_hash_buckets)

    columns = RawColumns({name: by_name[name] for name in categorical}, dense_matrix, labels)
    train_rows, test_rows = split.rows(line_numbers, source=path)
    train, test, feature_spec = encode_splits(
        columns, train_rows, test_rows, fit_encoder=fit_encoder, standardize=True
    )
    return LoadedDataset(
        train,
        test,
        feature_spec,
        dense_names=dense_names,
        item_field=item_column,
        skipped_rows=skipped,
    )
