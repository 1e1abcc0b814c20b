"""Seeded synthetic click-through-rate (CTR) data with a known ground truth.

The generator mimics a recommendation ranking log: each example has a few
categorical fields (user, item and context ids), a handful of dense features
and a binary click label drawn from a hidden click model.  Because the click
model is known, the Bayes-optimal scores (``true_logits``) are available for
any example, which lets experiments compare a trained model with the best
achievable AUC.

Structure of the generated data
-------------------------------
* **Categorical ids.**  For every field the id of an example is its
  *popularity rank*: ids are drawn from a truncated Zipf distribution
  ``P(id = r) ∝ (r + 1) ** -zipf_exponent`` over ``[0, vocab_size)``.  Id 0 is
  therefore the most frequent value, id 1 the second most frequent, and so on;
  the raw id universe equals the vocabulary, so the "hashing" into the fixed
  vocabulary is the identity and there are no collisions.  Because rank equals
  id, head/torso/tail membership is a contiguous id range
  (see :func:`frequency_bucket_boundaries` and :func:`frequency_buckets`).
* **Dense features.**  ``num_dense`` float32 features, approximately standard
  normal.  The first half of them is correlated (``dense_latent_correlation``)
  with a random projection of the example's latent id vectors, the rest is
  independent noise.
* **Click model.**  Every id of every field has a hidden latent vector and a
  scalar bias (tables of ``vocab_size x latent_dim`` float32, derived only from
  ``(world_seed, field name)``).  The click logit is::

      logit = intercept + logit_scale * standardize(
          first_order_weight  * standardize(sum of per-field id biases)
        + interaction_weight  * standardize(sum over field pairs of <v_f, v_g>)
        + dense_weight        * standardize(w . tanh(A @ dense + c)))

  where the standardisation constants and the ``intercept`` are calibrated
  once per world on a fixed calibration sample so that the average click rate
  is ``base_ctr`` and the logit has standard deviation ``logit_scale``
  (``1 / logit_scale`` plays the role of a temperature).  The label is
  ``Bernoulli(sigmoid(logit))``.  With the defaults the click rate is 0.20
  and the AUC of the true logits (the Bayes-optimal AUC) about 0.83.

Determinism
-----------
Examples are generated in chunks of ``chunk_size`` rows.  Chunk ``k`` of a
split is drawn from ``numpy.random.default_rng(SeedSequence([seed, split, k]))``
and always at full size (the last chunk is truncated afterwards), so:

* the same config gives bit-identical data, whatever the batch size;
* the first ``n`` examples do not depend on ``num_examples``;
* the ``train``, ``validation`` and ``test`` splits are independent samples
  from the *same* world (same latent tables), so held-out evaluation is
  meaningful;
* ``seed`` changes the sampled examples and (unless ``world_seed`` is given)
  the world; ``world_seed`` pins the click model while ``seed`` resamples.

Changing ``chunk_size`` changes the data.  Bit-for-bit reproducibility holds
for a fixed NumPy version on one kind of machine: NumPy does not promise that
its distribution algorithms never change between releases, and the float
matrix products (dense features, logits) may round differently in the last
bit under another CPU's BLAS kernels.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tf_smelu.validation import require_in_range, require_non_negative_int, require_positive_int

DENSE_FEATURE_NAME = "dense"
"""Key of the dense feature tensor in every features dict."""

DEFAULT_VOCAB_SIZES: Mapping[str, int] = {
    "user_id": 100_000,
    "item_id": 50_000,
    "category": 1_000,
    "device": 16,
    "hour": 24,
    "region": 500,
}
"""Reference configuration: user, item and four context fields."""

DEFAULT_TRAFFIC_QUANTILES: tuple[float, ...] = (0.5, 0.9)
"""Default head/torso/tail split: the most popular ids carrying the first 50%
of the traffic are the head, the next 40% the torso, the last 10% the tail."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")

# SeedSequence "spawn keys" separating the independent random streams.  The
# values are arbitrary but must never change, or the data changes.
_SPLIT_STREAM_TAGS = {"train": 0, "validation": 1, "test": 2}
_CALIBRATION_STREAM_TAG = 3
_WORLD_STREAM_TAG = 4
_SHUFFLE_STREAM_TAG = 5

# A fixed calibration size keeps the click model independent of num_examples
# and chunk_size; 65k rows pin the intercept to well under 1e-2 logits.
_CALIBRATION_EXAMPLES = 65_536
_DENSE_CLICK_HIDDEN_UNITS = 16


# --------------------------------------------------------------------------
# Feature specification shared by data sources and models.
# --------------------------------------------------------------------------


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
    to an int64 id tensor of shape ``[batch]`` with values in
    ``[0, vocab_size)``, and :data:`DENSE_FEATURE_NAME` to a float32 tensor of
    shape ``[batch, num_dense]``.
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


# --------------------------------------------------------------------------
# Configuration.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticCTRConfig:
    """Everything that determines a synthetic CTR dataset.

    Attributes:
        num_examples: Default number of ``train`` examples.
        num_eval_examples: Default number of ``validation``/``test`` examples.
        seed: Seed of the sampled examples (and of the world when
            ``world_seed`` is None).  Non-negative.
        world_seed: Seed of the hidden click model (latent tables, biases,
            dense projections).  ``None`` means "use ``seed``".
        vocab_sizes: Ordered mapping field name -> vocabulary size.
        zipf_exponent: Exponent ``s >= 0`` of the truncated Zipf id
            distribution, either one value for all fields or a mapping with a
            value for every field.  ``0`` gives uniform ids; larger values a
            heavier head.
        num_dense: Number of dense features.
        latent_dim: Size of the hidden per-id latent vectors.
        base_ctr: Target average click rate, in ``(0, 1)``.
        logit_scale: Standard deviation of the click logit around its
            intercept (inverse temperature).  Larger -> higher Bayes AUC.
        first_order_weight: Relative weight of per-id biases in the logit.
        interaction_weight: Relative weight of pairwise latent dot products.
        dense_weight: Relative weight of the nonlinear dense-feature term.
        dense_latent_correlation: Correlation, in ``[0, 1)``, between the
            first ``ceil(num_dense / 2)`` dense features and projections of
            the latent id vectors.
        chunk_size: Rows generated per random chunk.  Part of the data
            definition: changing it changes the examples.
    """

    num_examples: int = 1_000_000
    num_eval_examples: int = 100_000
    seed: int = 0
    world_seed: int | None = None
    vocab_sizes: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_VOCAB_SIZES)
    )
    zipf_exponent: float | Mapping[str, float] = 1.05
    num_dense: int = 4
    latent_dim: int = 8
    base_ctr: float = 0.2
    logit_scale: float = 1.5
    first_order_weight: float = 1.0
    interaction_weight: float = 1.5
    dense_weight: float = 1.0
    dense_latent_correlation: float = 0.5
    chunk_size: int = 65_536

    def __post_init__(self) -> None:
        # Copy mappings so that later mutation of the caller's dict cannot
        # silently change a config that already generated data.
        object.__setattr__(self, "vocab_sizes", dict(self.vocab_sizes))
        if isinstance(self.zipf_exponent, Mapping):
            object.__setattr__(self, "zipf_exponent", dict(self.zipf_exponent))
        self._validate()

    def _validate(self) -> None:
        require_positive_int("num_examples", self.num_examples)
        require_positive_int("num_eval_examples", self.num_eval_examples)
        require_positive_int("num_dense", self.num_dense)
        require_positive_int("latent_dim", self.latent_dim)
        require_positive_int("chunk_size", self.chunk_size)
        require_non_negative_int("seed", self.seed)
        if self.world_seed is not None:
            require_non_negative_int("world_seed", self.world_seed)
        # FeatureSpec validates field names and vocabulary sizes.
        self.feature_spec()
        if isinstance(self.zipf_exponent, Mapping):
            if set(self.zipf_exponent) != set(self.vocab_sizes):
                raise ValueError(
                    "`zipf_exponent` given as a mapping must have exactly one "
                    "entry per field of `vocab_sizes`. "
                    f"Received: zipf_exponent={self.zipf_exponent!r}"
                )
            for field, exponent in self.zipf_exponent.items():
                require_in_range(f"zipf_exponent[{field!r}]", exponent, low=0.0)
        else:
            require_in_range("zipf_exponent", self.zipf_exponent, low=0.0)
        require_in_range(
            "base_ctr",
            self.base_ctr,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        require_in_range("logit_scale", self.logit_scale, low=0.0, low_inclusive=False)
        for name in ("first_order_weight", "interaction_weight", "dense_weight"):
            require_in_range(name, getattr(self, name), low=0.0)
        if not (
            self.first_order_weight or self.interaction_weight or self.dense_weight
        ):
            raise ValueError(
                "At least one of `first_order_weight`, `interaction_weight` "
                "and `dense_weight` must be positive. Received: "
                f"first_order_weight={self.first_order_weight}, "
                f"interaction_weight={self.interaction_weight}, "
                f"dense_weight={self.dense_weight}"
            )
        require_in_range(
            "dense_latent_correlation",
            self.dense_latent_correlation,
            low=0.0,
            high=1.0,
            high_inclusive=False,
        )

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.vocab_sizes)

    @property
    def resolved_world_seed(self) -> int:
        return self.seed if self.world_seed is None else self.world_seed

    def exponent_for(self, field: str) -> float:
        """Zipf exponent used for ``field``."""
        if isinstance(self.zipf_exponent, Mapping):
            return float(self.zipf_exponent[field])
        return float(self.zipf_exponent)

    def feature_spec(self) -> FeatureSpec:
        """Fields, vocabulary sizes and dense width, for building models."""
        return FeatureSpec(
            categorical=tuple(
                CategoricalFeature(name, size)
                for name, size in self.vocab_sizes.items()
            ),
            num_dense=self.num_dense,
        )


# --------------------------------------------------------------------------
# Zipf popularity and frequency buckets.
# --------------------------------------------------------------------------


def zipf_probabilities(vocab_size: int, exponent: float) -> np.ndarray:
    """Probability of each id under the truncated Zipf law.

    Returns a float64 array ``p`` of length ``vocab_size`` with
    ``p[r] ∝ (r + 1) ** -exponent``; ``p`` is non-increasing, so id ``r`` is
    the ``r``-th most popular value.
    """
    require_positive_int("vocab_size", vocab_size)
    require_in_range("exponent", exponent, low=0.0)
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -float(exponent)
    return weights / weights.sum()


def frequency_bucket_boundaries(
    vocab_size: int,
    exponent: float,
    traffic_quantiles: Sequence[float] = DEFAULT_TRAFFIC_QUANTILES,
) -> np.ndarray:
    """Id thresholds splitting a Zipf field into popularity buckets.

    Bucket ``k`` holds the ids ``boundaries[k-1] <= id < boundaries[k]``
    (with ``boundaries[-1]`` implicitly ``vocab_size``): the smallest set of
    most popular ids whose expected share of the traffic reaches
    ``traffic_quantiles[k]``, minus the earlier buckets.

    Args:
        vocab_size: Vocabulary size of the field.
        exponent: Zipf exponent of the field.
        traffic_quantiles: Strictly increasing cumulative traffic shares in
            ``(0, 1)``; ``len(traffic_quantiles) + 1`` buckets result.

    Returns:
        int64 array of ``len(traffic_quantiles)`` non-decreasing thresholds.
    """
    quantiles = np.asarray(traffic_quantiles, dtype=np.float64)
    if (
        quantiles.ndim != 1
        or quantiles.size == 0
        or not np.all((quantiles > 0) & (quantiles < 1))
        or np.any(np.diff(quantiles) <= 0)
    ):
        raise ValueError(
            "`traffic_quantiles` must be a non-empty, strictly increasing "
            "sequence of numbers in (0, 1). "
            f"Received: traffic_quantiles={traffic_quantiles!r}"
        )
    cumulative = np.cumsum(zipf_probabilities(vocab_size, exponent))
    # +1 turns "index of the id that crosses the quantile" into "number of
    # ids up to and including it", i.e. the exclusive upper id bound.
    return np.searchsorted(cumulative, quantiles, side="left").astype(np.int64) + 1


def frequency_buckets(
    config: SyntheticCTRConfig,
    field: str,
    ids: np.ndarray | tf.Tensor,
    traffic_quantiles: Sequence[float] = DEFAULT_TRAFFIC_QUANTILES,
) -> np.ndarray:
    """Popularity bucket (0 = head, ..., last = tail) of each id of ``field``.

    Valid because synthetic ids are popularity ranks (see module docstring).

    Returns:
        int64 numpy array with the shape of ``ids``.
    """
    if field not in config.vocab_sizes:
        raise ValueError(
            f"Unknown field. Expected one of {config.field_names}. "
            f"Received: field={field!r}"
        )
    boundaries = frequency_bucket_boundaries(
        config.vocab_sizes[field], config.exponent_for(field), traffic_quantiles
    )
    return np.searchsorted(boundaries, np.asarray(ids), side="right").astype(np.int64)


# --------------------------------------------------------------------------
# The hidden click model.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CTRExamples:
    """A materialised block of examples (numpy), with ground-truth logits."""

    features: dict[str, np.ndarray]
    labels: np.ndarray
    true_logits: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: np.ndarray | slice) -> CTRExamples:
        """The examples at ``rows`` (an index array or a slice)."""
        return CTRExamples(
            {name: values[rows] for name, values in self.features.items()},
            self.labels[rows],
            self.true_logits[rows],
        )


@dataclasses.dataclass(frozen=True)
class _RandomDraws:
    """All randomness of one chunk, drawn in a fixed order."""

    ids: np.ndarray  # int64 [n, num_fields]
    dense_noise: np.ndarray  # float64 [n, num_dense]
    label_uniforms: np.ndarray  # float64 [n]


def _standardization(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and safe (never zero) standard deviations of a sample."""
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std > 1e-12, std, 1.0)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # overflow-free form


def _solve_intercept(centered_logits: np.ndarray, target_rate: float) -> float:
    """Intercept b with mean(sigmoid(b + centered_logits)) == target_rate."""
    low, high = -60.0, 60.0
    for _ in range(100):  # bisection: monotone, robust, deterministic
        middle = 0.5 * (low + high)
        if _sigmoid(middle + centered_logits).mean() < target_rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


class _ClickWorld:
    """Hidden tables and calibrated click model of one ``world_seed``."""

    def __init__(self, config: SyntheticCTRConfig) -> None:
        self.config = config
        world_seed = config.resolved_world_seed
        self.zipf_cdfs = []
        self.latent_tables = []
        self.bias_tables = []
        for field, vocab_size in config.vocab_sizes.items():
            cdf = np.cumsum(zipf_probabilities(vocab_size, config.exponent_for(field)))
            cdf[-1] = 1.0  # guard against round-off leaving mass above the end
            self.zipf_cdfs.append(cdf)
            # Keyed by the field *name* so that adding or reordering fields
            # leaves the other fields' hidden vectors unchanged.
            rng = _rng(world_seed, _WORLD_STREAM_TAG, _stable_hash(field))
            self.latent_tables.append(
                rng.standard_normal((vocab_size, config.latent_dim)).astype(np.float32)
            )
            self.bias_tables.append(rng.standard_normal(vocab_size).astype(np.float32))

        rng = _rng(world_seed, _WORLD_STREAM_TAG, _stable_hash(DENSE_FEATURE_NAME))
        num_fields = len(config.vocab_sizes)
        self.dense_projection = rng.standard_normal(
            (num_fields * config.latent_dim, config.num_dense)
        )
        self.dense_click_kernel = rng.standard_normal(
            (config.num_dense, _DENSE_CLICK_HIDDEN_UNITS)
        ) / math.sqrt(config.num_dense)
        self.dense_click_bias = rng.uniform(-1.0, 1.0, _DENSE_CLICK_HIDDEN_UNITS)
        self.dense_click_output = rng.standard_normal(_DENSE_CLICK_HIDDEN_UNITS)
        num_correlated = math.ceil(config.num_dense / 2)
        self.dense_correlations = np.where(
            np.arange(config.num_dense) < num_correlated,
            config.dense_latent_correlation,
            0.0,
        )
        self._calibrate()

    # -- sampling -----------------------------------------------------------

    def draw(self, rng: np.random.Generator, num_rows: int) -> _RandomDraws:
        """Draws ids and noise; order of draws is part of the data definition."""
        uniforms = rng.random((num_rows, len(self.zipf_cdfs)))
        ids = np.stack(
            [
                np.searchsorted(cdf, uniforms[:, column], side="right")
                for column, cdf in enumerate(self.zipf_cdfs)
            ],
            axis=1,
        ).astype(np.int64)
        dense_noise = rng.standard_normal((num_rows, self.config.num_dense))
        label_uniforms = rng.random(num_rows)
        return _RandomDraws(ids, dense_noise, label_uniforms)

    def latent_vectors(self, ids: np.ndarray) -> list[np.ndarray]:
        return [
            table[ids[:, column]] for column, table in enumerate(self.latent_tables)
        ]

    # -- click model --------------------------------------------------------

    def _raw_latent_projection(self, latents: list[np.ndarray]) -> np.ndarray:
        return (
            np.concatenate(latents, axis=1).astype(np.float64) @ self.dense_projection
        )

    def dense_features(
        self, latents: list[np.ndarray], dense_noise: np.ndarray
    ) -> np.ndarray:
        projection = (
            self._raw_latent_projection(latents) - self.projection_mean
        ) / self.projection_std
        rho = self.dense_correlations
        dense = rho * projection + np.sqrt(1.0 - rho**2) * dense_noise
        return dense.astype(np.float32)

    def _raw_components(
        self, ids: np.ndarray, latents: list[np.ndarray], dense: np.ndarray
    ) -> np.ndarray:
        """Unscaled first-order, interaction and dense terms, [n, 3] float64."""
        first_order = np.zeros(ids.shape[0])
        for column, table in enumerate(self.bias_tables):
            first_order += table[ids[:, column]]
        stacked = np.stack(latents, axis=1).astype(np.float64)  # [n, F, d]
        # Sum over field pairs f < g of <v_f, v_g>, via the factorisation-
        # machine identity: (|sum v|^2 - sum |v|^2) / 2.
        interactions = 0.5 * (
            np.square(stacked.sum(axis=1)).sum(axis=1)
            - np.square(stacked).sum(axis=(1, 2))
        )
        hidden = np.tanh(
            dense.astype(np.float64) @ self.dense_click_kernel + self.dense_click_bias
        )
        dense_term = hidden @ self.dense_click_output
        return np.stack([first_order, interactions, dense_term], axis=1)

    def _centered_logits(self, components: np.ndarray) -> np.ndarray:
        standardized = (components - self.component_mean) / self.component_std
        mixed = standardized @ self.component_weights
        return self.config.logit_scale * (mixed - self.mixed_mean) / self.mixed_std

    def _calibrate(self) -> None:
        """Fixes the scaling constants on a world-specific calibration sample."""
        config = self.config
        rng = _rng(config.resolved_world_seed, _CALIBRATION_STREAM_TAG)
        draws = self.draw(rng, _CALIBRATION_EXAMPLES)
        latents = self.latent_vectors(draws.ids)
        raw_projection = self._raw_latent_projection(latents)
        self.projection_mean, self.projection_std = _standardization(raw_projection)
        dense = self.dense_features(latents, draws.dense_noise)
        components = self._raw_components(draws.ids, latents, dense)
        self.component_mean, self.component_std = _standardization(components)
        self.component_weights = np.array(
            [config.first_order_weight, config.interaction_weight, config.dense_weight]
        )
        mixed = ((components - self.component_mean) / self.component_std) @ (
            self.component_weights
        )
        self.mixed_mean, self.mixed_std = _standardization(mixed)
        self.intercept = _solve_intercept(
            self._centered_logits(components), config.base_ctr
        )

    def examples(self, draws: _RandomDraws) -> CTRExamples:
        """Turns random draws into features, labels and true logits."""
        latents = self.latent_vectors(draws.ids)
        dense = self.dense_features(latents, draws.dense_noise)
        logits = self.intercept + self._centered_logits(
            self._raw_components(draws.ids, latents, dense)
        )
        labels = (draws.label_uniforms < _sigmoid(logits)).astype(np.float32)
        features = {
            name: draws.ids[:, column]
            for column, name in enumerate(self.config.field_names)
        }
        features[DENSE_FEATURE_NAME] = dense
        return CTRExamples(features, labels, logits.astype(np.float32))


def _stable_hash(name: str) -> int:
    """Process-independent hash (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


# --------------------------------------------------------------------------
# Chunked generation and public entry points.
# --------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in _SPLIT_STREAM_TAGS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def _resolve_num_examples(
    config: SyntheticCTRConfig, split: str, num_examples: int | None
) -> int:
    if num_examples is None:
        return config.num_examples if split == "train" else config.num_eval_examples
    require_positive_int("num_examples", num_examples)
    return num_examples


class _ChunkGenerator:
    """Produces chunk ``k`` of one split, optionally shuffled within the chunk."""

    def __init__(
        self,
        config: SyntheticCTRConfig,
        split: str,
        num_examples: int,
        shuffle_seed: int | None,
    ) -> None:
        self.config = config
        self.split_tag = _SPLIT_STREAM_TAGS[split]
        self.num_examples = num_examples
        self.shuffle_seed = shuffle_seed
        self.num_chunks = -(-num_examples // config.chunk_size)
        self.world = _ClickWorld(config)

    def chunk_order(self) -> np.ndarray:
        order = np.arange(self.num_chunks, dtype=np.int64)
        if self.shuffle_seed is None:
            return order
        return _rng(self.shuffle_seed, _SHUFFLE_STREAM_TAG).permutation(order)

    def __call__(self, chunk_index: int) -> CTRExamples:
        chunk_index = int(chunk_index)
        chunk_size = self.config.chunk_size
        rng = _rng(self.config.seed, self.split_tag, chunk_index)
        # Always draw and compute a full chunk before selecting rows: then
        # no value depends on num_examples or on the shuffle, not even
        # through the blocking of BLAS matrix products.
        examples = self.world.examples(self.world.draw(rng, chunk_size))
        num_rows = min(chunk_size, self.num_examples - chunk_index * chunk_size)
        rows: np.ndarray | slice = slice(0, num_rows)
        if self.shuffle_seed is not None:
            shuffle_rng = _rng(self.shuffle_seed, _SHUFFLE_STREAM_TAG, chunk_index)
            rows = shuffle_rng.permutation(num_rows)
        return examples.take(rows)


def generate_examples(
    config: SyntheticCTRConfig,
    split: str = "train",
    num_examples: int | None = None,
) -> CTRExamples:
    """Materialises a split as numpy arrays, with the true click logits.

    Holds everything in memory: meant for evaluation sets and tests.  The
    rows equal those of :func:`make_dataset` with the same arguments (and no
    ``shuffle_seed``).

    Args:
        config: Dataset definition.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        num_examples: Rows to generate; default ``config.num_examples`` for
            ``train`` and ``config.num_eval_examples`` otherwise.
    """
    _check_split(split)
    generator = _ChunkGenerator(
        config, split, _resolve_num_examples(config, split, num_examples), None
    )
    chunks = [generator(index) for index in range(generator.num_chunks)]
    return CTRExamples(
        features={
            name: np.concatenate([chunk.features[name] for chunk in chunks])
            for name in chunks[0].features
        },
        labels=np.concatenate([chunk.labels for chunk in chunks]),
        true_logits=np.concatenate([chunk.true_logits for chunk in chunks]),
    )


def make_dataset(
    config: SyntheticCTRConfig,
    split: str = "train",
    *,
    batch_size: int | None = None,
    num_examples: int | None = None,
    drop_remainder: bool = False,
    shuffle_seed: int | None = None,
    include_true_logits: bool = False,
) -> tf.data.Dataset:
    """Streaming ``tf.data.Dataset`` of ``(features, label)`` CTR examples.

    Only a few chunks of ``config.chunk_size`` rows are in memory at a time,
    so ``num_examples`` may be in the tens of millions.  The dataset is
    finite (one pass); call ``.repeat()`` for several epochs.

    Args:
        config: Dataset definition.
        split: ``"train"``, ``"validation"`` or ``"test"``: independent
            samples from the same hidden click model.
        batch_size: If given, elements are batches of this many rows;
            otherwise single examples.  Does not affect the rows or order.
        num_examples: Rows in the dataset; default ``config.num_examples``
            for ``train`` and ``config.num_eval_examples`` otherwise.
        drop_remainder: Drop a final partial batch.
        shuffle_seed: If given, chunks are visited in a seeded random order
            and rows are permuted within each chunk; the set of rows is
            unchanged.  Use it to vary the data order while holding the data
            fixed.  ``None`` keeps generation order.
        include_true_logits: Add the ground-truth click logit to the features
            dict under ``"true_logit"`` (float32 scalar per example), e.g. to
            evaluate the Bayes-optimal AUC next to a model.

    Returns:
        Dataset of ``(features, label)``: ``features`` maps each field of
        ``config.vocab_sizes`` to an int64 id and ``"dense"`` to float32
        ``[num_dense]``; ``label`` is float32 0/1.  Batching adds a leading
        batch dimension.
    """
    _check_split(split)
    if batch_size is not None:
        require_positive_int("batch_size", batch_size)
    if shuffle_seed is not None:
        require_non_negative_int("shuffle_seed", shuffle_seed)
    generator = _ChunkGenerator(
        config, split, _resolve_num_examples(config, split, num_examples), shuffle_seed
    )
    field_names = config.field_names
    output_names = (*field_names, DENSE_FEATURE_NAME, "label", "true_logit")
    output_dtypes = (
        *([tf.int64] * len(field_names)),
        tf.float32,
        tf.float32,
        tf.float32,
    )

    def chunk_arrays(chunk_index: np.int64) -> list[np.ndarray]:
        examples = generator(chunk_index)
        return [
            examples.features[name] for name in (*field_names, DENSE_FEATURE_NAME)
        ] + [
            examples.labels,
            examples.true_logits,
        ]

    def to_features_and_label(chunk_index: tf.Tensor):
        tensors = tf.numpy_function(
            chunk_arrays, [chunk_index], output_dtypes, stateful=False
        )
        by_name = dict(zip(output_names, tensors, strict=True))
        for name, tensor in by_name.items():
            tensor.set_shape(
                [None, config.num_dense] if name == DENSE_FEATURE_NAME else [None]
            )
        label = by_name.pop("label")
        true_logit = by_name.pop("true_logit")
        if include_true_logits:
            by_name["true_logit"] = true_logit
        return by_name, label

    dataset = tf.data.Dataset.from_tensor_slices(generator.chunk_order()).map(
        to_features_and_label,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if batch_size is None:
        dataset = dataset.unbatch()
        num_elements = generator.num_examples
    else:
        # rebatch splits/merges the chunk tensors without per-row overhead.
        dataset = dataset.rebatch(batch_size, drop_remainder=drop_remainder)
        num_elements = (
            generator.num_examples // batch_size
            if drop_remainder
            else -(-generator.num_examples // batch_size)
        )
    # unbatch/rebatch lose the length; restoring it lets Keras show progress
    # and know when an epoch ends.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_elements))
    return dataset.prefetch(tf.data.AUTOTUNE)
