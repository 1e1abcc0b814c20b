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

# Real datasets (MovieLens via TFDS, Criteo and CSV files) with the same
# interface, and the `--dataset` spec selector.
from tf_smelu.data.criteo import (
    criteo_dataset,
    criteo_feature_spec,
    load_criteo,
    read_criteo_file,
    write_synthetic_criteo_file,
)
from tf_smelu.data.csv_data import load_csv
from tf_smelu.data.movielens import MovieLensUnavailableError, load_movielens
from tf_smelu.data.sources import (
    DATASET_SPEC_HELP,
    DatasetSpec,
    load_dataset,
    parse_dataset_spec,
)
from tf_smelu.data.tabular import (
    LoadedDataset,
    MalformedRowError,
    SkippedRows,
    popularity_buckets,
)

__all__ += [
    "DATASET_SPEC_HELP",
    "DatasetSpec",
    "LoadedDataset",
    "MalformedRowError",
    "MovieLensUnavailableError",
    "SkippedRows",
    "criteo_dataset",
    "criteo_feature_spec",
    "load_criteo",
    "load_csv",
    "load_dataset",
    "load_movielens",
    "parse_dataset_spec",
    "popularity_buckets",
    "read_criteo_file",
    "write_synthetic_criteo_file",
]
