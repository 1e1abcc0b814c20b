"""Datasets for tf_smelu experiments.

:mod:`tf_smelu.data.synthetic` generates seeded CTR recommendation data with a
known click model; :class:`FeatureSpec` describes any CTR dataset's inputs to
the models in :mod:`tf_smelu.models`.
"""

from tf_smelu.data.synthetic import (
    DEFAULT_TRAFFIC_QUANTILES,
    DEFAULT_VOCAB_SIZES,
    DENSE_FEATURE_NAME,
    SPLITS,
    CategoricalFeature,
    CTRExamples,
    FeatureSpec,
    SyntheticCTRConfig,
    frequency_bucket_boundaries,
    frequency_buckets,
    generate_examples,
    make_dataset,
    zipf_probabilities,
)

__all__ = [
    "DEFAULT_TRAFFIC_QUANTILES",
    "DEFAULT_VOCAB_SIZES",
    "DENSE_FEATURE_NAME",
    "SPLITS",
    "CTRExamples",
    "CategoricalFeature",
    "FeatureSpec",
    "SyntheticCTRConfig",
    "frequency_bucket_boundaries",
    "frequency_buckets",
    "generate_examples",
    "make_dataset",
    "zipf_probabilities",
]
