"""Multi-worker training of one Keras model with a custom training loop.

Why a custom loop
-----------------
Keras 3 `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
(MWMS) with a PerReplica conversion error (keras-team/keras#20585), and Keras
3 has no ParameterServerStrategy (keras-team/keras#18624). So the model and
its Adam optimizer are built inside `strategy.scope()` and stepped with
`strategy.run` inside a `tf.function`. The same code runs under the default
strategy (no `TF_CONFIG`) and under MWMS with any number of workers, so a
single-process run and an N-worker run are directly comparable:
`create_strategy` picks MWMS exactly when `TF_CONFIG` describes a cluster, so
the same command runs on real hosts with their own `TF_CONFIG`.

Batches and loss
----------------
Global batch = per-replica batch x replicas in sync. Each replica sums its
per-example losses and divides by the global batch
(`tf.nn.compute_average_loss`); Keras' optimizer all-reduces (sums) the
gradients over replicas, so every update is the gradient of the mean loss
over the global batch, whatever the number of workers.

Data
----
`strategy.distribute_datasets_from_function` calls the user's `dataset_fn`
once per worker with a `tf.distribute.InputContext`; `in_memory_dataset_fn`
keeps rows `input_pipeline_id, input_pipeline_id + num_input_pipelines, ...`
(what `tf.data.Dataset.shard` keeps), so workers read disjoint shards. No
auto-sharding happens on this path. The trainer repeats the dataset (the
synthetic one in the same seeded order every epoch); a resumed run skips the
batches already consumed, so it continues the same data stream (costs one read
of them).

Update modes
------------
* `sync`: plain MWMS: gradients all-reduced every step, mirrored weights.
  Embedding gradients are densified before the all-reduce unless
  `sparse_gradients` (MWMS' sparse path, per-table all-gathers, was 3-4x
  slower on localhost).
* `stale`: the gradient computed at step `t` is applied at `t + d_t`
  (`tf_smelu.training.updates`). Each worker pushes its *local* gradient into a
  worker-local `DelayedGradients` ring buffer with the step's delay, and the
  optimizer all-reduces what is due. All-reduce is a sum and every worker uses
  the same delay, so the applied update is exactly the global gradient of `d_t`
  steps ago; buffering local gradients avoids a second all-reduce (Keras'
  optimizer always all-reduces in replica context). The schedule
  `delay_schedule(steps, max_delay, seed)` MUST be identical on every worker,
  otherwise workers would apply different updates to mirrored weights. With
  `schedule_seed=None` the chief draws the seed from OS entropy and broadcasts
  it (an all-reduce where only global replica 0 contributes a non-zero value);
  the seed is checkpointed, so a resumed run continues the same schedule. Needs
  one replica per worker (the buffer is per process).
* `local_sgd`: every worker holds its own model and Adam state outside
  `strategy.scope()` and steps on its own shard with no communication; after
  the steps listed by `averaging_steps` (every `local_sgd_period` steps, each
  interval jittered by up to `local_sgd_jitter` steps from the shared seed) the
  weights are replaced by their mean over workers
  (`ReplicaContext.all_reduce("MEAN")` under `strategy.run`, MWMS used purely
  as a collective library). The Adam moments stay local, as in local Adam.
  The last step always averages, so the final model is the consensus; an
  average at start makes every worker start from the same weights. MWMS is
  only a communicator here, so one replica per worker.

Checkpoints
-----------
A `tf.train.Checkpoint` of model, optimizer, step counter, schedule seed and
(stale) the pending gradients, every `checkpoint_every` steps and at the end.
All workers take part in a save (as MWMS requires); only the chief writes to
`checkpoint_dir` through a `tf.train.CheckpointManager`, the others write to a
temporary directory that is deleted at once (the MWMS recipe of the TF docs).
On start every worker restores `latest_checkpoint(checkpoint_dir)`, so the
directory must be shared by the workers (any path on one host; on several
hosts a shared file system or bucket), and the workers check through an
all-gather that they all restored the same step. The run then continues to
`steps` total steps.

* Atomicity (checked in TF 2.21's sources): the saver writes the data to
  `<prefix>_temp/part-*` and `MergeV2Checkpoints` moves the finished files to
  `ckpt-N.index`/`ckpt-N.data-*`; only then does the manager rewrite the
  `checkpoint` state file, with `atomic_write_string_to_file` (write a temp
  file, rename). `latest_checkpoint` thus never names a half-written
  checkpoint after a crash, on file systems with atomic rename (local disks;
  not GCS, where TF writes the state file in place).
* Stale: the pending gradients are spread over the workers' buffers; before a
  save they are all-reduced onto the chief's buffer (the others are zeroed),
  which leaves their sum, i.e. the training, unchanged up to float rounding
  (exactly, with one worker). On restore the chief gets that sum and the
  others zero buffers.
* Local SGD saves only right after an averaging step (the first one at least
  `checkpoint_every` steps after the previous save), when the weights agree;
  the other workers resume with the chief's Adam moments, so resuming is exact
  for the weights and approximate for the non-chief optimizer states.

Limits
------
* When a worker dies its peers fail in their next collective (on localhost
  at once: "Collective ops is aborted by: ... Connection reset by peer"); a
  peer that is unreachable rather than dead may leave them blocked. The
  launcher stops the whole cluster as soon as one worker exits non-zero.
  Restart all workers: they resume from the last checkpoint.
* `stale` and `local_sgd` need one replica per worker (CPU workers).

Command line: `python -m tf_smelu.training.distributed --steps=... --output=...`
(see `--help`), as one process or as each worker of a cluster (e.g. through
`tf_smelu.training.launcher`). With `--eval_examples=N --predictions_out=P.npy`
the chief also writes its final model's click probabilities on N held-out
synthetic rows (the `test` split of the same `--seed`, identical for every run
with that seed), and `--labels_out` their labels: what
`examples/multiworker_reproducibility.py` compares across replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import secrets
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from absl import app, flags

from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.data.sources import DATASET_SPEC_HELP, load_dataset, parse_dataset_spec
from tf_smelu.data.synthetic import CTRExamples
from tf_smelu.data.tabular import LoadedDataset
from tf_smelu.models import build_model
from tf_smelu.training.replicas import predict_probabilities
from tf_smelu.training.updates import UPDATE_MODES, DelayedGradients, delay_schedule
from tf_smelu.validation import require_choice, require_positive_number

FLAGS = flags.FLAGS

ModelFn = Callable[[], keras.Model]
DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]
"""`dataset_fn(input_context, per_replica_batch_size)` -> this worker's
`(features, labels)` batches of `per_replica_batch_size` rows (repeated by the
trainer, so it may be finite)."""


@dataclasses.dataclass(frozen=True)
class DistributedTrainConfig:
    """How the model is trained, identical on every worker.

    (Not `replicas.TrainConfig`: this loop counts steps rather than epochs and
    has a third update mode.)

    Attributes:
        steps: Total training steps, including those done before a restart.
        per_replica_batch_size: Rows per replica per step.
        learning_rate: Adam learning rate.
        update_mode: One of `UPDATE_MODES`.
        max_delay: Largest gradient delay in steps (`stale`).
        local_sgd_period: Steps between weight averages (`local_sgd`).
        local_sgd_jitter: Each averaging interval is
            `local_sgd_period + U{-jitter..jitter}` (at least 1).
        schedule_seed: Seed of the delay or averaging schedule; `None`: OS
            entropy drawn by the chief and shared.
        checkpoint_dir: Directory of periodic checkpoints (shared by the
            workers); `None`: no checkpoints, no resume.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        max_checkpoints_to_keep: Checkpoints kept by the manager.
        sparse_gradients: Keep embedding gradients as `tf.IndexedSlices`:
            MWMS then all-reduces them as all-gathers of the touched rows and
            Adam updates only those rows. Default: dense gradients, in every
            mode and with any number of workers, so that all runs make the
            same update; a dense all-reduce was 3-4x faster on localhost up to
            100k-row tables, sparse only pays off for tables far larger than
            a batch touches. (`stale` buffers dense gradients either way.)
        jit_compile: Compile each replica's forward and backward pass with
            XLA (the update and its collectives stay outside). XLA fuses the
            element-wise ops of smooth activations; gradients become dense.
        log_every: Steps between progress lines (0: none).
        crash_at_step: Fault injection for tests: worker `crash_worker` dies
            with `os._exit(1)` right after finishing this step, before
            saving any checkpoint due at that step.
        crash_worker: Index of the worker that crashes.
    """

    steps: int
    per_replica_batch_size: int = 32
    learning_rate: float = 1e-3
    update_mode: str = "sync"
    max_delay: int = 4
    local_sgd_period: int = 8
    local_sgd_jitter: int = 0
    schedule_seed: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    checkpoint_every: int = 0
    max_checkpoints_to_keep: int = 3
    sparse_gradients: bool = False
    jit_compile: bool = False
    log_every: int = 0
    crash_at_step: Optional[int] = None
    crash_worker: int = 1

    def __post_init__(self):
        at_least = {
            "steps": 1, "per_replica_batch_size": 1, "local_sgd_period": 1,
            "max_checkpoints_to_keep": 1, "max_delay": 0, "local_sgd_jitter": 0,
            "checkpoint_every": 0, "log_every": 0, "crash_worker": 0,
        }
        for name, minimum in at_least.items():
            value = getattr(self, name)
            if value < minimum:
                raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")
        require_positive_number("learning_rate", self.learning_rate)
        require_choice("update_mode", self.update_mode, UPDATE_MODES)
        if self.jit_compile and self.sparse_gradients:
            raise ValueError("`jit_compile` needs dense gradients: unset `sparse_gradients`.")
        if self.schedule_seed is not None and self.schedule_seed < 0:
            raise ValueError(
                "`schedule_seed` must be >= 0 or None. "
                f"Received: schedule_seed={self.schedule_seed}"
            )


# --------------------------------------------------------------------------
# Cluster.
# --------------------------------------------------------------------------


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


def gather_from_workers(strategy: tf.distribute.Strategy, value: int) -> List[int]:
    """`value` of every replica, in global replica order (chief first)."""

    @tf.function
    def gather():
        def contribute():
            context = tf.distribute.get_replica_context()
            return context.all_gather(tf.constant([value], tf.int64), axis=0)

        return strategy.run(contribute)

    return [int(v) for v in _first_local_result(strategy, gather()).numpy()]


# --------------------------------------------------------------------------
# Schedules and data.
# --------------------------------------------------------------------------


def averaging_steps(num_steps: int, period: int, jitter: int, seed: int) -> List[int]:
    """Step counts after which local SGD averages the weights (ends with `num_steps`).

    Intervals are `period + U{-jitter..jitter}`, at least 1, drawn from
    `seed`, so every worker computes the same list.
    """
    rng = np.random.default_rng(seed)
    steps, done = [], 0
    while True:
        done += max(1, period + int(rng.integers(-jitter, jitter + 1)))
        if done >= num_steps:
            return steps + [num_steps]
        steps.append(done)


def in_memory_dataset_fn(examples: CTRExamples, order_seed: Optional[int] = None) -> DatasetFn:
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


# --------------------------------------------------------------------------
# Trainer.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What `DistributedTrainer.train` did on this worker.

    Attributes:
        worker: This worker's index and the worker count.
        start_step: Step restored from a checkpoint (0: fresh start).
        final_step: Steps done in total, `config.steps`.
        losses: Mean global-batch loss of each step run by this process
            (for local SGD: this worker's local loss).
        seconds: Wall time of this process's steps.
        steps_per_second: Steps per second, the first (tracing) step excluded
            (checkpoint saves and weight averages included).
        schedule_seed: Seed of the delay/averaging schedule (None for sync).
        averaging_steps: Local SGD averaging points.
    """

    worker: WorkerInfo
    start_step: int
    final_step: int
    losses: List[float]
    seconds: float
    steps_per_second: Optional[float]
    schedule_seed: Optional[int]
    averaging_steps: List[int]

    def to_json(self) -> Dict[str, object]:
        result = dataclasses.asdict(self)
        result["worker"] = {"index": self.worker.index, "num_workers": self.worker.num_workers}
        return result


class DistributedTrainer:
    """Trains the model of `model_fn` under `strategy` (see module docstring).

    Args:
        model_fn: Builds the model (logits `[batch, 1]`); called once, inside
            `strategy.scope()` except for local SGD. Workers may build
            different initial weights: MWMS copies the chief's to the others,
            and local SGD starts from their average.
        dataset_fn: This worker's data, see `DatasetFn`.
        config: Training settings, identical on every worker.
        strategy: Default: `create_strategy()`.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        dataset_fn: DatasetFn,
        config: DistributedTrainConfig,
        strategy: Optional[tf.distribute.Strategy] = None,
    ):
        self.strategy = strategy or create_strategy()
        self.worker = worker_info(self.strategy)
        self.config = config
        self.dataset_fn = dataset_fn
        self.local = config.update_mode == "local_sgd"
        num_replicas = self.strategy.num_replicas_in_sync
        if config.update_mode != "sync" and num_replicas != self.worker.num_workers:
            raise ValueError(
                f"update_mode={config.update_mode!r} needs one replica per worker; "
                f"got {num_replicas} replicas on {self.worker.num_workers} workers."
            )
        # MWMS all-reduces embedding gradients (tf.IndexedSlices) as several
        # all-gathers per table; one packed dense all-reduce was 3-4x faster
        # on localhost, even at 100k-row vocabularies (see `sparse_gradients`).
        # Densified in every mode and with any number of workers, so that the
        # optimizer makes the same (dense) Adam update in all of them: one
        # worker, N workers, local SGD and XLA runs are comparable.
        self.densify_gradients = not config.sparse_gradients
        # A local SGD step is a whole step on this worker's batch alone.
        self.loss_batch_size = config.per_replica_batch_size * (1 if self.local else num_replicas)

        with contextlib.nullcontext() if self.local else self.strategy.scope():
            self.model = model_fn()
            self.optimizer = keras.optimizers.Adam(config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
        # Worker-local state (plain variables): identical on every worker
        # except the stale buffers, whose sum over workers is what matters.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.schedule_seed = tf.Variable(-1, dtype=tf.int64, trainable=False, name="schedule_seed")
        self.delayed = (
            DelayedGradients(self.model.trainable_variables, config.max_delay)
            if config.update_mode == "stale"
            else None
        )
        trackables = dict(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            schedule_seed=self.schedule_seed,
        )
        if self.delayed is not None:
            trackables["pending_gradients"] = list(self.delayed.buffers)
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = None
        if config.checkpoint_dir and self.worker.is_chief:
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, config.checkpoint_dir, max_to_keep=config.max_checkpoints_to_keep
            )
        # Only the forward and backward pass is compiled: the collectives of
        # the update stay outside XLA.
        self._compute_gradients = (
            tf.function(self._loss_and_gradients, jit_compile=True)
            if config.jit_compile
            else self._loss_and_gradients
        )
        self._train_step = tf.function(self._distributed_step)
        self._average_weights = tf.function(self._distributed_average)
        self._consolidate = tf.function(self._distributed_consolidate)

    # -- per-step computation -----------------------------------------------

    def _loss_and_gradients(self, features, labels):
        with tf.GradientTape() as tape:
            logits = tf.reshape(self.model(features, training=True), [-1])
            labels = tf.reshape(tf.cast(labels, logits.dtype), [-1])
            per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.loss_batch_size)
        grads = tape.gradient(loss, self.model.trainable_variables)
        if self.densify_gradients:
            grads = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
            ]
        return loss, grads

    def _replica_step(self, features, labels, step, delay):
        loss, grads = self._compute_gradients(features, labels)
        variables = self.model.trainable_variables
        if self.delayed is not None:
            grads = self.delayed.push_and_pop(grads, step, delay)  # dense out
        # All-reduces (sums) the gradients over replicas, except for local
        # SGD, whose optimizer lives outside the strategy.
        self.optimizer.apply(grads, variables)
        return loss

    def _distributed_step(self, iterator, step, delay):
        features, labels = next(iterator)
        if self.local:
            return self._replica_step(features, labels, step, delay)
        per_replica_loss = self.strategy.run(
            self._replica_step, args=(features, labels, step, delay)
        )
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)

    def _distributed_average(self):
        weights = self.model.weights

        def average():
            context = tf.distribute.get_replica_context()
            # `.value.read_value()`, not `convert_to_tensor`: the latter gives
            # a tensor MWMS' all-reduce cannot place ("destinations can not
            # be empty").
            means = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [w.value.read_value() for w in weights]
            )
            for weight, mean in zip(weights, means):
                weight.assign(mean)

        self.strategy.run(average)

    def _distributed_consolidate(self):
        """Moves all pending stale gradients onto the chief's buffer."""
        buffers = self.delayed.buffers

        def consolidate():
            context = tf.distribute.get_replica_context()
            totals = context.all_reduce(
                tf.distribute.ReduceOp.SUM, [b.read_value() for b in buffers]
            )
            is_first = tf.equal(context.replica_id_in_sync_group, 0)
            for buffer, total in zip(buffers, totals):
                buffer.assign(tf.where(is_first, total, tf.zeros_like(total)))

        self.strategy.run(consolidate)

    # -- checkpoints ----------------------------------------------------------

    def _restore(self) -> int:
        """Restores the latest checkpoint if any; returns the step to start at."""
        latest = (
            tf.train.latest_checkpoint(self.config.checkpoint_dir)
            if self.config.checkpoint_dir
            else None
        )
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if self.delayed is not None and not self.worker.is_chief:
                # The chief's buffer already holds every worker's pending sum.
                for buffer in self.delayed.buffers:
                    buffer.assign(tf.zeros_like(buffer))
        start_step = int(self.step.numpy())
        if self.worker.num_workers > 1:
            restored = gather_from_workers(self.strategy, start_step)
            if len(set(restored)) != 1:
                raise RuntimeError(
                    f"Workers restored different steps {restored}: `checkpoint_dir` "
                    f"({self.config.checkpoint_dir!r}) must be one directory shared by all workers."
                )
        if latest:
            self._log(f"resumed from {latest} at step {start_step}")
        return start_step

    def _save(self, done: int) -> None:
        self.step.assign(done)
        if self.delayed is not None:
            self._consolidate()
        if self.manager is not None:
            self.manager.save(checkpoint_number=done)
            return
        # Non-chief workers must take part in the save, but their copy is
        # redundant: write it aside and drop it.
        scratch = tempfile.mkdtemp(prefix=f"ckpt_worker{self.worker.index}_")
        try:
            self.checkpoint.write(os.path.join(scratch, "ckpt"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _agree_on_schedule_seed(self) -> int:
        restored = int(self.schedule_seed.numpy())
        if restored >= 0:
            seed = restored  # keep the schedule of the interrupted run
        elif self.config.schedule_seed is not None:
            seed = self.config.schedule_seed
        else:
            seed = broadcast_from_chief(
                self.strategy, secrets.randbits(31) if self.worker.is_chief else 0
            )
        self.schedule_seed.assign(seed)
        return seed

    # -- loop -----------------------------------------------------------------

    def _dataset_iterator(self, start_step: int):
        batch_size = self.config.per_replica_batch_size

        def make_dataset(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
            dataset = self.dataset_fn(input_context, batch_size)
            return dataset.repeat().skip(start_step).prefetch(2)

        if self.local:
            context = tf.distribute.InputContext(
                num_input_pipelines=self.worker.num_workers,
                input_pipeline_id=self.worker.index,
                num_replicas_in_sync=self.worker.num_workers,
            )
            return iter(make_dataset(context))
        return iter(self.strategy.distribute_datasets_from_function(make_dataset))

    def train(self) -> TrainResult:
        """Trains from the latest checkpoint (or from scratch) to `config.steps`."""
        config = self.config
        start_step = self._restore()
        seed = None if config.update_mode == "sync" else self._agree_on_schedule_seed()
        delays = (
            delay_schedule(config.steps, config.max_delay, seed)
            if config.update_mode == "stale"
            else np.zeros(config.steps, np.int32)
        )
        averaging = (
            averaging_steps(config.steps, config.local_sgd_period, config.local_sgd_jitter, seed)
            if self.local
            else []
        )
        averaging_points = set(averaging)
        if self.local and self.worker.num_workers > 1:
            self._average_weights()  # one consensus start, whatever model_fn did
        iterator = self._dataset_iterator(start_step)
        last_save = start_step
        losses: List[float] = []
        start = time.perf_counter()
        after_first_step = None
        for step in range(start_step, config.steps):
            loss = self._train_step(
                iterator, tf.constant(step, tf.int64), tf.constant(delays[step], tf.int32)
            )
            losses.append(float(loss))
            done = step + 1
            if after_first_step is None:
                after_first_step = time.perf_counter()
            if done in averaging_points and self.worker.num_workers > 1:
                self._average_weights()
            if config.log_every and (done % config.log_every == 0 or done == config.steps):
                self._log(f"step {done}/{config.steps} loss {losses[-1]:.4f}")
            if done == config.crash_at_step and self.worker.index == config.crash_worker:
                self._log(f"crashing on purpose after step {done}")
                os._exit(1)  # a hard crash: no cleanup, no checkpoint
            if done < config.steps and self._checkpoint_due(done, last_save, averaging_points):
                self._save(done)
                last_save = done
        if config.checkpoint_dir and last_save < config.steps:
            self._save(config.steps)
        end = time.perf_counter()
        timed_steps = len(losses) - 1
        return TrainResult(
            worker=self.worker,
            start_step=start_step,
            final_step=config.steps,
            losses=losses,
            seconds=end - start,
            steps_per_second=timed_steps / (end - after_first_step) if timed_steps > 0 else None,
            schedule_seed=seed,
            averaging_steps=averaging,
        )

    def _checkpoint_due(self, done: int, last_save: int, averaging_points) -> bool:
        every = self.config.checkpoint_every
        if not (self.config.checkpoint_dir and every):
            return False
        if self.local:
            # Only when the weights agree across workers.
            return done in averaging_points and done - last_save >= every
        return done % every == 0

    def _log(self, message: str) -> None:
        print(f"worker {self.worker.index}: {message}", flush=True)

    def weights(self) -> List[np.ndarray]:
        """This worker's current model weights, in `model.weights` order."""
        return [w.numpy() for w in self.model.weights]


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def save_weights(path: str, model: keras.Model) -> None:
    """Saves `model.weights` to an `.npz`, keys `<position>:<weight path>`."""
    arrays = {f"{i:03d}:{w.path}": w.numpy() for i, w in enumerate(model.weights)}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Write then rename so readers never see a partial file.
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)


def load_weights(path: str) -> List[np.ndarray]:
    """The arrays of `save_weights`, in `model.weights` order."""
    with np.load(path) as saved:
        return [saved[key] for key in sorted(saved.files)]


def save_array(path: str, array: np.ndarray) -> None:
    """Saves one array to `path` (`.npy`), atomically (write, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npy", delete=False) as tmp:
        np.save(tmp, array)
    os.replace(tmp.name, path)


def worker_output_path(output: str, index: int, suffix: str = ".npz") -> str:
    """`<output without .npz>.worker<index><suffix>`."""
    base = output[: -len(".npz")] if output.endswith(".npz") else output
    return f"{base}.worker{index}{suffix}"


def define_flags(flag_values: flags.FlagValues = FLAGS) -> List[str]:
    """Defines the worker's flags; returns their names.

    Called when run as a program only, so that other absl programs (the
    examples) can import this module without clashing flags.
    """
    already_defined = set(flag_values)
    kw = dict(flag_values=flag_values)
    flags.DEFINE_integer("steps", 100, "Total training steps (a resumed run continues to it).",
                         lower_bound=1, **kw)
    flags.DEFINE_integer(
        "epochs", None,
        "Passes over the training rows: when set, the steps are derived from the loaded data "
        "and the global batch (overrides --steps).", lower_bound=1, **kw)
    flags.DEFINE_integer("per_replica_batch_size", 64, "Rows per worker per step.",
                         lower_bound=1, **kw)
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (> 0).", **kw)
    flags.DEFINE_enum("update_mode", "sync", list(UPDATE_MODES),
                      "How gradients reach the weights (see the module docstring).", **kw)
    flags.DEFINE_integer("max_delay", 4, "Largest gradient delay in steps (stale).",
                         lower_bound=0, **kw)
    flags.DEFINE_integer("local_sgd_period", 8, "Steps between weight averages (local_sgd).",
                         lower_bound=1, **kw)
    flags.DEFINE_integer("local_sgd_jitter", 0,
                         "+- steps of random jitter per averaging interval (local_sgd).",
                         lower_bound=0, **kw)
    flags.DEFINE_integer(
        "schedule_seed", None,
        "Seed of the delay/averaging schedule (reproducible runs). Unset: the chief draws "
        "one from OS entropy and shares it, so every run differs, as in production.",
        lower_bound=0, **kw)
    flags.DEFINE_string("checkpoint_dir", None,
                        "Checkpoint directory shared by the workers; a restart resumes from it.",
                        **kw)
    flags.DEFINE_integer("checkpoint_every", 0, "Steps between checkpoints (0: only at the end).",
                         lower_bound=0, **kw)
    flags.DEFINE_string(
        "output", None,
        "The chief saves its final weights here (.npz); every worker also writes "
        "<output>.worker<i>.npz and a .json summary.", **kw)
    flags.DEFINE_enum("model", "mlp", ["mlp", "dcn"], "Ranking model: MLP tower or DCN-v2 style.",
                      **kw)
    flags.DEFINE_string(
        "activation", "relu",
        "Hidden activation: name or name:beta, e.g. relu, gelu, smelu:0.2 "
        "(see tf_smelu.experiment.Activation.parse).", **kw)
    flags.DEFINE_list("hidden_units", ["64", "32"],
                      "Widths of the MLP tower (the top MLP for dcn).", **kw)
    flags.DEFINE_integer("embedding_dim", 8, "Embedding size per categorical field.",
                         lower_bound=1, **kw)
    flags.DEFINE_string("dataset", "synthetic",
                        f"Data, as the main job's --dataset: {DATASET_SPEC_HELP}. Every worker "
                        "loads it (same seed, same split) and reads its own shard.", **kw)
    flags.DEFINE_integer(
        "max_vocab_size", 1000,
        "Synthetic data: caps every field's vocabulary (dense all-reduces of the embedding "
        "tables stay cheap); 0: the full default sizes.", lower_bound=0, **kw)
    flags.DEFINE_integer("num_examples", 65_536,
                         "Training rows, split between the workers (a cap for real data).",
                         lower_bound=1, **kw)
    flags.DEFINE_integer("seed", 0, "Seed of the data and, by default, of order and weights.",
                         **kw)
    flags.DEFINE_integer("embedding_seed", None,
                         "Seed of the embedding tables' initial weights (default: --seed).", **kw)
    flags.DEFINE_integer("tower_seed", None,
                         "Seed of the dense layers' initial weights (default: --seed + 1).", **kw)
    flags.DEFINE_integer("order_seed", None,
                         "Seed of the order of each worker's rows (default: --seed).", **kw)
    flags.DEFINE_integer(
        "eval_examples", 0,
        "Held-out rows (the test split of --dataset and --seed) the chief predicts on at the "
        "end (0: none).", lower_bound=0, **kw)
    flags.DEFINE_string("predictions_out", None,
                        "The chief writes its click probabilities on the held-out rows here "
                        "(.npy, float64).", **kw)
    flags.DEFINE_string("labels_out", None, "The chief writes the held-out labels here (.npy).",
                        **kw)
    flags.DEFINE_boolean("sparse_gradients", False,
                         "Keep embedding gradients sparse: all-gathered rows and sparse Adam "
                         "updates (huge vocabularies); default dense.",
                         **kw)
    flags.DEFINE_boolean("jit_compile", False,
                         "Compile the forward and backward pass with XLA (not the update).",
                         **kw)
    flags.DEFINE_integer("log_every", 10, "Steps between progress lines (0: none).",
                         lower_bound=0, **kw)
    flags.DEFINE_integer("crash_at_step", None,
                         "(Tests) worker --crash_worker dies right after this step.",
                         lower_bound=1, **kw)
    flags.DEFINE_integer("crash_worker", 1, "(Tests) index of the worker that crashes.",
                         lower_bound=0, **kw)

    def activation_parses(text: str) -> bool:
        from tf_smelu.experiment import Activation  # lazy: experiment imports a lot

        try:
            Activation.parse(text)
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    def dataset_parses(spec: str) -> bool:
        try:
            parse_dataset_spec(spec)
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    flags.register_validator("learning_rate", lambda rate: rate > 0,
                             "--learning_rate must be > 0.", **kw)
    flags.register_validator("activation", activation_parses, **kw)
    flags.register_validator("dataset", dataset_parses, **kw)
    flags.register_multi_flags_validator(
        ["predictions_out", "labels_out", "eval_examples"],
        lambda v: not (v["predictions_out"] or v["labels_out"]) or v["eval_examples"] >= 1,
        "--predictions_out/--labels_out need --eval_examples >= 1.", **kw)
    flags.register_validator(
        "hidden_units", lambda units: all(u.strip().isdigit() and int(u) > 0 for u in units),
        "--hidden_units must be positive integers, e.g. 64,32.", **kw)
    return [name for name in flag_values if name not in already_defined]


def load_data(
    dataset: str = "synthetic",
    num_examples: int = 65_536,
    eval_examples: int = 0,
    seed: int = 0,
    max_vocab_size: Optional[int] = 1000,
) -> LoadedDataset:
    """The data every worker trains on (the same on each; each reads a shard).

    Args:
        dataset: Dataset spec (`tf_smelu.data.load_dataset`).
        num_examples: Training rows (synthetic) or their cap (real data).
        eval_examples: Held-out rows (at least one is always generated for
            synthetic data, which needs a non-empty test config).
        seed: Seed of the data or of the split of real data.
        max_vocab_size: Synthetic: caps the field vocabularies (`None`/0: no
            cap). Ignored for real data.
    """
    is_synthetic = parse_dataset_spec(dataset).kind == "synthetic"
    return load_dataset(
        dataset,
        train_examples=num_examples,
        eval_examples=max(eval_examples, 1),
        seed=seed,
        max_vocab_size=(max_vocab_size or None) if is_synthetic else None,
    )


def problem_from_data(
    data: LoadedDataset,
    model: str = "mlp",
    activation: object = "relu",
    hidden_units: Sequence[int] = (64, 32),
    embedding_dim: int = 8,
    seed: int = 0,
    embedding_seed: Optional[int] = None,
    tower_seed: Optional[int] = None,
    order_seed: Optional[int] = None,
) -> tuple[ModelFn, DatasetFn]:
    """`(model_fn, dataset_fn)` training a ranking model on `data.train`.

    Args:
        data: What `load_data` returns (the same on every worker).
        model: `"mlp"` or `"dcn"` (see `tf_smelu.models.build_model`).
        activation: Hidden activation: a Keras name (`"relu"`) or layer
            (e.g. `Activation.parse("smelu:0.2").to_keras()`).
        hidden_units: MLP widths (the top MLP for `dcn`).
        embedding_dim: Embedding width.
        seed: Default of the three seeds below.
        embedding_seed: Seed of the embedding tables' initial weights
            (default `seed`).
        tower_seed: Seed of the dense layers' initial weights (default
            `seed + 1`).
        order_seed: Seed of the order of each worker's rows (default `seed`).
    """
    embedding_seed = seed if embedding_seed is None else embedding_seed
    tower_seed = seed + 1 if tower_seed is None else tower_seed
    order_seed = seed if order_seed is None else order_seed
    units_argument = "hidden_units" if model == "mlp" else "top_units"

    def model_fn() -> keras.Model:
        return build_model(
            model,
            data.feature_spec,
            activation,
            embedding_dim=embedding_dim,
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **{units_argument: tuple(hidden_units)},
        )

    return model_fn, in_memory_dataset_fn(data.train, order_seed=order_seed)


def synthetic_problem(
    max_vocab_size: int = 1000, num_examples: int = 65_536, seed: int = 0, **problem
) -> tuple[ModelFn, DatasetFn]:
    """`problem_from_data` on synthetic CTR data (`load_data` arguments first)."""
    data = load_data("synthetic", num_examples, 0, seed, max_vocab_size)
    return problem_from_data(data, seed=seed, **problem)


def held_out_predictions(
    model: keras.Model, examples: CTRExamples, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """`(click probabilities [N] float64, labels [N] float64)` of `model` on `examples`."""
    dataset = batched_dataset(examples.features, examples.labels, batch_size)
    probabilities, labels = predict_probabilities([model], dataset)
    return probabilities[0], labels


def run_worker(values: Dict[str, object]) -> TrainResult:
    """Trains as this process's worker with the flag values `values`, writes outputs.

    Reads the cluster from `TF_CONFIG` (none: one process).
    """
    from tf_smelu.experiment import Activation  # lazy: experiment imports a lot

    strategy = create_strategy()  # before building anything
    data = load_data(values["dataset"], values["num_examples"], values["eval_examples"],
                     values["seed"], values["max_vocab_size"])
    model_fn, dataset_fn = problem_from_data(
        data,
        model=values["model"],
        activation=Activation.parse(values["activation"]).to_keras(),
        hidden_units=[int(u) for u in values["hidden_units"]],
        embedding_dim=values["embedding_dim"],
        seed=values["seed"],
        embedding_seed=values["embedding_seed"],
        tower_seed=values["tower_seed"],
        order_seed=values["order_seed"],
    )
    values = dict(values)
    if values.get("epochs"):
        global_batch = values["per_replica_batch_size"] * strategy.num_replicas_in_sync
        values["steps"] = max(1, -(-values["epochs"] * len(data.train) // global_batch))
    config_fields = {f.name for f in dataclasses.fields(DistributedTrainConfig)}
    config = DistributedTrainConfig(**{k: v for k, v in values.items() if k in config_fields})
    trainer = DistributedTrainer(model_fn, dataset_fn, config, strategy)
    result = trainer.train()
    worker = trainer.worker
    rate = f"{result.steps_per_second:.1f}" if result.steps_per_second else "n/a"
    final_loss = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    print(
        f"worker {worker.index}/{worker.num_workers}: steps {result.start_step}->"
        f"{result.final_step}, {rate} steps/s, final loss {final_loss}",
        flush=True,
    )
    output = values["output"]
    if output:
        if worker.is_chief:
            save_weights(output, trainer.model)
        save_weights(worker_output_path(output, worker.index), trainer.model)
        summary_path = worker_output_path(output, worker.index, ".json")
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump({**result.to_json(), "flags": values}, f)
    if worker.is_chief and values["eval_examples"]:
        probabilities, labels = held_out_predictions(trainer.model, data.test)
        if values["predictions_out"]:
            save_array(values["predictions_out"], probabilities)
        if values["labels_out"]:
            save_array(values["labels_out"], labels)
        print(f"worker {worker.index}: predicted {len(labels)} held-out rows", flush=True)
    return result


def main(argv: Sequence[str], flag_names: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_worker({name: FLAGS[name].value for name in flag_names})


if __name__ == "__main__":
    app.run(functools.partial(main, flag_names=define_flags()))
