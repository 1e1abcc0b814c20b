"""Update modes: seeded delay schedules and the delayed-gradient buffer."""

import numpy as np
import tensorflow as tf

from tf_smelu.training.updates import DelayedGradients, delay_schedule


def test_delay_schedule_is_seeded():
    a = delay_schedule(100, 4, 7)
    assert np.array_equal(a, delay_schedule(100, 4, 7))
    assert not np.array_equal(a, delay_schedule(100, 4, 8))
    assert a.min() >= 0 and a.max() <= 4 and len(set(a)) == 5
    assert not np.array_equal(delay_schedule(100, 4, None), delay_schedule(100, 4, None))


def test_delayed_gradients_arrive_late():
    weight = tf.Variable([0.0, 0.0])
    table = tf.Variable(tf.zeros([3, 1]))
    delayed = DelayedGradients([weight, table], max_delay=2)
    delays = [2, 0, 1, 0]
    arrived = []
    for step, delay in enumerate(delays):
        grads = [
            tf.constant([float(step + 1), 0.0]),
            tf.IndexedSlices(tf.constant([[10.0 * (step + 1)]]), tf.constant([step % 3])),
        ]
        due = delayed.push_and_pop(grads, tf.constant(step, tf.int64), tf.constant(delay))
        arrived.append((due[0].numpy()[0], due[1].numpy()[:, 0].tolist()))
    # step 0's gradient (1) is due at step 2, step 1's (2) at once, step 2's (3) at step 3.
    assert [a[0] for a in arrived] == [0.0, 2.0, 1.0, 4.0 + 3.0]
    assert arrived[2][1] == [10.0, 0.0, 0.0]
    assert arrived[3][1] == [10.0 * 4, 0.0, 10.0 * 3]
