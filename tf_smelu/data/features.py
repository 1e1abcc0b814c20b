"""Data types shared by every data source and by the models.

`FeatureSpec` describes a CTR dataset's inputs (enough to build a model);
`CTRExamples` holds a materialised block of examples.  A features dict maps
every categorical field name to int64 ids and `DENSE_FEATURE_NAME` to the
float32 dense feature matrix.

Feature names
-------------
A field's `name` is its key in the features dict and the name of its Keras
input and layers, so it must be a *feature key*: an ASCII identifier
(`is_feature_key`) other than `DENSE_FEATURE_NAME`.  Users' files may name
their columns anything (`user name`, `price (€)`, `usuário`):
`feature_keys` derives the keys from the column names by one rule, and the
column name stays with the field (`CategoricalFeature.column`) for whatever
a user reads (the printed schema, messages, results.json).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Mapping

import numpy as np

from tf_smelu.validation import require_positive_int

DENSE_FEATURE_NAME = "dense"
"""Key of the dense feature tensor in every features dict."""

_FEATURE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9]+")


def is_feature_key(name: object) -> bool:
    """Whether `name` can be a field's features-dict key, Keras input and layer name.

    That is an ASCII identifier (`user_id`, `C1`, `_x`): Keras name scopes
    refuse spaces and most punctuation, and TF signatures want identifiers.
    (A field may not be called `DENSE_FEATURE_NAME` either; `FeatureSpec`
    checks that.)

    Args:
        name: A candidate key (any object).

    Returns:
        True if `name` is a string and an ASCII identifier.
    """
    return isinstance(name, str) and _FEATURE_KEY.fullmatch(name) is not None


def _key_from(column: str) -> str:
    """`column` reduced to an identifier: accents dropped, other runs -> `_`."""
    ascii_text = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode()
    key = _NOT_KEY_CHARACTERS.sub("_", ascii_text).strip("_") or "feature"
    return f"f_{key}" if key[0].isdigit() else key


def feature_keys(columns: Iterable[str]) -> dict[str, str]:
    """The feature key of every column name: the one rule for feature names.

    A column whose name is already a feature key (`is_feature_key`) other
    than `DENSE_FEATURE_NAME` keeps it.  Every other name is reduced to an
    ASCII identifier (accents dropped, any other run of characters that are
    not letters or digits replaced by `_`, `f_` before a leading digit,
    `feature` if nothing is left) and, if that key is taken, suffixed `_2`,
    `_3`, ...  Keys depend only on the names and their order, so every run
    derives the same ones.

    Example: `user name, price (€), usuário, 2nd, dense, user_name` ->
    `user_name_2, price, usuario, f_2nd, dense_2, user_name`.

    Args:
        columns: Unique column names, in feature order.

    Returns:
        Column name -> key, in the order of `columns`; keys are unique.
    """
    columns = list(columns)
    kept = [name for name in columns if is_feature_key(name) and name != DENSE_FEATURE_NAME]
    taken = {DENSE_FEATURE_NAME, *kept}
    keys = {}
    for column in columns:
        if column in kept:
            keys[column] = column
            continue
        key = base = _key_from(column)
        suffix = 1
        while key in taken:
            suffix += 1
            key = f"{base}_{suffix}"
        taken.add(key)
        keys[column] = key
    return keys


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
    """One categorical input field: its features-dict key and vocabulary size.

    Attributes:
        name: The feature key (`is_feature_key`): features-dict key, Keras
            input name and part of layer names.
        vocab_size: Ids are in `[0, vocab_size)`.
        column: The data's name for the field when it differs from `name`
            (a CSV header such as `"user name"`; see `feature_keys`); `None`
            when they are the same.

    Raises:
        ValueError: if `name` is not an ASCII identifier, `vocab_size` is not
            a positive integer, or `column` is an empty string or not a string.
    """

    name: str
    vocab_size: int
    column: str | None = None

    def __post_init__(self) -> None:
        if not is_feature_key(self.name):
            raise ValueError(
                "`name` must be an ASCII identifier (letters, digits, `_`); "
                "tf_smelu.data.feature_keys derives one from any column name. "
                f"Received: name={self.name!r}"
            )
        require_positive_int("vocab_size", self.vocab_size)
        if self.column == self.name:
            object.__setattr__(self, "column", None)
        elif self.column is not None and (not isinstance(self.column, str) or not self.column):
            raise ValueError(
                f"`column` must be a non-empty string or None. Received: column={self.column!r}"
            )

    @property
    def display_name(self) -> str:
        """The name a user knows the field by: `column`, else `name`."""
        return self.column or self.name

    def describe(self) -> str:
        """`name`, with the column name when it differs: `user_name ('user name')`.

        Returns:
            The text for messages and logs.
        """
        return self.name if self.column is None else f"{self.name} ({self.column!r})"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Names and sizes of a CTR dataset's inputs, enough to build a model.

    A features dict described by this spec maps every categorical field name
    to an int64 id tensor of shape `[batch]` with values in
    `[0, vocab_size)`, and `DENSE_FEATURE_NAME` to a float32 tensor of
    shape `[batch, num_dense]`.

    Attributes:
        categorical: The categorical fields, in the model's input order.
        num_dense: Number of dense features, `>= 1`.

    Raises:
        ValueError: if `categorical` is empty, two fields share a name or
            one is named `DENSE_FEATURE_NAME`, or `num_dense` is not a
            positive integer.
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
        """The categorical fields' keys, in input order."""
        return tuple(feature.name for feature in self.categorical)

    @property
    def columns(self) -> dict[str, str]:
        """Data column name (`CategoricalFeature.display_name`) -> feature key."""
        return {feature.display_name: feature.name for feature in self.categorical}

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Feature key -> vocabulary size."""
        return {feature.name: feature.vocab_size for feature in self.categorical}

    def get_config(self) -> dict:
        """JSON-compatible form, used inside Keras model configs.

        Returns:
            `{"categorical": [{"name", "vocab_size"[, "column"]}, ...],
            "num_dense": ...}`, which `from_config` reads back.
        """
        return {
            "categorical": [
                {"name": feature.name, "vocab_size": feature.vocab_size,
                 **({} if feature.column is None else {"column": feature.column})}
                for feature in self.categorical
            ],
            "num_dense": self.num_dense,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> FeatureSpec:
        """The spec of a `get_config` result.

        Args:
            config: What `get_config` returned (e.g. read from a model's
                config).

        Returns:
            The equal `FeatureSpec`.

        Raises:
            ValueError: if the fields it describes are invalid (as for the
                constructor).
        """
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

    Attributes:
        features: Features dict as a `FeatureSpec` describes it (int64 ids
            per categorical field, float32 `[N, num_dense]` dense).
        labels: float32 labels (0 or 1), shape `[N]`.
        true_logits: The click model's logit per example, shape `[N]` (NaN
            for real data).
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    true_logits: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: np.ndarray | slice) -> CTRExamples:
        """The examples at `rows`.

        Args:
            rows: An index array, a boolean mask or a slice of rows.

        Returns:
            A new `CTRExamples` of those rows (NumPy indexing: a slice gives
            views, an array copies).
        """
        return CTRExamples(
            {name: values[rows] for name, values in self.features.items()},
            self.labels[rows],
            self.true_logits[rows],
        )
