"""One string selects the dataset of an experiment (the `--dataset` flag).

Spec syntax:

* `synthetic`: seeded synthetic CTR data (`tf_smelu.data.synthetic`, default
  config), with ground-truth logits.
* `movielens_100k`: MovieLens 100k ratings via TFDS, label
  `rating >= label_threshold` (default 4) (`tf_smelu.data.movielens`;
  downloads a few MB on first use; offline, point `data_dir` or
  `TFDS_DATA_DIR` at a prepared copy).
* `movielens_1m`: MovieLens 1M ratings via TFDS, the same way.
* `criteo:PATH`: Criteo-format TSV file, plain or gzip
  (`tf_smelu.data.criteo`).
* `csv:PATH`: CSV file with a header, plain or gzip
  (`tf_smelu.data.csv_data`).
* `tfrecord:GLOB`: TFRecord files of `tf.train.Example`s, plain or GZIP,
  read in one streaming pass (`tf_smelu.data.tfrecord`).
* `csv:PATH#COLUMN`, `tfrecord:GLOB#COLUMN`: the same, with the label
  column `COLUMN` (like `label_column`; giving both with different names is
  an error).  `PATH` must then not contain `#`.

The columns of csv and tfrecord data are inferred (`tf_smelu.data.schema`)
or given by four arguments of `load_dataset`, flags of the same names:

| argument / flag         | applies to                   | unset                      |
|-------------------------|------------------------------|----------------------------|
| `label_column`          | csv, tfrecord                | `label`                    |
| `categorical_columns`   | csv, tfrecord                | inferred                   |
| `dense_columns`         | csv, tfrecord                | inferred                   |
| `label_threshold`       | csv, tfrecord, movielens_*   | labels 0/1 (movielens: 4)  |
| `data_dir`              | movielens_*                  | TFDS's default data dir    |

Setting one for a dataset it does not apply to is an error
(`check_dataset_options`), not silently ignored.  Every loaded dataset
records the schema it used in `LoadedDataset.schema`.

A spec is parsed once, into a `DatasetSpec` (`parse_dataset_spec`), and
`str(spec)` gives the text back.  `train_examples` and `eval_examples` are the
exact sizes of the synthetic splits and *caps* for real data (a seeded random
subset of each split; fewer rows if the data has fewer).  `seed` seeds the
synthetic data, or the train/test split and row order of real data.
`vocab_cap` is the one rule for `max_vocab_size`.  (Over 400 lines: the
spec grammar and the rule of which option applies to which kind stay
together.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from tf_smelu.data import criteo, csv_data, movielens, tfrecord
from tf_smelu.data.schema import (
    CATEGORICAL,
    DEFAULT_LABEL_COLUMN,
    DENSE,
    check_schema_arguments,
    column_names,
    make_schema,
)
from tf_smelu.data.synthetic import DEFAULT_VOCAB_SIZES, SyntheticCTRConfig, generate_examples
from tf_smelu.data.tabular import LoadedDataset
from tf_smelu.validation import require_non_negative_int

DATASET_SPEC_HELP = (
    "synthetic, movielens_100k, movielens_1m, criteo:PATH, csv:PATH[#LABEL_COLUMN] or "
    "tfrecord:GLOB[#LABEL_COLUMN]"
)
"""One-line summary of the spec syntax, e.g. for a flag's help text."""

_MOVIELENS_VARIANTS = {"movielens_100k": "100k", "movielens_1m": "1m"}
_LABELLED_KINDS = ("csv", "tfrecord")
_PATH_KINDS = ("criteo", *_LABELLED_KINDS)
DATASET_KINDS: tuple[str, ...] = ("synthetic", *_MOVIELENS_VARIANTS, *_PATH_KINDS)
"""Every `DatasetSpec.kind`."""

DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    "label_column": _LABELLED_KINDS,
    "categorical_columns": _LABELLED_KINDS,
    "dense_columns": _LABELLED_KINDS,
    "label_threshold": (*_LABELLED_KINDS, *_MOVIELENS_VARIANTS),
    "data_dir": tuple(_MOVIELENS_VARIANTS),
}
"""Argument (and flag) of `load_dataset` -> the dataset kinds it applies to."""

# Label of the datasets whose columns the format fixes.
_FIXED_LABELS = {"synthetic": "click", "criteo": "label", **dict.fromkeys(
    _MOVIELENS_VARIANTS, movielens.RATING_FEATURE)}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: the kind, and the file and label column if any.

    Build it with `DatasetSpec.parse` (or `parse_dataset_spec`); `str(spec)`
    is a spec string that parses back to an equal value.

    Attributes:
        kind: One of `DATASET_KINDS`.
        path: The file (or glob pattern) of `criteo`, `csv` and `tfrecord`
            specs; `None` for the others.
        label_column: The label column of a `csv:PATH#COLUMN` or
            `tfrecord:GLOB#COLUMN` spec; `None` leaves it to the
            `label_column` argument of `load_dataset`.

    Raises:
        ValueError: For a combination no spec string describes (e.g. a path
            for `synthetic`, or a `csv` path containing `#` without a label
            column).
    """

    kind: str
    path: str | None = None
    label_column: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ValueError(
                f"Unknown dataset kind. Expected one of {DATASET_KINDS}. "
                f"Received: kind={self.kind!r}"
            )
        needs_path = self.kind in _PATH_KINDS
        if needs_path != (isinstance(self.path, str) and bool(self.path)):
            raise ValueError(
                f"The dataset kind {self.kind!r} "
                f"{'needs a file path' if needs_path else 'takes no path'}. "
                f"Received: path={self.path!r}"
            )
        if self.label_column is not None:
            if self.kind not in _LABELLED_KINDS or not isinstance(self.label_column, str):
                raise ValueError(
                    "A label column is given only for csv and tfrecord datasets. "
                    f"Received: kind={self.kind!r}, label_column={self.label_column!r}"
                )
            if not self.label_column or "#" in self.label_column:
                raise ValueError(
                    "The label column must be non-empty and must not contain '#'. "
                    f"Received: label_column={self.label_column!r}"
                )
        elif self.kind in _LABELLED_KINDS and "#" in self.path:
            raise ValueError(
                f"A {self.kind} path containing '#' needs an explicit label column "
                f"({self.kind}:PATH#LABEL_COLUMN). Received: path={self.path!r}"
            )

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """Parses and checks the syntax of a dataset spec (files are not opened).

        Args:
            text: A spec such as `"synthetic"`, `"movielens_100k"`,
                `"criteo:PATH"`, `"csv:PATH#LABEL_COLUMN"` or
                `"tfrecord:GLOB"` (`DATASET_SPEC_HELP`).

        Returns:
            The checked spec.

        Raises:
            ValueError: For an unknown kind or a missing path or label column.
        """
        if not isinstance(text, str):
            raise ValueError(f"The dataset spec must be a string. Received: dataset={text!r}")
        if text == "synthetic" or text in _MOVIELENS_VARIANTS:
            return cls(text)
        kind, colon, path = text.partition(":")
        if not colon or kind not in _PATH_KINDS:
            raise ValueError(
                f"Unknown dataset spec. Expected one of: {DATASET_SPEC_HELP}. "
                f"Received: dataset={text!r}"
            )
        label_column = None
        if kind in _LABELLED_KINDS and "#" in path:
            path, _, label_column = path.rpartition("#")
            if not label_column:
                raise ValueError(
                    f"The label column after '#' is empty. Expected {kind}:PATH#LABEL_COLUMN. "
                    f"Received: dataset={text!r}"
                )
        if not path:
            raise ValueError(
                f"The dataset spec {kind}:PATH needs a file path. Received: dataset={text!r}"
            )
        return cls(kind, path, label_column)

    def to_text(self) -> str:
        """The spec string, e.g. `"csv:/data/a.csv#clicked"`.

        Returns:
            The text `parse` reads back into an equal spec.
        """
        text = self.kind if self.path is None else f"{self.kind}:{self.path}"
        return text if self.label_column is None else f"{text}#{self.label_column}"

    def __str__(self) -> str:
        return self.to_text()

    @property
    def is_synthetic(self) -> bool:
        """Whether the spec names the generated synthetic data."""
        return self.kind == "synthetic"

    def absolute(self) -> DatasetSpec:
        """A copy whose path is absolute, e.g. for a process started elsewhere.

        URLs (`gs://bucket/part-*`, read by `tf.io.gfile`) are kept as they are.

        Returns:
            This spec when it has no path or a URL, else a copy with the
            path made absolute against the current directory.
        """
        if self.path is None or "://" in self.path:
            return self
        return dataclasses.replace(self, path=os.path.abspath(self.path))


def parse_dataset_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """The `DatasetSpec` of a spec string; a `DatasetSpec` is returned as is.

    Call it early to reject a bad `--dataset` before any work.

    Args:
        spec: A spec string (see `DatasetSpec.parse`) or a `DatasetSpec`.

    Returns:
        The checked spec.

    Raises:
        ValueError: For an unknown kind or a missing path or label column.
    """
    if isinstance(spec, DatasetSpec):
        return spec
    return DatasetSpec.parse(spec)


def vocab_cap(spec: str | DatasetSpec, max_vocab_size: int | None) -> int | None:
    """The cap on every field's vocabulary that `max_vocab_size` asks for.

    The one rule for `max_vocab_size`: `0` or `None` means no cap (returns
    `None`); a positive value caps the vocabularies of synthetic data (smaller
    embedding tables, e.g. for dense all-reduces in multi-worker training)
    and is an error for any other dataset, whose vocabularies come from the
    data.

    Args:
        spec: The dataset (a spec string or `DatasetSpec`).
        max_vocab_size: The `--max_vocab_size` value.

    Returns:
        The cap, or `None` for no cap.

    Raises:
        ValueError: If `max_vocab_size` is negative or not an integer, or
            positive with a dataset that is not synthetic.
    """
    if max_vocab_size is None:
        return None
    if not require_non_negative_int("max_vocab_size", max_vocab_size):
        return None
    spec = parse_dataset_spec(spec)
    if not spec.is_synthetic:
        raise ValueError(
            "`max_vocab_size` applies to synthetic data only. "
            f"Received: dataset={spec.to_text()!r}, max_vocab_size={max_vocab_size}"
        )
    return int(max_vocab_size)


def check_dataset_options(
    spec: str | DatasetSpec,
    *,
    label_column: str | None = None,
    categorical_columns: Sequence[str] | None = (),
    dense_columns: Sequence[str] | None = (),
    label_threshold: float | None = None,
    data_dir: str | os.PathLike | None = None,
) -> None:
    """Checks the schema and location options of `load_dataset` against `spec`.

    Each option applies only to the kinds listed in `DATASET_OPTIONS`; set
    (not `None` or empty) for another kind it is an error, as is a label
    column given both in the spec (`csv:PATH#COLUMN`) and as `label_column`
    with another name.  Runs as `TrainingConfig` is built, so bad flags fail
    before any work, and again in `load_dataset`.

    Args:
        spec: The dataset (a spec string or `DatasetSpec`).
        label_column: `--label_column`, the column holding the label (csv,
            tfrecord); `None`: the spec's or the default `label`.
        categorical_columns: `--categorical_columns`, columns read as
            categorical ids (csv, tfrecord); empty or `None`: inferred.
        dense_columns: `--dense_columns`, columns read as dense numbers
            (csv, tfrecord); empty or `None`: inferred.
        label_threshold: `--label_threshold`: a label `>=` it is a click
            (csv, tfrecord); `None`: the labels must be 0/1.
        data_dir: `--data_dir`, where TFDS keeps MovieLens (movielens only).

    Raises:
        ValueError: Naming the flag and the dataset.
    """
    spec = parse_dataset_spec(spec)
    values = {
        "label_column": label_column,
        "categorical_columns": column_names("categorical_columns", categorical_columns),
        "dense_columns": column_names("dense_columns", dense_columns),
        "label_threshold": label_threshold,
        "data_dir": None if data_dir is None else os.fspath(data_dir),
    }
    for name, value in values.items():
        if value is None or value == ():
            continue
        if spec.kind not in DATASET_OPTIONS[name]:
            raise ValueError(
                f"--{name} applies to {', '.join(DATASET_OPTIONS[name])} data only. "
                f"Received: dataset={spec.to_text()!r}, {name}={value!r}"
            )
    for name in ("label_column", "data_dir"):
        if values[name] is not None and (not isinstance(values[name], str) or not values[name]):
            raise ValueError(f"--{name} must be a non-empty string. Received: "
                             f"{name}={values[name]!r}")
    if label_column is not None and spec.label_column not in (None, label_column):
        raise ValueError(
            f"The label column is given twice, as {spec.to_text()!r} and as "
            f"--label_column={label_column}; give it once. Received: dataset="
            f"{spec.to_text()!r}, label_column={label_column!r}"
        )
    label = spec.label_column or label_column
    if label is None and spec.kind in _LABELLED_KINDS:
        label = DEFAULT_LABEL_COLUMN  # the loaders' default: a feature of that name is the label
    check_schema_arguments(label, values["categorical_columns"], values["dense_columns"],
                           label_threshold, label_is_default=label_column is None
                           and spec.label_column is None)


def check_eval_dataset(spec: str | DatasetSpec, eval_spec: str | DatasetSpec | None,
                       label_column: str | None = None) -> DatasetSpec | None:
    """Checks a separate held-out dataset (`--eval_dataset`) against the training data's.

    Held-out rows are read with the training data's schema and encoded with
    the vocabularies and statistics fitted on its training rows, so the
    held-out data must be files of the same kind (csv, tfrecord or criteo)
    with the same label column. Their columns are checked when they are
    loaded.

    Args:
        spec: The training data (`--dataset`).
        eval_spec: The held-out data, or `None` (the held-out split is
            carved from `spec`).
        label_column: The `--label_column` flag.

    Returns:
        The parsed held-out spec, or `None`.

    Raises:
        ValueError: Naming both specs.
    """
    if eval_spec is None:
        return None
    spec, eval_spec = parse_dataset_spec(spec), parse_dataset_spec(eval_spec)
    received = f"Received: dataset={spec.to_text()!r}, eval_dataset={eval_spec.to_text()!r}"
    if spec.kind not in _PATH_KINDS:
        raise ValueError(f"--eval_dataset applies to {', '.join(_PATH_KINDS)} data only (the "
                         f"held-out split of {spec.kind} data is built in). {received}")
    if eval_spec.kind != spec.kind:
        raise ValueError(
            f"--eval_dataset must be {spec.kind} data like --dataset: held-out rows are read "
            f"with the training data's schema and encoding, which a {eval_spec.kind} file "
            f"cannot match. {received}")
    label = spec.label_column or label_column
    if eval_spec.label_column not in (None, label or DEFAULT_LABEL_COLUMN):
        raise ValueError(
            f"--eval_dataset names the label column {eval_spec.label_column!r}, the training "
            f"data {label or DEFAULT_LABEL_COLUMN!r}: held-out data has the training data's "
            f"columns. {received}")
    return eval_spec


def load_dataset(
    spec: str | DatasetSpec,
    *,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    seed: int = 0,
    label_column: str | None = None,
    categorical_columns: Sequence[str] | None = (),
    dense_columns: Sequence[str] | None = (),
    label_threshold: float | None = None,
    data_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    max_vocab_size: int | None = None,
    eval_dataset: str | DatasetSpec | None = None,
) -> LoadedDataset:
    """Loads train and test examples and the feature spec named by `spec`.

    Args:
        spec: Dataset spec, a string (see the module docstring) or a
            `DatasetSpec`.
        train_examples: Synthetic: number of training examples (`None`:
            the config default).  Real data: cap on the training split.
        eval_examples: The same for the test split.
        seed: Seed of the synthetic data, or of the split of real data.
        label_column: csv/tfrecord: the label column (`None`: the spec's,
            else `"label"`).
        categorical_columns: csv/tfrecord: categorical feature columns
            (empty, with empty `dense_columns`: inferred).
        dense_columns: csv/tfrecord: numeric feature columns.
        label_threshold: csv/tfrecord: `label = value >= label_threshold`
            (`None`: labels are 0/1); MovieLens: the positive rating
            (`None`: 4).
        data_dir: MovieLens: TFDS data directory with (or for) the prepared
            data; `None`: `TFDS_DATA_DIR` or `~/tensorflow_datasets`.
        on_error: `"raise"` or `"skip"` malformed rows of csv and criteo
            files (tfrecord data always raises).
        max_vocab_size: Synthetic only: caps every field's vocabulary;
            `None` or `0`: no cap (see `vocab_cap`).
        eval_dataset: csv, tfrecord, criteo: separate held-out files of
            the same kind (`check_eval_dataset`); every row of `spec` may
            then train, and the test split is a seeded sample of at most
            `eval_examples` held-out rows, encoded with what was fitted on
            the training rows.  `None`: the test split is a seeded hash
            split of `spec`'s rows.

    Returns:
        `tf_smelu.data.tabular.LoadedDataset`: `train`, `test`,
        `feature_spec`, `schema` (and `item_field`, `skipped_rows`, ...).

    Raises:
        ValueError: For options that do not apply to the dataset or
            contradict each other (see `check_dataset_options`).
        DataFileError, OSError, MovieLensUnavailableError: For data that
            is missing, damaged or does not fit the options
            (`tf_smelu.data.DATA_ERRORS`).
    """
    spec = parse_dataset_spec(spec)
    cap = vocab_cap(spec, max_vocab_size)
    check_dataset_options(
        spec, label_column=label_column, categorical_columns=categorical_columns,
        dense_columns=dense_columns, label_threshold=label_threshold, data_dir=data_dir,
    )
    eval_spec = check_eval_dataset(spec, eval_dataset, label_column)
    caps = dict(max_train_examples=train_examples, max_test_examples=eval_examples)
    eval_path = None if eval_spec is None else eval_spec.path
    if spec.kind in _LABELLED_KINDS:
        schema_options = dict(
            label_column=spec.label_column or label_column,
            categorical_columns=categorical_columns,
            dense_columns=dense_columns,
            label_threshold=label_threshold,
            seed=seed,
            dataset=spec.to_text(),
            **caps,
        )
        if spec.kind == "csv":
            return csv_data.load_csv(spec.path, on_error=on_error, eval_path=eval_path,
                                     **schema_options)
        if on_error != "raise":
            raise ValueError(
                "TFRecord data is always checked (on_error='raise'). "
                f"Received: on_error={on_error!r}"
            )
        return tfrecord.load_tfrecord(spec.path, eval_pattern=eval_path, **schema_options)
    threshold_decision, missing_values = "fixed", None
    if spec.is_synthetic:
        loaded, missing_values = _load_synthetic(train_examples, eval_examples, seed, cap), {}
    elif spec.kind in _MOVIELENS_VARIANTS:
        threshold_decision = "default" if label_threshold is None else "given"
        if label_threshold is None:
            label_threshold = movielens.DEFAULT_POSITIVE_RATING
        loaded = movielens.load_movielens(
            _MOVIELENS_VARIANTS[spec.kind], positive_rating=label_threshold, seed=seed,
            data_dir=data_dir, **caps,
        )
    else:
        loaded = criteo.load_criteo(spec.path, seed=seed, on_error=on_error,
                                    eval_path=eval_path, **caps)
    return dataclasses.replace(
        loaded,
        schema=_fixed_schema(spec, loaded, label_threshold, threshold_decision, missing_values),
    )


def _fixed_schema(spec: DatasetSpec, loaded: LoadedDataset, label_threshold: float | None,
                  threshold_decision: str, missing_values: dict | None) -> dict:
    """The schema of a dataset whose columns its format fixes."""
    choices = {name: (CATEGORICAL, "fixed") for name in loaded.feature_spec.categorical_names}
    choices.update({name: (DENSE, "fixed") for name in loaded.dense_names})
    return make_schema(
        spec.to_text(),
        label_column=_FIXED_LABELS[spec.kind],
        label_threshold=label_threshold,
        choices=choices,
        label_decision="fixed",
        threshold_decision=None if label_threshold is None else threshold_decision,
        item_column=loaded.item_field,
        item_decision="fixed",
        missing_values=missing_values,
        feature_keys=loaded.feature_spec.columns,
    )


def _load_synthetic(
    train_examples: int | None,
    eval_examples: int | None,
    seed: int,
    max_vocab_size: int | None = None,
) -> LoadedDataset:
    overrides: dict = {
        name: value
        for name, value in (("num_examples", train_examples), ("num_eval_examples", eval_examples))
        if value is not None
    }
    if max_vocab_size is not None:
        overrides["vocab_sizes"] = {
            name: min(size, max_vocab_size) for name, size in DEFAULT_VOCAB_SIZES.items()
        }
    config = SyntheticCTRConfig(seed=seed, **overrides)
    return LoadedDataset(
        train=generate_examples(config, "train"),
        test=generate_examples(config, "test"),
        feature_spec=config.feature_spec(),
        dense_names=tuple(f"dense_{index}" for index in range(config.num_dense)),
        item_field="item_id",
    )
