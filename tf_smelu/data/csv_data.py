"""Generic CSV files with a header and a binary (or thresholded) label column.

The first non-blank row is the header (column names); every later non-blank
row must have as many fields.  Files may be plain or gzip (detected from the
magic bytes); fields are stripped of surrounding whitespace and CSV double
quotes are honoured.

Columns (the rules are those of `tf_smelu.data.schema`)
------------------------------------------------------
* Label: `label_column` (default `"label"`; flag `--label_column`, or
  `csv:PATH#COLUMN`).  Its values must be 0 or 1 (`"1.0"` is fine),
  unless `label_threshold` is given (`--label_threshold`): then the label
  is `1.0` where `value >= label_threshold` (e.g. 4 for 1-5 star ratings).
* Features: if neither `categorical_columns` nor `dense_columns` is given,
  every other column is a feature and its type is inferred from all rows
  (see `tf_smelu.data.schema`): text is categorical, whole numbers with an
  id-like name (`user_id`) or repeating values are categorical, time-like
  whole numbers (`timestamp`) and other numbers are dense.  So the usual
  interaction log `user_id,item_id,timestamp,label` needs no argument.  If
  either list is given, exactly the listed columns are used and the others
  are ignored.
* Categorical columns become int64 ids: by default a `Vocabulary` of the
  *training* values (popularity ranks, out-of-vocabulary id
  `vocab_size - 1` for values first seen in the test split); with
  `num_hash_buckets` the stable hash of `HashBuckets` instead.  The empty
  string is a value like any other.  Inferred whole-number columns are
  compared as integers (`7`, `07`, `7.0` are one id); given ones as text.
* Dense columns are standardised with the mean and standard deviation of
  the training split; missing values (empty, `nan`, `inf`, `null`, ...)
  are counted (`LoadedDataset.schema["missing_values"]`) and become 0 (the
  training mean).  A file without dense columns gets one all-zero dense
  column `"constant_zero"`, because the models need a dense input.
* `item_column` (popularity groups of the PD report): given, or inferred as
  a categorical column named `item_id` or `item` (any case).
* Names: any header text is a column name (a UTF-8 byte-order mark, as
  spreadsheets write, is not part of it).  Categorical columns are keyed in
  the features dict (and named as model inputs) by `feature_keys`, e.g.
  `user name` -> `user_name`; messages and the schema use the header's
  names, and the schema's `feature_keys` maps one to the other.

The train/test split hashes the line number with the seed (`SplitConfig`).

Errors: a missing file raises `FileNotFoundError`; a missing label or
feature column, or no categorical column, a `DataFileError` naming the file,
the available columns and the flag to set; a row with the wrong number of
fields, text in a given dense column or a bad label a `MalformedRowError`
with file and line (or, with `on_error="skip"`, the row is skipped and
counted).

The whole file is held in memory as strings while it is parsed, so this
loader is meant for files of up to a few million rows.
"""

from __future__ import annotations

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
from tf_smelu.data.schema import (
    CATEGORICAL,
    DEFAULT_LABEL_COLUMN,
    DENSE,
    SchemaOptions,
    infer_item_column,
    infer_text_column,
    parse_number,
    parse_numbers,
    require_a_categorical_column,
    require_both_labels,
    require_columns,
    require_same_columns,
)
from tf_smelu.data.tabular import (
    DEFAULT_TEST_FRACTION,
    DataFileError,
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

CONSTANT_DENSE_NAME = "constant_zero"

__all__ = ["CONSTANT_DENSE_NAME", "DEFAULT_LABEL_COLUMN", "load_csv"]


def _read_header(path: str, rows, delimiter: str) -> list[str]:
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFileError(
            f"The CSV file is empty (no header row). Received: path={path!r}"
        ) from None
    header = [name.strip() for name in header]
    if len(set(header)) != len(header) or "" in header:
        raise DataFileError(
            f"The header of {path} must have unique, non-empty column names "
            f"(is delimiter={delimiter!r} right?). Received: header={header!r}"
        )
    return header


def _read_rows(path: str, delimiter: str, options: SchemaOptions, on_error: str,
               training: tuple[str, list[str]] | None = None,
               ) -> tuple[list[str], list[tuple[int, tuple[float, list[str]]]], SkippedRows]:
    """`(header, [(line number, (label, fields))], skipped rows)` of one CSV file.

    Args:
        training: For a held-out file, `(path, header)` of the training
            file, whose columns it must have (in any order).

    Raises:
        DataFileError: For no header, no label column, other columns than
            the training file's, or no valid row; `MalformedRowError` for a
            bad row (`on_error="raise"`).
    """
    label_column, label_threshold = options.label_column, options.label_threshold
    rows = read_delimited(path, delimiter=delimiter, quoted=True)
    header = _read_header(path, rows, delimiter)
    if training is not None:
        require_same_columns(path, header, *training)
    require_columns(path, header, "label_column", [label_column])
    options.given_columns(header, path)  # a named column must be in the file
    label_index = header.index(label_column)
    checked_dense = [header.index(name) for name in options.dense_columns]
    layout = f"one per header column of {path}"

    def parse_row(fields: list[str]) -> tuple[float, list[str]]:
        require_column_count(fields, len(header), layout)
        fields = [text.strip() for text in fields]
        label = parse_binary_label(
            fields[label_index],
            label_column,
            label_threshold,
            hint=" (set --label_threshold to binarize other values, e.g. 4 for ratings)",
        )
        for index in checked_dense:
            if parse_number(fields[index]) is None:
                name = header[index]
                raise RowProblem(
                    f"dense column {name!r} is not a number. Received: {name}={fields[index]!r}"
                )
        return label, fields

    skipped = SkippedRows(path)
    parsed = list(parse_rows(path, rows, parse_row, on_error=on_error, skipped=skipped))
    log_skipped(skipped)
    if not parsed:
        raise DataFileError(
            f"The CSV file has no valid data rows. Received: path={path!r}, "
            f"skipped_rows={skipped.count}"
        )
    return header, parsed, skipped


def _typed_columns(
    by_name: dict[str, np.ndarray],
    label_column: str,
    given: dict[str, tuple[str, str]] | None,
    line_numbers: np.ndarray,
) -> tuple[dict[str, tuple[str, str]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`(choices, categorical values, dense numbers)` of the feature columns.

    `choices` maps every column but the label to `(type, reason)`: `given`,
    or inferred from the values when `given` is `None`.
    """
    choices = dict(given or {})
    categorical_values: dict[str, np.ndarray] = {}
    numbers: dict[str, np.ndarray] = {}
    for name, values in by_name.items():
        if name == label_column:
            continue
        if given is None:
            column_numbers, first_text = parse_numbers(values)
            kind, reason, keys = infer_text_column(
                name, values, column_numbers, first_text, line_numbers
            )
            choices[name] = (kind, reason)
            if kind == CATEGORICAL:
                categorical_values[name] = values if keys is None else keys
            else:
                numbers[name] = column_numbers
        elif given[name][0] == CATEGORICAL:
            categorical_values[name] = values
        elif given[name][0] == DENSE:
            numbers[name] = parse_numbers(values)[0]
    return choices, categorical_values, numbers


def load_csv(
    path: str | os.PathLike,
    *,
    label_column: str | None = None,
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
    dataset: str | None = None,
    eval_path: str | os.PathLike | None = None,
) -> LoadedDataset:
    """Train and test examples of a CSV file with a label column.

    See the module docstring for column handling and errors.

    Args:
        path: Plain or gzip CSV file with a header row.
        label_column: Name of the label column; `None`: `"label"`.
        categorical_columns: Categorical feature columns (`None` or empty
            with empty `dense_columns`: inferred, see the module docstring).
        dense_columns: Numeric feature columns.
        label_threshold: If given, `label = value >= label_threshold`;
            otherwise values must be 0 or 1.
        num_hash_buckets: Hash categorical values into this many ids per
            column instead of building training vocabularies.
        item_column: Categorical column reported as `item_field` (for
            popularity groups); `None`: a column named `item_id` or `item`,
            if categorical, else none.
        delimiter: Column separator, e.g. `"\\t"` for TSV.
        test_fraction: Share of rows in the test split.
        seed: Seed of the split and of the row order.
        max_train_examples: Cap on training rows; `None`: all.
        max_test_examples: Cap on test rows; `None`: all.
        on_error: `"raise"` or `"skip"` malformed rows.
        dataset: Name of the data in the schema (default `csv:PATH`).
        eval_path: A separate held-out CSV file with the same columns (in
            any order; `--eval_dataset`): every row of `path` trains (at
            most `max_train_examples`), the test split is a seeded sample
            of this file's rows (at most `max_test_examples`), encoded with
            the vocabularies and statistics of the training rows.
            Column types are inferred from both files' rows.

    Returns:
        `LoadedDataset`; the categorical fields and dense columns are named
        after the CSV columns, and `schema` records what was used and why.

    Raises:
        FileNotFoundError: If `path` is no file.
        DataFileError: For a missing column, no categorical column, an
            empty split; `MalformedRowError` (a `DataFileError`) for a bad
            row, naming its line.
        ValueError: For arguments that contradict each other.
    """
    path = require_file(path)
    split = SplitConfig(test_fraction, seed, max_train_examples, max_test_examples)
    check_on_error(on_error)
    if num_hash_buckets is not None:
        require_positive_int("num_hash_buckets", num_hash_buckets)
    options = SchemaOptions.of(label_column, categorical_columns, dense_columns, label_threshold)
    label_column = options.label_column
    dataset = dataset or f"csv:{path}"

    header, parsed, skipped = _read_rows(path, delimiter, options, on_error)
    num_train = len(parsed)
    if eval_path is not None:
        eval_header, eval_parsed, eval_skipped = _read_rows(
            require_file(eval_path), delimiter, options, on_error, training=(path, header))
        order = [eval_header.index(name) for name in header]
        parsed += [(line, (label, [fields[i] for i in order]))
                   for line, (label, fields) in eval_parsed]
        skipped.merge(eval_skipped)
    given = options.given_columns(header, path)
    line_numbers = np.array([line_number for line_number, _ in parsed], dtype=np.int64)
    labels = np.array([label for _, (label, _) in parsed], dtype=np.float32)
    table = np.array([fields for _, (_, fields) in parsed], dtype=object)
    del parsed
    require_both_labels(path, int(labels[:num_train].sum()), num_train, label_column,
                        label_threshold)
    by_name = {name: table[:, index] for index, name in enumerate(header)}

    choices, categorical_values, numbers = _typed_columns(
        by_name, label_column, given, line_numbers
    )
    categorical = [name for name, (kind, _) in choices.items() if kind == CATEGORICAL]
    dense = [name for name, (kind, _) in choices.items() if kind == DENSE]
    require_a_categorical_column(path, categorical, dense)
    item_decision = "given"
    if item_column is None:
        item_column, item_decision = infer_item_column(categorical), "inferred: name"
    if item_column is not None and item_column not in categorical:
        raise ValueError(
            f"`item_column` must be one of the categorical columns {categorical}. "
            f"Received: item_column={item_column!r}"
        )
    if dense:
        dense_matrix = np.stack([numbers[name] for name in dense], axis=1)
        dense_names = tuple(dense)
    else:
        dense_matrix = np.zeros((len(labels), 1))
        dense_names = (CONSTANT_DENSE_NAME,)

    def fit_encoder(_: str, train_values: np.ndarray) -> CategoricalEncoder:
        if num_hash_buckets is None:
            return Vocabulary.fit(train_values)
        return HashBuckets(num_hash_buckets)

    columns = RawColumns({name: categorical_values[name] for name in categorical},
                         dense_matrix, labels)
    held_out = None if eval_path is None else np.arange(len(labels)) >= num_train
    train_rows, test_rows = split.rows(line_numbers, source=path, is_test=held_out)
    train, test, feature_spec = encode_splits(
        columns, train_rows, test_rows, fit_encoder=fit_encoder, standardize=True
    )
    schema = options.schema(
        dataset,
        choices,
        item_column=item_column,
        item_decision=item_decision,
        missing_values={name: int(np.isnan(numbers[name]).sum()) for name in dense},
        rows_read=len(labels) + skipped.count,
        feature_keys=feature_spec.columns,
    )
    return LoadedDataset(
        train,
        test,
        feature_spec,
        dense_names=dense_names,
        item_field=feature_spec.columns.get(item_column),
        skipped_rows=skipped,
        schema=schema,
    )
