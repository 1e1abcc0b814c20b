"""Multi-worker training of one Keras model with a custom training loop.

This module stays whole (about 500 lines, a third of them this docstring): the
three update modes share one loop and one checkpoint protocol.

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
`TrainingConfig.batch_size` is the global batch; each of the replicas in
sync steps on `batch_size / replicas` rows. Each replica sums its
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
A `tf.train.Checkpoint` of model, optimizer, step counter, schedule seed,
(stale) the pending gradients and the run's fingerprint, every
`checkpoint_every` steps and at the end. All workers take part in a save (as
MWMS requires); only the chief writes to `checkpoint_dir`
(`tf_smelu.training.checkpoints.CheckpointDirectory`), the others write to a
temporary directory that is deleted at once (the MWMS recipe of the TF docs).
On start every worker picks the same checkpoint by the same rule (the newest
intact one, damaged ones named in a warning) and refuses one written with
another configuration (`CheckpointMismatchError`; see
`tf_smelu.training.checkpoints` for what the fingerprint holds), so the
directory must be shared by the workers (any path on one host; on several
hosts a shared file system or bucket), and the workers check through an
all-gather that they all restored the same step. The run then continues to
`steps` total steps.

* Atomicity (checked in TF 2.21's sources): the saver writes the data to
  `<prefix>_temp/part-*` and `MergeV2Checkpoints` moves the finished files to
  `ckpt-N.index`/`ckpt-N.data-*`; only then is the `checkpoint` state file
  rewritten (written aside, renamed). The state file thus never names a
  half-written checkpoint after a crash, on file systems with atomic rename
  (local disks; not GCS, where a rename is a copy), and a checkpoint damaged
  later is detected by its checksums on start.
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tf_smelu.training.checkpoints import (
    FINGERPRINT_NAME,
    CheckpointDirectory,
    encode_fingerprint,
    run_fingerprint,
)
from tf_smelu.training.cluster import (
    DatasetFn,
    WorkerInfo,
    broadcast_from_chief,
    create_strategy,
    gather_from_workers,
    worker_info,
)
from tf_smelu.training.config import TrainingConfig, check_fields, option
from tf_smelu.training.replicas import check_finite
from tf_smelu.training.updates import DelayedGradients, averaging_steps, delay_schedule

ModelFn = Callable[[], keras.Model]
"""Builds a new (uncompiled) model; called inside the strategy's scope."""


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """How one run of the trainer is operated (not what it trains).

    Attributes:
        checkpoint_dir: Directory of periodic checkpoints (shared by the
            workers); `None`: no checkpoints, no resume.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        max_checkpoints_to_keep: Checkpoints kept by the manager.
        log_every: Steps between progress lines (0: none).
        crash_at_step: Fault injection for tests: worker `crash_worker` dies
            with `os._exit(1)` right after finishing this step, before
            saving any checkpoint due at that step.
        crash_worker: Index of the worker that crashes.
    """

    checkpoint_dir: str | None = option(
        None, "Checkpoint directory shared by the workers; a restart resumes from it.")
    checkpoint_every: int = option(
        0, "Steps between checkpoints (0: only at the end).", minimum=0)
    max_checkpoints_to_keep: int = option(3, "Checkpoints kept in --checkpoint_dir.", minimum=1)
    log_every: int = option(10, "Steps between progress lines (0: none).", minimum=0)
    crash_at_step: int | None = option(
        None, "(Tests) worker --crash_worker dies right after this step.", minimum=1)
    crash_worker: int = option(1, "(Tests) index of the worker that crashes.", minimum=0)

    def __post_init__(self):
        check_fields(self)

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
    losses: list[float]
    seconds: float
    steps_per_second: float | None
    schedule_seed: int | None
    averaging_steps: list[int]

    def to_json(self) -> dict[str, object]:
        """The result as JSON-ready values.

        Returns:
            Every attribute by name, `worker` as `{"index", "num_workers"}`.
        """
        result = dataclasses.asdict(self)
        result["worker"] = {"index": self.worker.index, "num_workers": self.worker.num_workers}
        return result


def num_replicas_or_one(strategy: tf.distribute.Strategy) -> int:
    """The strategy's replicas in sync, at least 1.

    Args:
        strategy: A distribution strategy.

    Returns:
        `strategy.num_replicas_in_sync`, or 1 where it says 0.
    """
    return max(1, int(strategy.num_replicas_in_sync))


class DistributedTrainer:
    """Trains the model of `model_fn` under `strategy` (see module docstring).

    Args:
        model_fn: Builds the model (logits `[batch, 1]`); called once, inside
            `strategy.scope()` except for local SGD. Workers may build
            different initial weights: MWMS copies the chief's to the others,
            and local SGD starts from their average.
        dataset_fn: This worker's data, see `DatasetFn`.
        config: Training settings, identical on every worker; `config.steps`
            must be set. Each replica steps on `config.batch_size / replicas`
            rows.
        strategy: Default: `create_strategy()`.
        options: Checkpoints, logging and fault injection.
        identity: What else a checkpoint must match to be resumed, besides
            `config` and the cluster's size (JSON values, e.g. the
            activation and seeds `model_fn` uses and a digest of the data;
            see `tf_smelu.training.checkpoints.run_fingerprint`).

    Raises:
        ValueError: `config.steps` is unset, or the update mode needs one
            replica per worker.
        CheckpointError: `options.checkpoint_dir` is a file, or the chief
            cannot write to it.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        dataset_fn: DatasetFn,
        config: TrainingConfig,
        strategy: tf.distribute.Strategy | None = None,
        options: TrainerOptions = TrainerOptions(),
        identity: Mapping[str, object] | None = None,
    ):
        if config.steps is None:
            raise ValueError(
                "The trainer counts steps: set `config.steps`, e.g. "
                "`dataclasses.replace(config, steps=config.total_steps(train_rows))`."
            )
        self.strategy = strategy or create_strategy()
        self.worker = worker_info(self.strategy)
        self.config = config
        self.options = options
        self.per_replica_batch_size = config.per_worker_batch_size(num_replicas_or_one(self.strategy))
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
        self.loss_batch_size = self.per_replica_batch_size * (1 if self.local else num_replicas)

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
        # Named when training diverges (the worker program passes the activation).
        self._model_name = str((identity or {}).get("activation", "the model"))
        self.fingerprint = run_fingerprint(
            config, self.worker.num_workers, num_replicas, **(identity or {}))
        trackables[FINGERPRINT_NAME] = tf.Variable(
            encode_fingerprint(self.fingerprint), dtype=tf.string, trainable=False,
            name=FINGERPRINT_NAME)
        self.checkpoint = tf.train.Checkpoint(**trackables)
        # `restore` creates the lazy save counter, which `write` would not
        # save: created now, every checkpoint has it and restores match.
        _ = self.checkpoint.save_counter
        self.checkpoints = (
            CheckpointDirectory(options.checkpoint_dir, options.max_checkpoints_to_keep,
                                writer=self.worker.is_chief)
            if options.checkpoint_dir
            else None
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
        """Restores the newest intact checkpoint if any; returns the step to start at.

        Raises:
            CheckpointError: The directory has traces of a run but no intact
                checkpoint, or one without a fingerprint.
            CheckpointMismatchError: The checkpoint was written with another
                configuration, or does not fit this run's model.
        """
        found = (
            self.checkpoints.find_resumable(self.fingerprint, self.config.steps, self._warn)
            if self.checkpoints is not None
            else None
        )
        if found:
            self.checkpoints.restore(self.checkpoint, found)
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
                    f"({self.options.checkpoint_dir!r}) must be one directory shared by all workers."
                )
        if found:
            self._log(f"resumed from {found.prefix} at step {start_step}")
        elif self.checkpoints is not None:
            self._log(f"no checkpoint in {self.checkpoints.directory} yet: training from step 0")
        return start_step

    def _save(self, done: int) -> None:
        self.step.assign(done)
        if self.delayed is not None:
            self._consolidate()
        if self.checkpoints is not None and self.checkpoints.writer:
            self.checkpoints.save(self.checkpoint, done)
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
        batch_size = self.per_replica_batch_size

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
        """Trains from the latest checkpoint (or from scratch) to `config.steps`.

        Returns:
            What this worker did: steps, losses, time and schedule.

        Raises:
            DivergedError: The loss became NaN or infinite (the step, the
                activation and the learning rate are named).
        """
        config, options = self.config, self.options
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
        losses: list[float] = []
        start = time.perf_counter()
        after_first_step = None
        for step in range(start_step, config.steps):
            loss = self._train_step(
                iterator, tf.constant(step, tf.int64), tf.constant(delays[step], tf.int32)
            )
            losses.append(float(loss))  # fetched for the log line anyway: the check is free
            done = step + 1
            check_finite(losses[-1], done, self._model_name, config.learning_rate)
            if after_first_step is None:
                after_first_step = time.perf_counter()
            if done in averaging_points and self.worker.num_workers > 1:
                self._average_weights()
            if options.log_every and (done % options.log_every == 0 or done == config.steps):
                self._log(f"step {done}/{config.steps} loss {losses[-1]:.4f}")
            if done == options.crash_at_step and self.worker.index == options.crash_worker:
                self._log(f"crashing on purpose after step {done}")
                os._exit(1)  # a hard crash: no cleanup, no checkpoint
            if done < config.steps and self._checkpoint_due(done, last_save, averaging_points):
                self._save(done)
                last_save = done
        if options.checkpoint_dir and last_save < config.steps:
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
        every = self.options.checkpoint_every
        if not (self.options.checkpoint_dir and every):
            return False
        if self.local:
            # Only when the weights agree across workers.
            return done in averaging_points and done - last_save >= every
        return done % every == 0

    def _log(self, message: str) -> None:
        print(f"worker {self.worker.index}: {message}", flush=True)

    def _warn(self, message: str) -> None:
        print(f"worker {self.worker.index}: warning: {message}", file=sys.stderr, flush=True)

    def weights(self) -> list[np.ndarray]:
        """This worker's current model weights, in `model.weights` order.

        Returns:
            One NumPy array per weight.
        """
        return [w.numpy() for w in self.model.weights]
