"""The cluster a worker belongs to: strategy, place, collectives and data shards.

`create_strategy` picks `tf.distribute.MultiWorkerMirroredStrategy` exactly
when `TF_CONFIG` describes a cluster, so the same program runs alone or as
one worker of many. The collectives here are all-reduces and all-gathers run
under `strategy.run`, so they need nothing beyond what MWMS offers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import tensorflow as tf

from tf_smelu.data.features import CTRExamples
from tf_smelu.data.in_memory import batched_dataset

DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]
"""`dataset_fn(input_context, per_replica_batch_size)` -> this worker's
`(features, labels)` batches of `per_replica_batch_size` rows (repeated by the
trainer, so it may be finite)."""

@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """This process's place in the cluster (index 0 is the chief)."""

    index: int
    num_workers: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def create_strategy() -> tf.distribute.Strategy:
    """MWMS when `TF_CONFIG` names a cluster, else the default strategy.

    Call before creating any other TF op: MWMS configures the runtime.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_info(strategy: tf.distribute.Strategy) -> WorkerInfo:
    """Index and count of workers; a chief task, if any, counts as worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return WorkerInfo(index=0, num_workers=1)
    num_chiefs = len(cluster.get("chief", []))
    num_workers = num_chiefs + len(cluster.get("worker", []))
    if resolver.task_type == "chief":
        return WorkerInfo(index=0, num_workers=num_workers)
    return WorkerInfo(index=num_chiefs + int(resolver.task_id), num_workers=num_workers)


def _first_local_result(strategy: tf.distribute.Strategy, values):
    return tf.nest.map_structure(
        lambda value: strategy.experimental_local_results(value)[0], values
    )


def broadcast_from_chief(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's `value` on every worker (others' arguments are ignored).

    An all-reduce sum to which only global replica 0 (on the chief)
    contributes: no extra communication primitive is needed.
    """

    @tf.function
    def broadcast():
        def contribute():
            context = tf.distribute.get_replica_context()
            is_first = tf.equal(context.replica_id_in_sync_group, 0)
            mine = tf.where(is_first, tf.constant(value, tf.int64), tf.constant(0, tf.int64))
            return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        return strategy.run(contribute)

    return int(_first_local_result(strategy, broadcast()))


def gather_from_workers(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """`value` of every replica, in global replica order (chief first)."""

    @tf.function
    def gather():
        def contribute():
            context = tf.distribute.get_replica_context()
            return context.all_gather(tf.constant([value], tf.int64), axis=0)

        return strategy.run(contribute)

    return [int(v) for v in _first_local_result(strategy, gather()).numpy()]


def in_memory_dataset_fn(examples: CTRExamples, order_seed: int | None = None) -> DatasetFn:
    """A `DatasetFn` over in-memory examples, sharded by input pipeline.

    Worker `i` of `n` reads rows `i, i + n, i + 2n, ...` (as
    `tf.data.Dataset.shard(n, i)` would), in an order permuted by
    `order_seed`, in full batches only (every replica steps the same number
    of times).
    """

    def dataset_fn(input_context: tf.distribute.InputContext, batch_size: int) -> tf.data.Dataset:
        shard = examples.take(
            slice(input_context.input_pipeline_id, None, input_context.num_input_pipelines)
        )
        if len(shard) < batch_size:
            raise ValueError(
                f"Worker shard has {len(shard)} rows, fewer than one batch of {batch_size}."
            )
        return batched_dataset(
            shard.features, shard.labels, batch_size, order_seed=order_seed, drop_remainder=True
        )

    return dataset_fn
