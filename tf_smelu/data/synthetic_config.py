"""The configuration of the synthetic CTR data (`SyntheticCTRConfig`).

Kept apart from `tf_smelu.data.synthetic` (the generator) and
`tf_smelu.data.click_model` (the hidden click model) because both read it:
each imports this module, and neither imports the other's importer, so the
package has no import cycle.  `tf_smelu.data.synthetic` describes the data
the fields determine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tf_smelu.data.features import CategoricalFeature, FeatureSpec
from tf_smelu.validation import require_in_range, require_non_negative_int, require_positive_int

DEFAULT_VOCAB_SIZES: Mapping[str, int] = {
    "user_id": 100_000,
    "item_id": 50_000,
    "category": 1_000,
    "device": 16,
    "hour": 24,
    "region": 500,
}
"""Reference configuration: user, item and four context fields."""


@dataclasses.dataclass(frozen=True)
class SyntheticCTRConfig:
    """Everything that determines a synthetic CTR dataset.

    Attributes:
        num_examples: Default number of `train` examples.
        num_eval_examples: Default number of `validation`/`test` examples.
        seed: Seed of the sampled examples (and of the world when
            `world_seed` is None).  Non-negative.
        world_seed: Seed of the hidden click model (latent tables, biases,
            dense projections).  `None` means "use `seed`".
        vocab_sizes: Ordered mapping field name -> vocabulary size.
        zipf_exponent: Exponent `s >= 0` of the truncated Zipf id
            distribution, either one value for all fields or a mapping with a
            value for every field.  `0` gives uniform ids; larger values a
            heavier head.
        num_dense: Number of dense features.
        latent_dim: Size of the hidden per-id latent vectors.
        base_ctr: Target average click rate, in `(0, 1)`.
        logit_scale: Standard deviation of the click logit around its
            intercept (inverse temperature).  Larger -> higher Bayes AUC.
        first_order_weight: Relative weight of per-id biases in the logit.
        interaction_weight: Relative weight of pairwise latent dot products.
        dense_weight: Relative weight of the nonlinear dense-feature term.
        dense_latent_correlation: Correlation, in `[0, 1)`, between the
            first `ceil(num_dense / 2)` dense features and projections of
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
        """The categorical fields' names, in `vocab_sizes` order."""
        return tuple(self.vocab_sizes)

    @property
    def resolved_world_seed(self) -> int:
        """The click model's seed: `world_seed`, or `seed` when it is None."""
        return self.seed if self.world_seed is None else self.world_seed

    def exponent_for(self, field: str) -> float:
        """Zipf exponent used for `field`.

        Args:
            field: A name of `field_names`.

        Returns:
            `zipf_exponent[field]` when it is a mapping, else `zipf_exponent`.
        """
        if isinstance(self.zipf_exponent, Mapping):
            return float(self.zipf_exponent[field])
        return float(self.zipf_exponent)

    def feature_spec(self) -> FeatureSpec:
        """Fields, vocabulary sizes and dense width, for building models.

        Returns:
            The `FeatureSpec` of the generated examples.
        """
        return FeatureSpec(
            categorical=tuple(
                CategoricalFeature(name, size)
                for name, size in self.vocab_sizes.items()
            ),
            num_dense=self.num_dense,
        )
