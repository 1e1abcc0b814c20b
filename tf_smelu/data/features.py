"""Data types shared by every data source and by the models.

`FeatureSpec` describes a CTR dataset's inputs (enough to build a model);
`CTRExamples` holds a materialised block of examples.  A features dict maps
every categorical field name to int64 ids and `DENSE_FEATURE_NAME` to the
float32 dense feature matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tf_smelu.validation import require_positive_int

DENSE_FEATURE_NAME = "dense"
"""Key of the dense feature tensor in every features dict."""


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
    """One categorical input field: its features-dict key and vocabulary size."""

    name: str
    vocab_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(
                f"`name` must be a non-empty string. Received: name={self.name!r}"
            )
        require_positive_int("vocab_size", self.vocab_size)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Names and sizes of a CTR dataset's inputs, enough to build a model.

    A features dict described by this spec maps every categorical field name
    to an int64 id tensor of shape `[batch]` with values in
    `[0, vocab_size)`, and `DENSE_FEATURE_NAME` to a float32 tensor of
    shape `[batch, num_dense]`.
    """

    categorical: tuple[CategoricalFeature, ...]
    num_dense: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "categorical", tuple(self.categorical))
        if not self.categorical:
            raise ValueError(
                "`categorical` must contain at least one field. "
                f"Received: categorical={self.categorical!r}"
            )
        names = self.categorical_names
        if len(set(names)) != len(names) or DENSE_FEATURE_NAME in names:
            raise ValueError(
                "Categorical field names must be unique and must not be "
                f"{DENSE_FEATURE_NAME!r}. Received: categorical_names={names!r}"
            )
        require_positive_int("num_dense", self.num_dense)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.categorical)

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {feature.name: feature.vocab_size for feature in self.categorical}

    def get_config(self) -> dict:
        """JSON-compatible form, used inside Keras model configs."""
        return {
            "categorical": [
                {"name": feature.name, "vocab_size": feature.vocab_size}
                for feature in self.categorical
            ],
            "num_dense": self.num_dense,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> FeatureSpec:
        return cls(
            categorical=tuple(
                CategoricalFeature(**feature) for feature in config["categorical"]
            ),
            num_dense=config["num_dense"],
        )


@dataclasses.dataclass(frozen=True)
class CTRExamples:
    """A materialised block of examples (numpy), with ground-truth logits.

    `true_logits` are the click model's logits for synthetic data and all
    NaN for real data, which has no known click model.
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    true_logits: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: np.ndarray | slice) -> CTRExamples:
        """The examples at `rows` (an index array or a slice)."""
        return CTRExamples(
            {name: values[rows] for name, values in self.features.items()},
            self.labels[rows],
            self.true_logits[rows],
        )
