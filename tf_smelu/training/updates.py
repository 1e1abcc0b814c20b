"""Update modes: how a computed gradient reaches the weights.

`sync` applies each step's gradient at once. `stale` reproduces what
asynchronous (parameter-server) training does to a model: the gradient
computed at step `t` is applied at step `t + d_t`, with a random delay
`d_t` in `[0, max_delay]`, so every update uses a gradient computed from
weights up to `max_delay` steps old. Gradients whose delays make them land on
the same step are summed (updates arrive in bursts on a busy parameter
server); on a step where none lands, the optimizer sees a zero gradient.

The delay schedule is a NumPy array drawn from `schedule_seed` (reproducible)
or, without a seed, from OS entropy (a different schedule every run, as the
wall-clock races of a real cluster give).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

UPDATE_MODES = ("sync", "stale", "local_sgd")
"""How gradients reach the weights. `local_sgd` (workers step alone and
average their weights) needs separate workers: only the multi-worker loop of
`tf_smelu.training.distributed` has it."""

IN_PROCESS_UPDATE_MODES = UPDATE_MODES[:2]
"""The modes of the in-process replica harness (`tf_smelu.training.replicas`)."""


def delay_schedule(num_steps: int, max_delay: int, schedule_seed: int | None) -> np.ndarray:
    """Per-step gradient delays in `[0, max_delay]` (int32, length `num_steps`).

    Args:
        num_steps: Number of training steps.
        max_delay: Largest delay in steps, `>= 0`.
        schedule_seed: Seed of the schedule; `None` draws OS entropy.
    """
    if max_delay < 0:
        raise ValueError(f"`max_delay` must be >= 0. Received: max_delay={max_delay}")
    rng = np.random.default_rng(schedule_seed)
    return rng.integers(0, max_delay + 1, size=num_steps, dtype=np.int32)


def averaging_steps(num_steps: int, period: int, jitter: int, seed: int) -> list[int]:
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


class DelayedGradients:
    """Ring buffer that applies gradients `delay` steps after they were computed.

    One slot per possible delay (`max_delay + 1`) per trainable variable.
    Embedding gradients (`tf.IndexedSlices`) are scattered sparsely into the
    slot, so the buffer costs one memory copy of the weights per slot but no
    dense work per step beyond reading the due slot.
    """

    def __init__(self, variables: Sequence[tf.Variable], max_delay: int):
        if max_delay < 0:
            raise ValueError(f"`max_delay` must be >= 0. Received: max_delay={max_delay}")
        self.num_slots = max_delay + 1
        self.buffers: list[tf.Variable] = [
            tf.Variable(
                tf.zeros([self.num_slots, *v.shape], v.dtype),
                trainable=False,
                name=f"delayed_{i}",
            )
            for i, v in enumerate(variables)
        ]

    def push_and_pop(self, grads, step: tf.Tensor, delay: tf.Tensor) -> list[tf.Tensor]:
        """Stores `grads` for step `step + delay`; returns what is due at `step`."""
        slot_in = tf.math.floormod(step + tf.cast(delay, step.dtype), self.num_slots)
        slot_out = tf.math.floormod(step, self.num_slots)
        due = []
        for buffer, grad in zip(self.buffers, grads):
            if isinstance(grad, tf.IndexedSlices):
                rows = tf.cast(grad.indices, tf.int64)
                slots = tf.fill(tf.shape(rows), tf.cast(slot_in, tf.int64))
                buffer.scatter_nd_add(tf.stack([slots, rows], axis=1), grad.values)
            else:
                buffer.scatter_nd_add([[slot_in]], grad[tf.newaxis])
            # Read the due slot into a fresh tensor before clearing it.
            pending = tf.identity(buffer[slot_out])
            with tf.control_dependencies([pending]):
                buffer.scatter_nd_update([[slot_out]], tf.zeros_like(pending)[tf.newaxis])
            due.append(pending)
        return due
