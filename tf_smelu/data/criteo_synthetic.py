"""A valid Criteo-format file drawn from the synthetic click model.

`write_synthetic_criteo_file` lets the Criteo loaders (`tf_smelu.data.criteo`),
the examples and the tests run without the real (multi-GB) data.
"""

from __future__ import annotations

import gzip as gzip_module
import io
import os
import zlib
from collections.abc import Mapping

import numpy as np

from tf_smelu.data.criteo import CATEGORICAL_FEATURE_NAMES, INTEGER_FEATURE_NAMES
from tf_smelu.data.features import DENSE_FEATURE_NAME
from tf_smelu.data.synthetic import SyntheticCTRConfig, make_dataset
from tf_smelu.validation import require_non_negative_int, require_positive_int

# Vocabulary sizes of the synthetic fields C1..C26, loosely following the
# spread of the real Criteo cardinalities (a few tiny fields, many large ones)
# at a scale that generates quickly.
_SYNTHETIC_VOCAB_SIZES = (
    1000, 500, 10000, 5000, 200, 20, 5000, 500, 3, 10000, 5000, 10000, 3000,
    30, 5000, 10000, 10, 3000, 2000, 4, 10000, 15, 15, 10000, 100, 10000,
)  # fmt: skip
_SYNTHETIC_MISSING_INTEGER_RATE = 0.1
_SYNTHETIC_MISSING_CATEGORICAL_RATE = 0.05
_SYNTHETIC_MISSING_STREAM_TAG = 21  # SeedSequence key of the missing-value draws


def write_synthetic_criteo_file(
    path: str | os.PathLike, num_rows: int, seed: int = 0, gzip: bool = False
) -> str:
    """Writes a valid Criteo-format file drawn from the synthetic click model.

    Labels follow `tf_smelu.data.synthetic` (so a model can learn
    something, base CTR about 0.2); the 13 dense features become
    non-negative integer counts `floor(exp(2 x))`, the 26 categorical ids
    become 8-digit hex strings, and about 10% of integer and 5% of
    categorical fields are left empty.  The same `(num_rows, seed)` give
    the same rows, and with `gzip` the same bytes.

    Args:
        path: Output file (overwritten).
        num_rows: Number of lines.
        seed: Seed of the examples and of the missing fields.
        gzip: Write gzip-compressed text (whatever the suffix).

    Returns:
        `path` as a string.
    """
    require_positive_int("num_rows", num_rows)
    require_non_negative_int("seed", seed)
    path = os.fspath(path)
    vocab_sizes = dict(zip(CATEGORICAL_FEATURE_NAMES, _SYNTHETIC_VOCAB_SIZES, strict=True))
    chunk_size = min(num_rows, 16_384)
    config = SyntheticCTRConfig(
        num_examples=num_rows,
        num_eval_examples=1,
        seed=seed,
        vocab_sizes=vocab_sizes,
        num_dense=len(INTEGER_FEATURE_NAMES),
        chunk_size=chunk_size,
    )
    hex_tables = {
        name: np.array(
            [format(zlib.crc32(f"{name}={index}".encode()), "08x") for index in range(size)],
            dtype=object,
        )
        for name, size in vocab_sizes.items()
    }
    missing_rng = np.random.default_rng(
        np.random.SeedSequence([seed, _SYNTHETIC_MISSING_STREAM_TAG])
    )
    with open(path, "wb") as file:
        # No timestamp or file name in the gzip header: same rows, same bytes.
        binary = (
            gzip_module.GzipFile(filename="", fileobj=file, mode="wb", mtime=0)
            if gzip
            else file
        )
        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
            _write_synthetic_rows(text, config, hex_tables, missing_rng)
    return path


def _write_synthetic_rows(
    text: io.TextIOBase,
    config: SyntheticCTRConfig,
    hex_tables: Mapping[str, np.ndarray],
    missing_rng: np.random.Generator,
) -> None:
    """Writes the `train` rows of `config` as Criteo lines, chunk by chunk."""
    batches = make_dataset(config, "train", batch_size=config.chunk_size)
    for features, labels in batches.as_numpy_iterator():
        counts = np.floor(np.exp(2.0 * features[DENSE_FEATURE_NAME])).astype(np.int64)
        integer_columns = np.where(
            missing_rng.random(counts.shape) < _SYNTHETIC_MISSING_INTEGER_RATE,
            "",
            counts.astype(str).astype(object),
        )
        categorical_columns = np.stack(
            [hex_tables[name][features[name]] for name in CATEGORICAL_FEATURE_NAMES],
            axis=1,
        )
        categorical_columns[
            missing_rng.random(categorical_columns.shape)
            < _SYNTHETIC_MISSING_CATEGORICAL_RATE
        ] = ""
        label_column = labels.astype(np.int64).astype(str).astype(object).reshape(-1, 1)
        rows = np.concatenate([label_column, integer_columns, categorical_columns], axis=1)
        text.writelines("\t".join(row) + "\n" for row in rows.tolist())
