"""Datasets for tf_smelu experiments.

`tf_smelu.data.synthetic` generates seeded CTR recommendation data with a
known click model; the real datasets (MovieLens via TFDS, Criteo, CSV and
TFRecord files) have the same interface.  `stream_tfrecords`
(`tf_smelu.data.streaming`) streams every record of a TFRecord file set
through tf.data instead, for training sets larger than memory.  `FeatureSpec`
(`tf_smelu.data.features`) describes any CTR dataset's inputs to the models
in `tf_smelu.models`, and `load_dataset` loads the dataset named by a
`--dataset` spec, with the columns of users' files inferred or given
(`tf_smelu.data.schema`; `describe_schema` prints what was used).
"""

from tf_smelu.data.click_model import zipf_probabilities
from tf_smelu.data.criteo import (
    criteo_dataset,
    criteo_feature_spec,
    load_criteo,
    read_criteo_file,
)
from tf_smelu.data.criteo_synthetic import write_synthetic_criteo_file
from tf_smelu.data.csv_data import load_csv
from tf_smelu.data.features import (
    DENSE_FEATURE_NAME,
    CategoricalFeature,
    CTRExamples,
    FeatureSpec,
    feature_keys,
    is_feature_key,
)
from tf_smelu.data.movielens import MovieLensUnavailableError, load_movielens
from tf_smelu.data.schema import describe_schema
from tf_smelu.data.sources import (
    DATASET_KINDS,
    DATASET_OPTIONS,
    DATASET_SPEC_HELP,
    DatasetSpec,
    check_dataset_options,
    check_eval_dataset,
    load_dataset,
    parse_dataset_spec,
    vocab_cap,
)
from tf_smelu.data.streaming import (
    TFRecordEncoding,
    TFRecordStream,
    fit_tfrecord_encoding,
    shard_policy,
    stream_error,
    stream_tfrecords,
)
from tf_smelu.data.synthetic import (
    DEFAULT_VOCAB_SIZES,
    SPLITS,
    SyntheticCTRConfig,
    generate_examples,
    make_dataset,
)
from tf_smelu.data.tabular import (
    DEFAULT_TRAFFIC_QUANTILES,
    DataFileError,
    LoadedDataset,
    MalformedRowError,
    SkippedRows,
    popularity_buckets,
)
from tf_smelu.data.tfrecord import MalformedRecordError, check_tfrecord_files, load_tfrecord

__all__ = [
    "DATASET_KINDS",
    "DATASET_OPTIONS",
    "DATASET_SPEC_HELP",
    "DEFAULT_TRAFFIC_QUANTILES",
    "DEFAULT_VOCAB_SIZES",
    "DENSE_FEATURE_NAME",
    "SPLITS",
    "CTRExamples",
    "CategoricalFeature",
    "DataFileError",
    "DatasetSpec",
    "FeatureSpec",
    "LoadedDataset",
    "MalformedRecordError",
    "MalformedRowError",
    "MovieLensUnavailableError",
    "SkippedRows",
    "SyntheticCTRConfig",
    "TFRecordEncoding",
    "TFRecordStream",
    "check_dataset_options",
    "check_eval_dataset",
    "check_tfrecord_files",
    "criteo_dataset",
    "criteo_feature_spec",
    "describe_schema",
    "feature_keys",
    "fit_tfrecord_encoding",
    "generate_examples",
    "is_feature_key",
    "load_criteo",
    "load_csv",
    "load_dataset",
    "load_movielens",
    "load_tfrecord",
    "make_dataset",
    "parse_dataset_spec",
    "popularity_buckets",
    "read_criteo_file",
    "shard_policy",
    "stream_error",
    "stream_tfrecords",
    "vocab_cap",
    "write_synthetic_criteo_file",
    "zipf_probabilities",
]

DATA_ERRORS = (DataFileError, MovieLensUnavailableError, OSError)
"""Errors that a user's data (missing, unreadable or damaged files, columns
that do not fit the schema flags) raises while loading: command lines report
them in one line, without a traceback."""
__all__.append("DATA_ERRORS")
