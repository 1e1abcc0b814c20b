"""Batches from arrays held in memory, in a fixed or seeded order.

The replica experiment trains R replicas on the *same* examples, possibly in
different orders: holding the examples once in memory and giving each replica
its own permutation of row indices costs one copy of the data, not R.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf


def batched_dataset(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    order_seed: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """`(features, labels)` batches; rows permuted by `order_seed` if given.

    Args:
        features: Name -> array with the same leading size as `labels`.
        labels: Array `[N]`.
        batch_size: Rows per batch, `>= 1`.
        order_seed: Seed of a full random permutation of the rows; `None`
            keeps the stored order.
        drop_remainder: Drop a final partial batch.
    """
    num_rows = int(np.shape(labels)[0])
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    for name, values in features.items():
        if np.shape(values)[0] != num_rows:
            raise ValueError(
                f"Feature {name!r} has {np.shape(values)[0]} rows but labels have {num_rows}."
            )
    if order_seed is None:
        rows = np.arange(num_rows, dtype=np.int64)
    else:
        rows = np.random.default_rng(order_seed).permutation(num_rows).astype(np.int64)
    feature_tensors = {name: tf.convert_to_tensor(values) for name, values in features.items()}
    label_tensor = tf.convert_to_tensor(labels)

    def gather(indices):
        return (
            {name: tf.gather(values, indices) for name, values in feature_tensors.items()},
            tf.gather(label_tensor, indices),
        )

    return (
        tf.data.Dataset.from_tensor_slices(rows)
        .batch(batch_size, drop_remainder=drop_remainder)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
