"""Categorical encoders, dense standardisation and the encoding of both splits.

`encode_splits` is step 3 of the real-data recipe (see `tf_smelu.data.tabular`):
it fits a `CategoricalEncoder` per field (`Vocabulary`, `HashBuckets` or
`EncodedIds`) and, optionally, the dense `Standardizer` on the training rows
only, and applies them to both splits.  Real data has no ground-truth click
model, so the `true_logits` of the resulting `CTRExamples` are all NaN.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import tensorflow as tf

from tf_smelu.data.features import (
    DENSE_FEATURE_NAME,
    CategoricalFeature,
    CTRExamples,
    FeatureSpec,
    feature_keys,
)
from tf_smelu.validation import require_positive_int


# --------------------------------------------------------------------------
# Categorical encoders and dense standardisation.
# --------------------------------------------------------------------------


class CategoricalEncoder(Protocol):
    """Maps raw categorical values to int64 ids in `[0, vocab_size)`."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, values: np.ndarray) -> np.ndarray: ...


class Vocabulary:
    """Exact ids from the training values, most frequent first, OOV last.

    Id `r` is the `r`-th most frequent training value (ties broken by
    value order, so the mapping is deterministic); values never seen in
    training, e.g. new users in the test split, share the out-of-vocabulary
    id `vocab_size - 1`.  Like the synthetic data, ids are popularity
    ranks.
    """

    def __init__(self, values_by_frequency: Sequence) -> None:
        self._ids = {value: index for index, value in enumerate(values_by_frequency)}

    @classmethod
    def fit(cls, train_values: np.ndarray) -> Vocabulary:
        unique, counts = np.unique(np.asarray(train_values), return_counts=True)
        return cls(unique[np.argsort(-counts, kind="stable")].tolist())

    @property
    def values(self) -> list:
        """The known values, by id (most frequent first)."""
        return list(self._ids)

    @property
    def vocab_size(self) -> int:
        return len(self._ids) + 1

    @property
    def oov_id(self) -> int:
        return len(self._ids)

    def encode(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        oov_id = self.oov_id
        return np.fromiter(
            (self._ids.get(value, oov_id) for value in values.tolist()),
            dtype=np.int64,
            count=values.size,
        )


def hash_to_buckets(values: np.ndarray | Sequence[str], num_buckets: int) -> np.ndarray:
    """Stable int64 bucket in `[0, num_buckets)` of each string.

    `tf.strings.to_hash_bucket_fast`: FarmHash Fingerprint64 modulo
    `num_buckets`, identical across processes, platforms and TF versions.
    """
    values = np.asarray(values, dtype=object)
    if not values.size:
        return np.zeros(values.shape, dtype=np.int64)
    return tf.strings.to_hash_bucket_fast(values, num_buckets).numpy().astype(np.int64)


@dataclasses.dataclass(frozen=True)
class HashBuckets:
    """Ids by stable hashing (`hash_to_buckets`): no vocabulary, collisions.

    Every value, seen in training or not, gets one of `num_buckets` ids.
    """

    num_buckets: int

    def __post_init__(self) -> None:
        require_positive_int("num_buckets", self.num_buckets)

    @property
    def vocab_size(self) -> int:
        return self.num_buckets

    def encode(self, values: np.ndarray) -> np.ndarray:
        return hash_to_buckets(values, self.num_buckets)


@dataclasses.dataclass(frozen=True)
class EncodedIds:
    """Encoder of columns that already hold ids in `[0, vocab_size)`.

    Used when ids are computed while reading (e.g. hashing each chunk of a
    large file), so the raw strings never need to be held in memory.
    """

    vocab_size: int

    def encode(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-column `(x - mean) / std` with statistics of the training rows.

    Missing values (NaN) are ignored by the statistics and become 0, the
    training mean, after the transform.  Constant columns keep std 1.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train_dense: np.ndarray) -> Standardizer:
        train_dense = np.asarray(train_dense, dtype=np.float64)
        with warnings.catch_warnings():
            # An all-missing column has no mean; it is handled just below.
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(train_dense, axis=0)
            std = np.nanstd(train_dense, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        return cls(mean, std)

    def transform(self, dense: np.ndarray) -> np.ndarray:
        standardized = (np.asarray(dense, dtype=np.float64) - self.mean) / self.std
        return np.nan_to_num(standardized, nan=0.0).astype(np.float32)


# --------------------------------------------------------------------------
# Raw columns -> encoded examples.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RawColumns:
    """Columns of a dataset before encoding, one entry per row.

    Attributes:
        categorical: Column name (any text; `encode_splits` derives the
            feature keys) -> raw values (any hashable dtype, or ids for
            `EncodedIds`), in feature-spec order.
        dense: `[n, num_dense]` float64, NaN where missing.
        labels: `[n]` float labels.
    """

    categorical: dict[str, np.ndarray]
    dense: np.ndarray
    labels: np.ndarray

    def take(self, rows: np.ndarray) -> RawColumns:
        return RawColumns(
            {name: values[rows] for name, values in self.categorical.items()},
            self.dense[rows],
            self.labels[rows],
        )


def make_examples(features: dict[str, np.ndarray], labels: np.ndarray) -> CTRExamples:
    """`CTRExamples` of real data: `true_logits` are unknown (NaN)."""
    labels = np.asarray(labels, dtype=np.float32)
    return CTRExamples(features, labels, np.full(labels.shape, np.nan, np.float32))


def encode_splits(
    columns: RawColumns,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    *,
    fit_encoder: Callable[[str, np.ndarray], CategoricalEncoder],
    standardize: bool,
) -> tuple[CTRExamples, CTRExamples, FeatureSpec]:
    """Fits encoders (and the standardizer) on the train rows, encodes both.

    Args:
        columns: Raw columns of all rows.
        train_rows: Indices of the training rows, in training order.
        test_rows: Indices of the test rows.
        fit_encoder: `(field name, training values) -> encoder`.
        standardize: Standardise the dense columns with training statistics;
            otherwise they are only cast to float32 (NaN -> 0).

    Returns:
        `(train, test, feature_spec)`: the features dicts and the spec name
        each field by its key (`feature_keys` of the column names), the spec
        keeps the column names (`FeatureSpec.columns`).
    """
    keys = feature_keys(columns.categorical)
    train, test = columns.take(train_rows), columns.take(test_rows)
    encoders = {
        name: fit_encoder(name, values) for name, values in train.categorical.items()
    }
    if standardize:
        transform_dense = Standardizer.fit(train.dense).transform
    else:
        def transform_dense(dense: np.ndarray) -> np.ndarray:
            return np.nan_to_num(dense, nan=0.0).astype(np.float32)

    def encode(split: RawColumns) -> CTRExamples:
        features = {
            keys[name]: encoders[name].encode(values)
            for name, values in split.categorical.items()
        }
        features[DENSE_FEATURE_NAME] = transform_dense(split.dense)
        return make_examples(features, split.labels)

    feature_spec = FeatureSpec(
        categorical=tuple(
            CategoricalFeature(keys[name], encoder.vocab_size, column=name)
            for name, encoder in encoders.items()
        ),
        num_dense=int(columns.dense.shape[1]),
    )
    return encode(train), encode(test), feature_spec
