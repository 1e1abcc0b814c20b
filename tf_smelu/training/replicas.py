"""Trains R model replicas side by side, one `tf.function` step for all.

Stepping the replicas together keeps both CPU cores busy (independent
replicas run in parallel inside one graph) and is markedly faster than
training them one after another, which matters because confidence intervals
on prediction difference shrink only with more replicas.

A replica differs from another only through what the caller gives it: its
model (initial weights), its dataset (data order) and its delay schedule
(stale updates). The loop itself adds no randomness.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

import keras
import numpy as np
import tensorflow as tf
import tqdm.auto
import tqdm.autonotebook  # imported (quietly) by tqdm.auto: the notebook check
import tqdm.std
from tensorflow.python.framework import ops as tf_ops

from tf_smelu import activations
from tf_smelu.common import UserError
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.updates import IN_PROCESS_UPDATE_MODES, DelayedGradients
from tf_smelu.validation import require_choice


class DivergedError(UserError, FloatingPointError):
    """Training produced a non-finite loss or prediction (e.g. a learning rate far too high)."""


def check_finite(values: np.ndarray | float, step: int, what: str, learning_rate: float,
                 quantity: str = "loss") -> None:
    """Stops a run at the first non-finite loss (or prediction) it sees.

    Every later number would be NaN, and an AUC of NaN scores is undefined:
    stopping here names the cause instead of failing in the metrics.

    Args:
        values: A scalar, or one value (or row of values) per replica, on
            the host.
        step: The 1-based step that produced them.
        what: The model, e.g. its activation label.
        learning_rate: The run's learning rate, named in the message.
        quantity: What `values` are ("loss", "held-out predictions").

    Raises:
        DivergedError: A value is NaN or infinite.
    """
    values = np.asarray(values, np.float64)
    if np.isfinite(values).all():  # (every step: the cheap test first)
        return
    per_replica = values.reshape(max(1, values.shape[0]) if values.ndim else 1, -1)
    bad_replicas = np.flatnonzero(~np.isfinite(per_replica).all(axis=1))
    if bad_replicas.size:
        replica = bad_replicas[0]
        row = per_replica[replica]
        whose = f"replica {replica}'s " if values.ndim else "the "
        raise DivergedError(
            f"training diverged: {whose}{quantity} became {row[~np.isfinite(row)][0]} at step "
            f"{step} ({what}, learning rate {learning_rate:g}); lower --learning_rate")


def _is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a tty
        return False


class _LineWriter:
    """A file for tqdm that turns each carriage-return redraw into one log line."""

    def __init__(self, stream: IO):
        self._stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n").rstrip()
        if text:  # tqdm also writes bare "\r" and "\n" and blank clears
            self._stream.write(text + "\n")

    def flush(self) -> None:
        self._stream.flush()


PROGRESS_LINES = 20
"""Progress lines per bar when the output is not a terminal: one every 5%."""


def progress_bar(
    iterable: Iterable | None = None, *, total: int | None = None, description: str = "",
    unit: str = "it", enabled: bool = True, leave: bool = True, stream: IO | None = None,
) -> tqdm.std.tqdm:
    """The progress bar of every tf_smelu loop: live on a terminal, sparse in a log.

    On a terminal (or in a notebook) it redraws in place. Written to a file
    or a pipe (a log, CI), it prints one line every 1/`PROGRESS_LINES` of
    `total` (every minute without one) instead of thousands of redraws.

    Args:
        iterable: What to iterate over, if any.
        total: Expected number of updates (default `len(iterable)` if known).
        description: The label in front of the bar.
        unit: What one update is ("step", "job").
        enabled: False returns a bar that shows nothing.
        leave: Keep the finished bar on screen.
        stream: Where it goes (default `sys.stderr`).

    Returns:
        A `tqdm` bar (use `update`, `set_postfix(..., refresh=False)`, `close`
        or iterate over it).
    """
    stream = stream if stream is not None else sys.stderr
    options = dict(total=total, desc=description, unit=unit, leave=leave, disable=not enabled)
    in_notebook = tqdm.autonotebook.tqdm is not tqdm.std.tqdm  # a widget redraws in place
    if not enabled or in_notebook or _is_terminal(stream):
        return tqdm.auto.tqdm(iterable, file=stream, **options)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        options["total"] = total = len(iterable)
    return tqdm.std.tqdm(
        iterable, file=_LineWriter(stream), ascii=True, **options,
        # A fixed step count between lines; no interval would add lines (maxinterval
        # makes tqdm's monitor thread reset `miniters` to 1 after a slow update).
        miniters=max(1, math.ceil(total / PROGRESS_LINES)) if total else 1,
        mininterval=0 if total else 60, maxinterval=math.inf)


def _binary_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    labels = tf.reshape(tf.cast(labels, logits.dtype), tf.shape(logits))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def _zip_replica_batches(datasets: tf.data.Dataset | Sequence[tf.data.Dataset], replicas: int):
    """One element per step: a tuple of R (features, labels) batches."""
    if isinstance(datasets, tf.data.Dataset):
        # Same data order for every replica: read each batch once.
        return datasets.map(lambda *batch: (batch,) * replicas)
    if len(datasets) != replicas:
        raise ValueError(
            f"Got {len(datasets)} datasets for {replicas} replicas; pass one "
            "dataset (shared order) or one per replica."
        )
    return tf.data.Dataset.zip(tuple(datasets))


class ReplicaTrainer:
    """Trains `models` (Keras models returning click logits) side by side.

    Args:
        models: The R replicas, already built (weights created).
        config: Training settings: `epochs` (or `steps`), `learning_rate`,
            `update_mode` ("sync" or "stale"), `max_delay`, `jit_compile`.
            The data's batch size is the caller's.
        delay_schedules: For "stale", one int array of per-step delays per
            replica (see `updates.delay_schedule`), at least as long as the
            number of steps.

    Raises:
        ValueError: if `models` is empty, `config.update_mode` is not an
            in-process mode, or "stale" comes without one schedule per
            replica.
    """

    def __init__(
        self,
        models: Sequence[keras.Model],
        config: TrainingConfig,
        delay_schedules: Sequence[np.ndarray] | None = None,
    ):
        require_choice("update_mode", config.update_mode, IN_PROCESS_UPDATE_MODES)
        if not models:
            raise ValueError("`models` must hold at least one model.")
        self.models = list(models)
        self.config = config
        self.optimizers = [keras.optimizers.Adam(config.learning_rate) for _ in self.models]
        for model, optimizer in zip(self.models, self.optimizers):
            optimizer.build(model.trainable_variables)
        self.delayed: list[DelayedGradients] | None = None
        self.delay_schedules = None
        if config.update_mode == "stale":
            if delay_schedules is None or len(delay_schedules) != len(self.models):
                raise ValueError("update_mode='stale' needs one delay schedule per replica.")
            self.delay_schedules = np.stack([np.asarray(s, np.int32) for s in delay_schedules])
            self.delayed = [
                DelayedGradients(model.trainable_variables, config.max_delay)
                for model in self.models
            ]
        self._step = tf.function(self._train_step, jit_compile=config.jit_compile)

    def _train_step(self, batches, step, delays):
        losses = []
        for index, (model, optimizer, (features, labels)) in enumerate(
            zip(self.models, self.optimizers, batches)
        ):
            with tf.GradientTape() as tape:
                loss = _binary_cross_entropy(labels, model(features, training=True))
            variables = model.trainable_variables
            grads = tape.gradient(loss, variables)
            if self.delayed is not None:
                grads = self.delayed[index].push_and_pop(grads, step, delays[index])
            optimizer.apply(grads, variables)
            losses.append(loss)
        return tf.stack(losses)

    def fit(
        self,
        datasets: tf.data.Dataset | Sequence[tf.data.Dataset],
        steps_per_epoch: int | None = None,
        progress: bool = True,
        description: str = "train",
    ) -> dict[str, object]:
        """Runs `config.epochs` epochs (or `config.steps` steps) over batched data.

        With `config.steps` set the data repeats as needed and the whole run
        counts as one epoch. Training stops at the first non-finite loss.

        Args:
            datasets: One dataset (every replica sees the same batches) or one
                per replica (e.g. differently shuffled).
            steps_per_epoch: For the progress bar; inferred when the
                dataset's cardinality is known.
            progress: Show a progress bar.
            description: Progress bar label; also names the models when
                training diverges (e.g. the activation).

        Returns:
            `{"loss": [R] mean training loss of the last epoch, "steps":
            steps taken, "seconds": wall time}`.

        Raises:
            DivergedError: A replica's loss became NaN or infinite.
            ValueError: The delay schedules are shorter than the training.
        """
        zipped = _zip_replica_batches(datasets, len(self.models))
        if steps_per_epoch is None:
            cardinality = int(zipped.cardinality())
            steps_per_epoch = cardinality if cardinality > 0 else None
        epochs = self.config.epochs
        if self.config.steps is not None:
            zipped = zipped.repeat().take(self.config.steps)
            steps_per_epoch, epochs = self.config.steps, 1
        total = steps_per_epoch * epochs if steps_per_epoch else None
        replicas = len(self.models)
        step = 0
        start = time.perf_counter()
        with progress_bar(total=total, description=description, enabled=progress,
                          unit="step") as bar:
            for _ in range(epochs):
                loss_sum = np.zeros(replicas)
                epoch_steps = 0
                for batches in zipped.prefetch(2):
                    if self.delay_schedules is not None:
                        if step >= self.delay_schedules.shape[1]:
                            raise ValueError(
                                f"The delay schedules cover {self.delay_schedules.shape[1]} "
                                f"steps; training needs more (now at step {step})."
                            )
                        delays = tf.constant(self.delay_schedules[:, step])
                    else:
                        delays = tf.zeros([replicas], tf.int32)
                    losses = self._step(batches, tf.constant(step, tf.int64), delays).numpy()
                    step += 1
                    # On the host copy the loop fetches anyway: no extra sync.
                    check_finite(losses, step, description, self.config.learning_rate)
                    loss_sum += losses
                    epoch_steps += 1
                    bar.update(1)
                    if epoch_steps % 50 == 0:  # shown at the next redraw, not forcing one
                        bar.set_postfix(loss=f"{loss_sum.mean() / epoch_steps:.4f}",
                                        refresh=False)
        return {
            "loss": (loss_sum / max(epoch_steps, 1)).tolist(),
            "steps": step,
            "seconds": time.perf_counter() - start,
        }


class _DropRetracingWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def expected_retracing() -> Iterator[None]:
    """Silences TF's retracing warning inside the block.

    For code that trains new models one after another (the replica trainer,
    `ReplicaStudy`): each model's functions trace once, by design, and TF
    would warn about every one of them.
    """
    quiet = _DropRetracingWarnings()
    tf.get_logger().addFilter(quiet)
    try:
        yield
    finally:
        tf.get_logger().removeFilter(quiet)


@contextlib.contextmanager
def released_custom_gradients() -> Iterator[None]:
    """Unregisters, when the block ends, the graph gradients of the activations traced in it.

    In a graph (a `tf.function`, such as Keras' train and predict functions)
    every call of `tf.custom_gradient`, which SmeLU, RESCU and generalized
    SmeLU use (and TensorFlow's Swish, `keras.activations.swish` on the
    TensorFlow backend), registers its gradient function in TensorFlow's
    global gradient registry under a name of its own, and nothing ever removes it
    (tensorflow/tensorflow#27492, #97697). That function holds the forward
    pass's tensors, so each traced graph stays in memory for the rest of the
    process, after the models and functions that traced it are gone: a
    process training row after row of smooth-activation replicas grew by
    about 24 MB per replica of the main job's model.

    A registered gradient is looked up only while a gradient of its graph is
    built: as a training step traces, or when a traced function is
    differentiated again later. Use the block around code that builds,
    trains and predicts models it then drops (the replica trainer, a
    `ReplicaStudy` row): every lookup happens inside it. A `tf.function`
    traced inside and differentiated after it would raise `LookupError` (no
    gradient defined for `CustomGradient-N`), never compute another number.
    Gradients other code registered (your own `tf.custom_gradient`) are
    kept.
    """
    registry = _gradient_registry()
    before = set(registry)
    try:
        yield
    finally:
        for name in registry.keys() - before:  # a copy: the loop deletes
            if _defined_in(registry[name].get("type"), _RELEASED_MODULES):
                del registry[name]


# Where the gradient functions `released_custom_gradients` unregisters are defined: the
# activations the main job compares (TensorFlow's Swish is `nn_impl.swish`'s).
_RELEASED_MODULES = (activations.__name__, "tensorflow.python.ops.nn_impl")


def _gradient_registry() -> dict[str, dict]:
    """TensorFlow's registry of graph gradient functions: name -> `{"type": function, ...}`.

    There is no public handle. A TensorFlow without this private one gets an
    empty stand-in: nothing is released (memory grows per row as before, and
    tests/test_row_memory.py fails to say so), nothing breaks.
    """
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def _defined_in(function: object, modules: Sequence[str], depth: int = 3) -> bool:
    """Whether `function`, or one its closure holds (up to `depth` levels down), is `modules`'.

    `tf.custom_gradient` registers a wrapper of a wrapper of the gradient
    function it was given.
    """
    if getattr(function, "__module__", None) in modules:
        return True
    if depth == 0:
        return False
    for cell in getattr(function, "__closure__", None) or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(contents) and _defined_in(contents, modules, depth - 1):
            return True
    return False


def predict_probabilities(
    models: Sequence[keras.Model], dataset: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Click probabilities of every replica on a batched `(features, labels)` set.

    Args:
        models: The R replicas, each returning click logits.
        dataset: Batches of `(features, labels)`, held out.

    Returns:
        `(probabilities [R, N] float64, labels [N] float64)`.
    """

    @tf.function
    def predict(features):
        return tf.stack(
            [tf.sigmoid(tf.reshape(m(features, training=False), [-1])) for m in models]
        )

    probabilities, labels = [], []
    with expected_retracing():
        for features, batch_labels in dataset:
            probabilities.append(predict(features).numpy())
            labels.append(np.reshape(batch_labels.numpy(), [-1]))
    return (
        np.concatenate(probabilities, axis=1).astype(np.float64),
        np.concatenate(labels).astype(np.float64),
    )
