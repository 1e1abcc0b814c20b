"""Seeded synthetic click-through-rate (CTR) data with a known ground truth.

The generator mimics a recommendation ranking log: each example has a few
categorical fields (user, item and context ids), a handful of dense features
and a binary click label drawn from a hidden click model.  Because the click
model is known, the Bayes-optimal scores (`true_logits`) are available for
any example, which lets experiments compare a trained model with the best
achievable AUC.

Structure of the generated data
-------------------------------
* **Categorical ids.**  For every field the id of an example is its
  *popularity rank*: ids are drawn from a truncated Zipf distribution
  `P(id = r) ∝ (r + 1) ** -zipf_exponent` over `[0, vocab_size)`.  Id 0 is
  therefore the most frequent value, id 1 the second most frequent, and so on;
  the raw id universe equals the vocabulary, so the "hashing" into the fixed
  vocabulary is the identity and there are no collisions.  Because rank equals
  id, head/torso/tail membership is a contiguous id range.
* **Dense features.**  `num_dense` float32 features, approximately standard
  normal.  The first half of them is correlated (`dense_latent_correlation`)
  with a random projection of the example's latent id vectors, the rest is
  independent noise.
* **Click model.**  Every id of every field has a hidden latent vector and a
  scalar bias (tables of `vocab_size x latent_dim` float32, derived only from
  `(world_seed, field name)`).  The click logit is:

      logit = intercept + logit_scale * standardize(
          first_order_weight  * standardize(sum of per-field id biases)
        + interaction_weight  * standardize(sum over field pairs of <v_f, v_g>)
        + dense_weight        * standardize(w . tanh(A @ dense + c)))

  where the standardisation constants and the `intercept` are calibrated
  once per world on a fixed calibration sample so that the average click rate
  is `base_ctr` and the logit has standard deviation `logit_scale`
  (`1 / logit_scale` plays the role of a temperature).  The label is
  `Bernoulli(sigmoid(logit))`.  With the defaults the click rate is 0.20
  and the AUC of the true logits (the Bayes-optimal AUC) about 0.83.

Determinism
-----------
Examples are generated in chunks of `chunk_size` rows.  Chunk `k` of a
split is drawn from `numpy.random.default_rng(SeedSequence([seed, split, k]))`
and always at full size (the last chunk is truncated afterwards), so:

* the same config gives bit-identical data, whatever the batch size;
* the first `n` examples do not depend on `num_examples`;
* the `train`, `validation` and `test` splits are independent samples
  from the *same* world (same latent tables), so held-out evaluation is
  meaningful;
* `seed` changes the sampled examples and (unless `world_seed` is given)
  the world; `world_seed` pins the click model while `seed` resamples.

Changing `chunk_size` changes the data.  Bit-for-bit reproducibility holds
for a fixed NumPy version on one kind of machine: NumPy does not promise that
its distribution algorithms never change between releases, and the float
matrix products (dense features, logits) may round differently in the last
bit under another CPU's BLAS kernels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_smelu.data.click_model import (
    SHUFFLE_STREAM_TAG,
    SPLIT_STREAM_TAGS,
    ClickWorld,
    seeded_rng,
)
from tf_smelu.data.features import DENSE_FEATURE_NAME, CTRExamples
from tf_smelu.data.synthetic_config import DEFAULT_VOCAB_SIZES, SyntheticCTRConfig
from tf_smelu.validation import require_non_negative_int, require_positive_int

__all__ = ["DEFAULT_VOCAB_SIZES", "SPLITS", "SyntheticCTRConfig", "generate_examples",
           "make_dataset"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The splits `make_dataset` and `generate_examples` can draw (disjoint example streams)."""


# --------------------------------------------------------------------------
# Chunked generation and public entry points.
# --------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLIT_STREAM_TAGS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def _resolve_num_examples(
    config: SyntheticCTRConfig, split: str, num_examples: int | None
) -> int:
    if num_examples is None:
        return config.num_examples if split == "train" else config.num_eval_examples
    require_positive_int("num_examples", num_examples)
    return num_examples


class _ChunkGenerator:
    """Produces chunk `k` of one split, optionally shuffled within the chunk."""

    def __init__(
        self,
        config: SyntheticCTRConfig,
        split: str,
        num_examples: int,
        shuffle_seed: int | None,
    ) -> None:
        self.config = config
        self.split_tag = SPLIT_STREAM_TAGS[split]
        self.num_examples = num_examples
        self.shuffle_seed = shuffle_seed
        self.num_chunks = -(-num_examples // config.chunk_size)
        self.world = ClickWorld(config)

    def chunk_order(self) -> np.ndarray:
        order = np.arange(self.num_chunks, dtype=np.int64)
        if self.shuffle_seed is None:
            return order
        return seeded_rng(self.shuffle_seed, SHUFFLE_STREAM_TAG).permutation(order)

    def __call__(self, chunk_index: int) -> CTRExamples:
        chunk_index = int(chunk_index)
        chunk_size = self.config.chunk_size
        rng = seeded_rng(self.config.seed, self.split_tag, chunk_index)
        # Always draw and compute a full chunk before selecting rows: then
        # no value depends on num_examples or on the shuffle, not even
        # through the blocking of BLAS matrix products.
        examples = self.world.examples(self.world.draw(rng, chunk_size))
        num_rows = min(chunk_size, self.num_examples - chunk_index * chunk_size)
        rows: np.ndarray | slice = slice(0, num_rows)
        if self.shuffle_seed is not None:
            shuffle_rng = seeded_rng(self.shuffle_seed, SHUFFLE_STREAM_TAG, chunk_index)
            rows = shuffle_rng.permutation(num_rows)
        return examples.take(rows)


def generate_examples(
    config: SyntheticCTRConfig,
    split: str = "train",
    num_examples: int | None = None,
) -> CTRExamples:
    """Materialises a split as numpy arrays, with the true click logits.

    Holds everything in memory: meant for evaluation sets and tests.  The
    rows equal those of `make_dataset` with the same arguments (and no
    `shuffle_seed`).

    Args:
        config: Dataset definition.
        split: `"train"`, `"validation"` or `"test"`.
        num_examples: Rows to generate; default `config.num_examples` for
            `train` and `config.num_eval_examples` otherwise.

    Returns:
        The examples, with the click model's logits in `true_logits`.

    Raises:
        ValueError: if `split` is unknown or `num_examples` is not a positive
            integer.
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
    """Streaming `tf.data.Dataset` of `(features, label)` CTR examples.

    Only a few chunks of `config.chunk_size` rows are in memory at a time,
    so `num_examples` may be in the tens of millions.  The dataset is
    finite (one pass); call `.repeat()` for several epochs.

    Args:
        config: Dataset definition.
        split: `"train"`, `"validation"` or `"test"`: independent
            samples from the same hidden click model.
        batch_size: If given, elements are batches of this many rows;
            otherwise single examples.  Does not affect the rows or order.
        num_examples: Rows in the dataset; default `config.num_examples`
            for `train` and `config.num_eval_examples` otherwise.
        drop_remainder: Drop a final partial batch.
        shuffle_seed: If given, chunks are visited in a seeded random order
            and rows are permuted within each chunk; the set of rows is
            unchanged.  Use it to vary the data order while holding the data
            fixed.  `None` keeps generation order.
        include_true_logits: Add the ground-truth click logit to the features
            dict under `"true_logit"` (float32 scalar per example), e.g. to
            evaluate the Bayes-optimal AUC next to a model.

    Returns:
        Dataset of `(features, label)`: `features` maps each field of
        `config.vocab_sizes` to an int64 id and `"dense"` to float32
        `[num_dense]`; `label` is float32 0/1.  Batching adds a leading
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
