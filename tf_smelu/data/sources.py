"""One string selects the dataset of an experiment (the ``--dataset`` flag).

Spec syntax
-----------
==================== =========================================================
``synthetic``        Seeded synthetic CTR data (:mod:`tf_smelu.data.synthetic`,
                     default config), with ground-truth logits.
``movielens_100k``   MovieLens 100k ratings via TFDS, label ``rating >= 4``
                     (:mod:`tf_smelu.data.movielens`; downloads a few MB on
                     first use).
``movielens_1m``     MovieLens 1M ratings via TFDS, label ``rating >= 4``.
``criteo:PATH``      Criteo-format TSV file, plain or gzip
                     (:mod:`tf_smelu.data.criteo`).
``csv:PATH``         CSV file with a header; the label column is the
                     ``label_column`` argument (default ``"label"``)
                     (:mod:`tf_smelu.data.csv_data`).
``csv:PATH#COLUMN``  CSV file whose label column is ``COLUMN`` (overrides
                     ``label_column``).  ``PATH`` must then not contain ``#``.
==================== =========================================================

``train_examples`` and ``eval_examples`` are the exact sizes of the synthetic
splits and *caps* for real data (a seeded random subset of each split; fewer
rows if the data has fewer).  ``seed`` seeds the synthetic data, or the
train/test split and row order of real data.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from tf_smelu.data import criteo, csv_data, movielens
from tf_smelu.data.synthetic import DEFAULT_VOCAB_SIZES, SyntheticCTRConfig, generate_examples
from tf_smelu.data.tabular import LoadedDataset
from tf_smelu.validation import require_positive_int

DATASET_SPEC_HELP = (
    "synthetic, movielens_100k, movielens_1m, criteo:PATH, csv:PATH or "
    "csv:PATH#LABEL_COLUMN"
)
"""One-line summary of the spec syntax, e.g. for a flag's help text."""

_MOVIELENS_VARIANTS = {"movielens_100k": "100k", "movielens_1m": "1m"}
_PATH_KINDS = ("criteo", "csv")


class DatasetSpec(NamedTuple):
    """A parsed dataset spec: the kind, and the file and label column if any."""

    kind: str
    path: str | None = None
    label_column: str | None = None


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parses and checks the syntax of a dataset spec (files are not opened).

    Call it early to reject a bad ``--dataset`` before any work.

    Raises:
        ValueError: For an unknown kind or a missing path or label column.
    """
    if not isinstance(spec, str):
        raise ValueError(f"The dataset spec must be a string. Received: dataset={spec!r}")
    if spec == "synthetic" or spec in _MOVIELENS_VARIANTS:
        return DatasetSpec(spec)
    kind, colon, path = spec.partition(":")
    if not colon or kind not in _PATH_KINDS:
        raise ValueError(
            f"Unknown dataset spec. Expected one of: {DATASET_SPEC_HELP}. "
            f"Received: dataset={spec!r}"
        )
    label_column = None
    if kind == "csv" and "#" in path:
        path, _, label_column = path.rpartition("#")
        if not label_column:
            raise ValueError(
                f"The label column after '#' is empty. Expected csv:PATH#LABEL_COLUMN. "
                f"Received: dataset={spec!r}"
            )
    if not path:
        raise ValueError(
            f"The dataset spec {kind}:PATH needs a file path. Received: dataset={spec!r}"
        )
    return DatasetSpec(kind, path, label_column)


def load_dataset(
    spec: str,
    *,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    seed: int = 0,
    label_column: str = csv_data.DEFAULT_LABEL_COLUMN,
    data_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    max_vocab_size: int | None = None,
) -> LoadedDataset:
    """Loads train and test examples and the feature spec named by ``spec``.

    Args:
        spec: Dataset spec, see the module docstring.
        train_examples: Synthetic: number of training examples (``None``:
            the config default).  Real data: cap on the training split.
        eval_examples: The same for the test split.
        seed: Seed of the synthetic data, or of the split of real data.
        label_column: Label column of ``csv:PATH``.
        data_dir: TFDS data directory for MovieLens.
        on_error: ``"raise"`` or ``"skip"`` malformed rows of files.
        max_vocab_size: Synthetic only: caps every field's vocabulary (smaller
            embedding tables, e.g. for dense all-reduces in multi-worker
            training); ``None``: the default sizes.

    Returns:
        :class:`~tf_smelu.data.tabular.LoadedDataset`: ``train``, ``test``,
        ``feature_spec`` (and ``item_field``, ``skipped_rows``, ...).
    """
    parsed = parse_dataset_spec(spec)
    caps = dict(max_train_examples=train_examples, max_test_examples=eval_examples)
    if parsed.kind == "synthetic":
        return _load_synthetic(train_examples, eval_examples, seed, max_vocab_size)
    if max_vocab_size is not None:
        raise ValueError(
            "`max_vocab_size` applies to synthetic data only. "
            f"Received: dataset={spec!r}, max_vocab_size={max_vocab_size}"
        )
    if parsed.kind in _MOVIELENS_VARIANTS:
        return movielens.load_movielens(
            _MOVIELENS_VARIANTS[parsed.kind], seed=seed, data_dir=data_dir, **caps
        )
    if parsed.kind == "criteo":
        return criteo.load_criteo(parsed.path, seed=seed, on_error=on_error, **caps)
    return csv_data.load_csv(
        parsed.path,
        label_column=parsed.label_column or label_column,
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
        require_positive_int("max_vocab_size", max_vocab_size)
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
