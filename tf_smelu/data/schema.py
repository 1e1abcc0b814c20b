"""Column schemas of users' data files: the label, categorical and dense columns.

The CSV and TFRecord loaders (`tf_smelu.data.csv_data`,
`tf_smelu.data.tfrecord`) take the schema from four arguments, which are
also flags of the experiment programs (`TrainingConfig` fields of the same
names): `label_column`, `categorical_columns`, `dense_columns` and
`label_threshold`.  Unset (`None` or empty), they are inferred.

Given columns
-------------
Naming any feature column (in `categorical_columns` or `dense_columns`)
turns inference off: exactly the named columns are features, the others are
ignored (and listed as ignored in the schema).  This is also the way to drop
a column.

Inference from CSV text
-----------------------
For every column but the label, from all its values:

| values                             | name      | type        |
|------------------------------------|-----------|-------------|
| any value not a number or missing  | any       | categorical |
| whole numbers (`3`, `3.0`)         | time-like | dense       |
| whole numbers                      | id-like   | categorical |
| whole numbers, repeating (`*`)     | other     | categorical |
| whole numbers, mostly distinct     | other     | dense       |
| other numbers                      | any       | dense       |

(`*`) at most `REPEAT_RATIO` (0.5) distinct values per non-missing value,
i.e. each value occurs twice on average: codes such as ages, hours or device
types are then embedded, while counters and unnamed timestamps stay numbers.
The rule needs all rows, so it is used for CSV files only (TFRecord features
carry their type).

* Id-like names: `id`, or ending in `_id`, `-id`, `.id` or camelCase `Id`/`ID`
  (`user_id`, `itemId`, `MovieID`).  `userid` in one word is not recognised
  by name (the repetition rule usually catches it).
* Time-like names: `timestamp`, `time`, `ts`, `date`, `datetime`, `epoch`,
  or ending in `_timestamp`, `_time`, `_ts`, `_date`, `_at` (`created_at`,
  `eventTime`).  They are dense, not dropped: standardised seconds carry
  the recency signal the MovieLens loader also uses, and dropping a column
  silently would lose it; drop one by naming the feature columns.
* Missing values: empty, `nan`, `na`, `n/a`, `null`, `none` (any case)
  and non-finite numbers (`inf`, `-inf`).  They never make a numeric
  column categorical: in a dense column they are counted
  (`missing_values` of the schema, and a logged warning) and replaced by
  the training mean.  In a categorical column the raw text is a value like
  any other.
* Whole-number ids are compared as integers: `7`, `07` and `7.0` are one id.

The schema
----------
Every `LoadedDataset` of `tf_smelu.data.load_dataset` carries the schema it
was built with, as JSON-ready data (`LoadedDataset.schema`), with the keys:

* `dataset`: the dataset spec text;
* `label_column`, `label_threshold`: the label and its binarisation
  (`None`: labels are 0/1);
* `categorical_columns`, `dense_columns`, `ignored_columns`: lists of names,
  in feature order;
* `item_column`: the categorical column whose popularity groups the PD
  report uses, or `None`;
* `feature_keys`: categorical column -> its key in the features dict, the
  name of the model input that takes it (`tf_smelu.data.feature_keys`:
  `user name` -> `user_name`; most names are their own key);
* `missing_values`: dense column -> count of missing values in the rows
  read (`None` where the loader does not count them);
* `decisions`: how each choice was made, a string starting with
  `"given"`, `"inferred"`, `"default"`, `"none"` or `"fixed"` (set by
  the data format): keys `label_column`, `label_threshold`, `item_column`
  (if any) and `columns` (column name -> its decision);
* `rows_read`: data rows or records read (`None` if not counted).

`describe_schema` prints it in a few lines.

The module is over 400 lines because the rules are written out here, once,
for both loaders.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from tf_smelu.data.tabular import DataFileError

_logger = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "label"
"""The label column (CSV) or feature (TFRecord) when none is given."""

REPEAT_RATIO = 0.5
"""Whole-number columns with at most this many distinct values per non-missing
value are categorical (each value occurs twice on average)."""

MISSING_MARKERS: frozenset[str] = frozenset({"", "nan", "na", "n/a", "null", "none"})
"""Texts (lower-cased) that mean "missing" in a numeric CSV column."""

ITEM_COLUMN_NAMES: tuple[str, ...] = ("item_id", "item")
"""Lower-cased names of the categorical column inferred as the item column."""

CATEGORICAL = "categorical"
DENSE = "dense"
IGNORED = "ignored"

_INTEGER = re.compile(r"[+-]?\d+")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEPARATORS = re.compile(r"[\s_.\-]+")
_TIME_WORDS = frozenset({"timestamp", "time", "ts", "date", "datetime", "epoch"})


def _name_words(name: str) -> list[str]:
    """Lower-case words of a column name: `"eventTime"` -> `["event", "time"]`."""
    return [word for word in _WORD_SEPARATORS.split(_CAMEL_BOUNDARY.sub("_", name).lower())
            if word]


def looks_like_id(name: str) -> bool:
    """Whether a column name says "id": `id`, `user_id`, `itemId`, `MovieID`."""
    words = _name_words(name)
    return bool(words) and words[-1] == "id"


def looks_like_time(name: str) -> bool:
    """Whether a column name says "time": `timestamp`, `created_at`, `eventTime`."""
    words = _name_words(name)
    if not words:
        return False
    return words[-1] in _TIME_WORDS or (words[-1] == "at" and len(words) > 1)


def infer_item_column(categorical: Sequence[str]) -> str | None:
    """The first categorical column named like `ITEM_COLUMN_NAMES`, or `None`."""
    for name in categorical:
        if name.lower() in ITEM_COLUMN_NAMES:
            return name
    return None


# --------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------


def column_names(argument: str, names: Sequence[str] | None) -> tuple[str, ...]:
    """`names` as a tuple of unique, non-empty strings (`None` -> `()`).

    Raises:
        ValueError: For a single string, a non-string or empty name, or a
            name listed twice.
    """
    if names is None:
        return ()
    if isinstance(names, (str, bytes)):
        raise ValueError(
            f"`{argument}` must be a sequence of column names, not a string "
            f"(flag: --{argument}=a,b). Received: {argument}={names!r}"
        )
    names = tuple(names)
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(
        names
    ):
        raise ValueError(
            f"`{argument}` must list unique, non-empty column names. "
            f"Received: {argument}={list(names)!r}"
        )
    return names


def check_schema_arguments(
    label_column: str | None,
    categorical_columns: Sequence[str],
    dense_columns: Sequence[str],
    label_threshold: float | None = None,
    label_is_default: bool = False,
) -> None:
    """Raises ValueError if a column is both categorical and dense, or the label.

    Also if `label_threshold` is given and not a finite number.
    `label_is_default` says that `label_column` was not given (the message
    then names the flag that changes it).
    """
    if label_threshold is not None and (
        isinstance(label_threshold, bool) or not isinstance(label_threshold, (int, float))
        or not math.isfinite(label_threshold)
    ):
        raise ValueError(
            "--label_threshold must be a finite number. "
            f"Received: label_threshold={label_threshold!r}"
        )
    both = sorted(set(categorical_columns) & set(dense_columns))
    if both:
        raise ValueError(
            f"Column(s) {both} are named in both --categorical_columns and --dense_columns. "
            f"Received: categorical_columns={list(categorical_columns)!r}, "
            f"dense_columns={list(dense_columns)!r}"
        )
    if label_column is not None and label_column in (*categorical_columns, *dense_columns):
        default = " (the default label; set --label_column to another)" if label_is_default else ""
        raise ValueError(
            f"The label column {label_column!r}{default} cannot also be a feature column. "
            f"Received: label_column={label_column!r}, categorical_columns="
            f"{list(categorical_columns)!r}, dense_columns={list(dense_columns)!r}"
        )


# --------------------------------------------------------------------------
# Inference from text columns.
# --------------------------------------------------------------------------


def parse_number(text: str) -> float | None:
    """A stripped field as a number: NaN if missing (or not finite), `None` if text."""
    if text.lower() in MISSING_MARKERS:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else math.nan


def parse_numbers(values: np.ndarray) -> tuple[np.ndarray, int | None]:
    """float64 values of a text column (NaN for missing) and the first text index.

    Returns:
        `(numbers, first_text)`: `first_text` is the index of the first
        value that is neither a number nor missing (its number is NaN), or
        `None` if there is none.
    """
    numbers = np.empty(len(values), dtype=np.float64)
    first_text = None
    for index, text in enumerate(values.tolist()):
        number = parse_number(text)
        if number is None:
            number = math.nan
            if first_text is None:
                first_text = index
        numbers[index] = number
    return numbers, first_text


def integer_keys(values: np.ndarray, numbers: np.ndarray) -> np.ndarray | None:
    """Canonical text of whole-number values (`"07"`, `"7.0"` -> `"7"`; missing -> `""`).

    Returns `None` if a present value is not a whole number.  Integers
    written as such are converted exactly (64-bit hashed ids keep every
    digit); others through their float value.
    """
    present = ~np.isnan(numbers)
    if not np.all(np.floor(numbers[present]) == numbers[present]):
        return None
    keys = np.empty(len(values), dtype=object)
    for index, (text, number, is_present) in enumerate(
        zip(values.tolist(), numbers.tolist(), present.tolist(), strict=True)
    ):
        if not is_present:
            keys[index] = ""
        else:
            keys[index] = str(int(text)) if _INTEGER.fullmatch(text) else str(int(number))
    return keys


def infer_text_column(
    name: str, values: np.ndarray, numbers: np.ndarray, first_text: int | None,
    where: Sequence[int] | None = None,
) -> tuple[str, str, np.ndarray | None]:
    """The type of one CSV column (see the module docstring) and why.

    Args:
        name: Column name.
        values: Stripped text of every row.
        numbers: `parse_numbers(values)[0]`.
        first_text: `parse_numbers(values)[1]`.
        where: Line number of each row, for the reason text.

    Returns:
        `(type, reason, keys)`: `CATEGORICAL` or `DENSE`, the reason
        (starting with `"inferred: "`), and for whole-number categorical
        columns their canonical keys (`integer_keys`), else `None`.
    """
    if first_text is not None:
        line = f" at line {where[first_text]}" if where is not None else ""
        return CATEGORICAL, f"inferred: text, e.g. {values[first_text]!r}{line}", None
    present = int(np.sum(~np.isnan(numbers)))
    if not present:
        return DENSE, "inferred: every value missing", None
    keys = integer_keys(values, numbers)
    if keys is None:
        return DENSE, "inferred: numbers", None
    if looks_like_time(name):
        return DENSE, "inferred: whole numbers, time-like name", None
    if looks_like_id(name):
        return CATEGORICAL, "inferred: whole numbers, id-like name", keys
    distinct = len(set(keys.tolist()) - {""})
    if distinct <= REPEAT_RATIO * present:
        return CATEGORICAL, f"inferred: whole numbers, {distinct} distinct in {present}", keys
    return DENSE, f"inferred: whole numbers, {distinct} distinct in {present}", None


def require_columns(
    source: str, available: Sequence[str], argument: str, names: Sequence[str]
) -> None:
    """Raises `DataFileError` naming the flag if a column is not `available`."""
    missing = [name for name in names if name not in available]
    if missing:
        received = names[0] if argument == "label_column" else list(names)
        raise DataFileError(
            f"Column(s) {missing} not found in {source}; set --{argument} to some of "
            f"{list(available)}. Received: {argument}={received!r}"
        )


def require_same_columns(source: str, columns: Sequence[str], training_source: str,
                         training_columns: Sequence[str], what: str = "columns") -> None:
    """Raises `DataFileError` unless held-out data has the training data's columns.

    The order may differ; the message names the missing and the extra ones.
    """
    missing = [name for name in training_columns if name not in columns]
    extra = [name for name in columns if name not in training_columns]
    if missing or extra:
        raise DataFileError(
            f"The held-out data {source} must have the {what} of the training data "
            f"{training_source}: missing {missing}, extra {extra}"
        )


def require_both_labels(source: str, positives: int, rows: int, label_column: str,
                        label_threshold: float | None) -> None:
    """Raises `DataFileError` if every label is 0 or every label is 1.

    A model cannot learn from one class, and AUC is then undefined.
    """
    if 0 < positives < rows:
        return
    value = int(positives > 0)
    hint = ("check --label_threshold" if label_threshold is not None
            else "set --label_column or --label_threshold")
    raise DataFileError(
        f"Every label of {source} is {value} ({rows:,} rows): a model needs both classes; "
        f"{hint}. Received: label_column={label_column!r}, label_threshold={label_threshold!r}"
    )


def require_a_categorical_column(source: str, categorical: Sequence[str],
                                 dense: Sequence[str]) -> None:
    """Raises `DataFileError` naming the flags if no column is categorical."""
    if not categorical:
        raise DataFileError(
            f"{source} has no categorical feature column, and the models embed at least "
            "one: name id columns with --categorical_columns (e.g. "
            "--categorical_columns=user,item). "
            f"Received: categorical_columns=[], dense_columns={list(dense)!r}"
        )


# --------------------------------------------------------------------------
# The schema record.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SchemaOptions:
    """A loader's schema arguments, checked, with the label column resolved.

    Build it with `SchemaOptions.of` from the arguments as given.

    Attributes:
        label_column: The label column (`DEFAULT_LABEL_COLUMN` if none given).
        label_decision: `"given"` or `"default"`.
        categorical_columns: Given categorical columns (empty: infer).
        dense_columns: Given dense columns (empty: infer).
        label_threshold: `label = value >= label_threshold`; `None`: 0/1.
    """

    label_column: str
    label_decision: str
    categorical_columns: tuple[str, ...]
    dense_columns: tuple[str, ...]
    label_threshold: float | None

    @classmethod
    def of(
        cls,
        label_column: str | None = None,
        categorical_columns: Sequence[str] | None = None,
        dense_columns: Sequence[str] | None = None,
        label_threshold: float | None = None,
    ) -> SchemaOptions:
        """Checks the arguments (`column_names`, `check_schema_arguments`).

        Raises:
            ValueError: For bad or contradicting arguments.
        """
        categorical = column_names("categorical_columns", categorical_columns)
        dense = column_names("dense_columns", dense_columns)
        label = DEFAULT_LABEL_COLUMN if label_column is None else label_column
        check_schema_arguments(label, categorical, dense, label_threshold,
                               label_is_default=label_column is None)
        decision = "default" if label_column is None else "given"
        return cls(label, decision, categorical, dense, label_threshold)

    def given_columns(self, available: Sequence[str], source: str
                      ) -> dict[str, tuple[str, str]] | None:
        """Type and reason of every column if feature columns are given; `None`: infer.

        Raises:
            DataFileError: If a named column is not in `available`.
        """
        if not self.categorical_columns and not self.dense_columns:
            return None
        for argument in ("categorical_columns", "dense_columns"):
            require_columns(source, available, argument, getattr(self, argument))
        choices = {name: (CATEGORICAL, "given") for name in self.categorical_columns}
        choices.update({name: (DENSE, "given") for name in self.dense_columns})
        for name in available:
            if name != self.label_column and name not in choices:
                choices[name] = (IGNORED, "given: not in --categorical_columns or --dense_columns")
        return choices

    def schema(self, dataset: str, choices: Mapping[str, tuple[str, str]], **details) -> dict:
        """`make_schema` with these options' label; `details` are its other arguments."""
        return make_schema(
            dataset, label_column=self.label_column, label_threshold=self.label_threshold,
            choices=choices, label_decision=self.label_decision, **details,
        )


def make_schema(
    dataset: str,
    *,
    label_column: str,
    label_threshold: float | None,
    choices: Mapping[str, tuple[str, str]],
    label_decision: str,
    threshold_decision: str | None = None,
    item_column: str | None = None,
    item_decision: str = "given",
    missing_values: Mapping[str, int] | None = None,
    rows_read: int | None = None,
    feature_keys: Mapping[str, str] | None = None,
) -> dict:
    """The JSON-ready schema record (keys in the module docstring).

    Args:
        dataset: Dataset spec text.
        label_column: The label column.
        label_threshold: Its threshold, or `None` for 0/1 labels.
        choices: Column -> `(type, reason)`, in feature order.
        label_decision: How the label column was chosen.
        threshold_decision: How the threshold was chosen; `None`: `"given"`
            if there is one, else `"none"`.
        item_column: Categorical column of the popularity groups.
        item_decision: How `item_column` was chosen.
        missing_values: Dense column -> missing count; `None`: not counted.
        rows_read: Rows or records read; `None`: not counted.
        feature_keys: Categorical column -> features-dict key
            (`FeatureSpec.columns`); `None`: every column is its own key.
    """
    if threshold_decision is None:
        threshold_decision = "none" if label_threshold is None else "given"

    def names(kind: str) -> list[str]:
        return [name for name, (chosen, _) in choices.items() if chosen == kind]

    schema = {
        "dataset": dataset,
        "label_column": label_column,
        "label_threshold": None if label_threshold is None else float(label_threshold),
        "categorical_columns": names(CATEGORICAL),
        "dense_columns": names(DENSE),
        "ignored_columns": names(IGNORED),
        "item_column": item_column,
        "missing_values": None if missing_values is None else {
            name: int(count) for name, count in missing_values.items()},
        "decisions": {"label_column": label_decision, "label_threshold": threshold_decision,
                      **({"item_column": item_decision} if item_column else {}),
                      "columns": {name: reason for name, (_, reason) in choices.items()}},
        "rows_read": None if rows_read is None else int(rows_read),
        "feature_keys": {name: (feature_keys or {}).get(name, name) for name in names(CATEGORICAL)},
    }
    missing = {name: count for name, count in (schema["missing_values"] or {}).items() if count}
    if missing:
        _logger.warning("%s: missing values in dense columns %s, replaced by the training mean.",
                        dataset, missing)
    return schema


def describe_schema(schema: Mapping) -> str:
    """A few lines for the start of a run: label, feature columns, missing values.

    Args:
        schema: The schema a loader used (`LoadedDataset.schema`), with the
            decisions made when inferring it.

    Returns:
        The description, one line per item, as in the example.

    Examples:
        ```
        Data csv:/data/ratings.csv (1,000 rows read)
          label: rating >= 4.0 (label_column given, label_threshold given)
          categorical (2): user name (input user_name; inferred: text, e.g. 'ann'...), item_id (...)
          dense (1): timestamp (inferred: whole numbers, time-like name)
          missing values (dense, replaced by the training mean): timestamp 3
        ```
    """
    decisions = schema.get("decisions", {})
    reasons = decisions.get("columns", {})
    rows = schema.get("rows_read")
    lines = [f"Data {schema['dataset']}" + (f" ({rows:,} rows read)" if rows is not None else "")]
    threshold = schema.get("label_threshold")
    label = schema["label_column"] + (", 0/1" if threshold is None else f" >= {threshold:g}")
    lines.append(
        f"  label: {label} (label_column {decisions.get('label_column', '?')}, "
        f"label_threshold {decisions.get('label_threshold', '?')})"
    )
    keys = schema.get("feature_keys") or {}

    def described(name: str) -> str:
        key = keys.get(name, name)
        return f"{name} ({'' if key == name else f'input {key}; '}{reasons.get(name, '?')})"

    for kind in (CATEGORICAL, DENSE, IGNORED):
        names = schema.get(f"{kind}_columns") or []
        if names:
            listed = ", ".join(described(name) for name in names)
            lines.append(f"  {kind} ({len(names)}): {listed}")
    if schema.get("item_column"):
        lines.append(f"  item column (popularity groups): {schema['item_column']}")
    missing = schema.get("missing_values")
    if missing is None:
        lines.append("  missing values: not counted for this format")
    elif any(missing.values()):
        counts = ", ".join(f"{name} {count:,}" for name, count in missing.items() if count)
        lines.append(f"  missing values (dense, replaced by the training mean): {counts}")
    return "\n".join(lines)
