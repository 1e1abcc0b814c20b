"""One string selects the dataset of an experiment (the `--dataset` flag).

Spec syntax:

* `synthetic`: seeded synthetic CTR data (`tf_smelu.data.synthetic`, default
  config), with ground-truth logits.
* `movielens_100k`: MovieLens 100k ratings via TFDS, label `rating >= 4`
  (`tf_smelu.data.movielens`; downloads a few MB on first use).
* `movielens_1m`: MovieLens 1M ratings via TFDS, label `rating >= 4`.
* `criteo:PATH`: Criteo-format TSV file, plain or gzip
  (`tf_smelu.data.criteo`).
* `csv:PATH`: CSV file with a header; the label column is the
  `label_column` argument (default `"label"`) (`tf_smelu.data.csv_data`).
* `csv:PATH#COLUMN`: CSV file whose label column is `COLUMN` (overrides
  `label_column`).  `PATH` must then not contain `#`.

A spec is parsed once, into a `DatasetSpec` (`parse_dataset_spec`), and
`str(spec)` gives the text back.  `train_examples` and `eval_examples` are the
exact sizes of the synthetic splits and *caps* for real data (a seeded random
subset of each split; fewer rows if the data has fewer).  `seed` seeds the
synthetic data, or the train/test split and row order of real data.
`vocab_cap` is the one rule for `max_vocab_size`.
"""

from __future__ import annotations

import dataclasses
import os

from tf_smelu.data import criteo, csv_data, movielens
from tf_smelu.data.synthetic import DEFAULT_VOCAB_SIZES, SyntheticCTRConfig, generate_examples
from tf_smelu.data.tabular import LoadedDataset
from tf_smelu.validation import require_non_negative_int

DATASET_SPEC_HELP = (
    "synthetic, movielens_100k, movielens_1m, criteo:PATH, csv:PATH or "
    "csv:PATH#LABEL_COLUMN"
)
"""One-line summary of the spec syntax, e.g. for a flag's help text."""

_MOVIELENS_VARIANTS = {"movielens_100k": "100k", "movielens_1m": "1m"}
_PATH_KINDS = ("criteo", "csv")
DATASET_KINDS: tuple[str, ...] = ("synthetic", *_MOVIELENS_VARIANTS, *_PATH_KINDS)
"""Every `DatasetSpec.kind`."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: the kind, and the file and label column if any.

    Build it with `DatasetSpec.parse` (or `parse_dataset_spec`); `str(spec)`
    is a spec string that parses back to an equal value.

    Attributes:
        kind: One of `DATASET_KINDS`.
        path: The file of `criteo` and `csv` specs; `None` for the others.
        label_column: The label column of a `csv:PATH#COLUMN` spec; `None`
            leaves it to the `label_column` argument of `load_dataset`.

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
            if self.kind != "csv" or not isinstance(self.label_column, str):
                raise ValueError(
                    "A label column is given only for csv datasets. "
                    f"Received: kind={self.kind!r}, label_column={self.label_column!r}"
                )
            if not self.label_column or "#" in self.label_column:
                raise ValueError(
                    "The label column must be non-empty and must not contain '#'. "
                    f"Received: label_column={self.label_column!r}"
                )
        elif self.kind == "csv" and "#" in self.path:
            raise ValueError(
                "A csv path containing '#' needs an explicit label column "
                f"(csv:PATH#LABEL_COLUMN). Received: path={self.path!r}"
            )

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """Parses and checks the syntax of a dataset spec (files are not opened).

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
        if kind == "csv" and "#" in path:
            path, _, label_column = path.rpartition("#")
            if not label_column:
                raise ValueError(
                    f"The label column after '#' is empty. Expected csv:PATH#LABEL_COLUMN. "
                    f"Received: dataset={text!r}"
                )
        if not path:
            raise ValueError(
                f"The dataset spec {kind}:PATH needs a file path. Received: dataset={text!r}"
            )
        return cls(kind, path, label_column)

    def to_text(self) -> str:
        """The spec string, e.g. `"csv:/data/a.csv#clicked"`."""
        text = self.kind if self.path is None else f"{self.kind}:{self.path}"
        return text if self.label_column is None else f"{text}#{self.label_column}"

    def __str__(self) -> str:
        return self.to_text()

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"

    def absolute(self) -> DatasetSpec:
        """A copy whose path is absolute, e.g. for a process started elsewhere."""
        if self.path is None:
            return self
        return dataclasses.replace(self, path=os.path.abspath(self.path))


def parse_dataset_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """The `DatasetSpec` of a spec string; a `DatasetSpec` is returned as is.

    Call it early to reject a bad `--dataset` before any work.

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


def load_dataset(
    spec: str | DatasetSpec,
    *,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    seed: int = 0,
    label_column: str = csv_data.DEFAULT_LABEL_COLUMN,
    data_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    max_vocab_size: int | None = None,
) -> LoadedDataset:
    """Loads train and test examples and the feature spec named by `spec`.

    Args:
        spec: Dataset spec, a string (see the module docstring) or a
            `DatasetSpec`.
        train_examples: Synthetic: number of training examples (`None`:
            the config default).  Real data: cap on the training split.
        eval_examples: The same for the test split.
        seed: Seed of the synthetic data, or of the split of real data.
        label_column: Label column of `csv:PATH`.
        data_dir: TFDS data directory for MovieLens.
        on_error: `"raise"` or `"skip"` malformed rows of files.
        max_vocab_size: Synthetic only: caps every field's vocabulary;
            `None` or `0`: no cap (see `vocab_cap`).

    Returns:
        `tf_smelu.data.tabular.LoadedDataset`: `train`, `test`,
        `feature_spec` (and `item_field`, `skipped_rows`, ...).
    """
    spec = parse_dataset_spec(spec)
    cap = vocab_cap(spec, max_vocab_size)
    caps = dict(max_train_examples=train_examples, max_test_examples=eval_examples)
    if spec.is_synthetic:
        return _load_synthetic(train_examples, eval_examples, seed, cap)
    if spec.kind in _MOVIELENS_VARIANTS:
        return movielens.load_movielens(
            _MOVIELENS_VARIANTS[spec.kind], seed=seed, data_dir=data_dir, **caps
        )
    if spec.kind == "criteo":
        return criteo.load_criteo(spec.path, seed=seed, on_error=on_error, **caps)
    return csv_data.load_csv(
        spec.path,
        label_column=spec.label_column or label_column,
        seed=seed,
        on_error=on_error,
        **caps,
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
