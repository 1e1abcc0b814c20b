"""The hidden click model of the synthetic CTR data.

`ClickWorld` holds the latent tables, biases and dense projections of one
`world_seed` and turns random draws into features, labels and true logits;
the model itself is described in the `tf_smelu.data.synthetic` module
docstring.  Only `zipf_probabilities` is public (re-exported by
`tf_smelu.data`); the rest serves `tf_smelu.data.synthetic`, whose
`generate_examples` and `make_dataset` are the entry points.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from tf_smelu.data.features import DENSE_FEATURE_NAME, CTRExamples
from tf_smelu.data.synthetic_config import SyntheticCTRConfig
from tf_smelu.validation import require_in_range, require_positive_int

# SeedSequence "spawn keys" separating the independent random streams of the
# synthetic data.  The values are arbitrary but must never change, or the
# data changes; they are defined together so that no two streams share one.
SPLIT_STREAM_TAGS = {"train": 0, "validation": 1, "test": 2}
CALIBRATION_STREAM_TAG = 3
WORLD_STREAM_TAG = 4
SHUFFLE_STREAM_TAG = 5

# A fixed calibration size keeps the click model independent of num_examples
# and chunk_size; 65k rows pin the intercept to well under 1e-2 logits.
_CALIBRATION_EXAMPLES = 65_536
_DENSE_CLICK_HIDDEN_UNITS = 16


def zipf_probabilities(vocab_size: int, exponent: float) -> np.ndarray:
    """Probability of each id under the truncated Zipf law.

    Args:
        vocab_size: Number of ids, `>= 1`.
        exponent: The law's exponent, `>= 0` (0: uniform; larger: a
            heavier head).

    Returns:
        A float64 array `p` of length `vocab_size` with
        `p[r] ∝ (r + 1) ** -exponent`, summing to 1; `p` is
        non-increasing, so id `r` is the `r`-th most popular value.

    Raises:
        ValueError: if `vocab_size` is not a positive integer or `exponent`
            is negative or not finite.
    """
    require_positive_int("vocab_size", vocab_size)
    require_in_range("exponent", exponent, low=0.0)
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -float(exponent)
    return weights / weights.sum()


def stable_hash(name: str) -> int:
    """Process-independent hash (Python's `hash` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def seeded_rng(*entropy: int) -> np.random.Generator:
    """Generator of the stream `SeedSequence(entropy)`."""
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


@dataclasses.dataclass(frozen=True)
class RandomDraws:
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


class ClickWorld:
    """Hidden tables and calibrated click model of one `world_seed`."""

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
            rng = seeded_rng(world_seed, WORLD_STREAM_TAG, stable_hash(field))
            self.latent_tables.append(
                rng.standard_normal((vocab_size, config.latent_dim)).astype(np.float32)
            )
            self.bias_tables.append(rng.standard_normal(vocab_size).astype(np.float32))

        rng = seeded_rng(world_seed, WORLD_STREAM_TAG, stable_hash(DENSE_FEATURE_NAME))
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

    def draw(self, rng: np.random.Generator, num_rows: int) -> RandomDraws:
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
        return RandomDraws(ids, dense_noise, label_uniforms)

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
        rng = seeded_rng(config.resolved_world_seed, CALIBRATION_STREAM_TAG)
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

    def examples(self, draws: RandomDraws) -> CTRExamples:
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

