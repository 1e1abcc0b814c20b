"""Speed and memory of tf_smelu's activations next to ReLU, GELU, Swish, Softplus.

Everything is measured side by side in one run: the benchmarks interleave the
activations round-robin, repeat, and report the median time and its ratio to
ReLU measured in the same rounds, so machine noise hits all of them alike.

Three measurements:
  1. fwd+bwd of the activation alone on a large float32 tensor (16M elements
     by default), in plain graph mode (`tf.function`, no XLA) and under
     `jit_compile=True`, with RESCU at every order of `--rescu_orders`;
  2. a realistic training step (CTR-style MLP 256-128-64, batch 512, Adam,
     and a wide MLP) in both modes;
  3. peak memory of a training step (TF's allocator statistics).

Usage:
  python benchmarks/activations.py             # about 4 minutes on 2 cores
  python benchmarks/activations.py --repeats=5 --elements=1000000  # quick
  python benchmarks/activations.py --parts=fwd_bwd   # the first table only
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from absl import flags

# The benchmark times TensorFlow graphs (tf.function, XLA), whatever backend
# the environment asks Keras for; Keras reads this once, at import.
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras
import tensorflow as tf

import tf_smelu
from tf_smelu import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("elements", 16 * 1024 * 1024, "Elements of the fwd+bwd tensor.")
flags.DEFINE_integer("repeats", 15, "Rounds; each round times every activation once.")
flags.DEFINE_integer("steps_per_round", 10, "Training steps timed per round.")
flags.DEFINE_list(
    "modes", ["graph", "xla"], "Execution modes: graph (tf.function) and/or xla."
)
flags.DEFINE_list(
    "rescu_orders", ["2", "3", "4", "5", "6", "7", "8"],
    "RESCU orders timed in the fwd+bwd table (each formulation of the band: "
    "truncated powers of the nearer band end up to 8, Cox-de Boor above).",
)
flags.DEFINE_list(
    "parts", ["fwd_bwd", "steps", "memory"],
    "What to measure: fwd_bwd (the activation alone), steps (training steps), memory.",
)

ACTIVATIONS: dict[str, Callable] = {
    "relu": tf.nn.relu,
    "smelu": tf_smelu.smelu,
    "rescu2": lambda x: tf_smelu.rescu(x, order=2),
    "generalized_smelu": lambda x: tf_smelu.generalized_smelu(x, g_minus=0.05),
    "gelu": tf.nn.gelu,
    "swish": tf.nn.silu,
    "softplus": tf.nn.softplus,
}

# (input width, hidden widths, batch): the main job's CTR tower (MLP 256-128-64, batch 512)
# (6 embeddings of 8 + 4 dense features) and a wider MLP.
MLPS = {"ctr_mlp": (52, (256, 128, 64), 512), "wide_mlp": (256, (1024, 1024, 1024), 1024)}


def _median_times(fns: dict[str, Callable[[], object]], repeats: int, calls: int):
    """Median seconds per call of each fn, interleaved round-robin."""
    for fn in fns.values():  # trace and warm up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                result = fn()
            tf.nest.map_structure(lambda t: t.numpy(), result)  # wait for it
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def _rescu_of_order(order: int) -> Callable:
    return lambda x: tf_smelu.rescu(x, order=order)


def _fwd_bwd_activations() -> dict[str, Callable]:
    """`ACTIVATIONS` plus RESCU at every order of `--rescu_orders`."""
    orders = {f"rescu{int(o)}": _rescu_of_order(int(o)) for o in FLAGS.rescu_orders}
    return {**ACTIVATIONS, **orders}


def _fwd_bwd_fns(elements: int, jit: bool):
    x = tf.Variable(tf.random.stateless_normal([elements], seed=[1, 2]))
    upstream = tf.random.stateless_normal([elements], seed=[3, 4])
    # Writing the gradient into a variable forces every element to be
    # computed (XLA would otherwise compute only what a returned slice needs)
    # and costs every activation the same single write.
    sink = tf.Variable(tf.zeros([elements]))

    def make(activation):
        @tf.function(jit_compile=jit)
        def fwd_bwd():
            with tf.GradientTape() as tape:
                y = activation(x)
            sink.assign(tape.gradient(y, x, output_gradients=upstream))
            return sink[:1]

        return fwd_bwd

    return {name: make(fn) for name, fn in _fwd_bwd_activations().items()}


def _mlp(activation, input_width, widths):
    layers = [keras.Input((input_width,))]
    layers += [keras.layers.Dense(w, activation=activation) for w in widths]
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def _train_step_fn(activation, mlp: str, jit: bool):
    input_width, widths, batch = MLPS[mlp]
    keras.utils.set_random_seed(0)
    model = _mlp(activation, input_width, widths)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    features = tf.random.stateless_normal([batch, input_width], seed=[5, 6])
    labels = tf.cast(tf.random.stateless_uniform([batch, 1], seed=[7, 8]) > 0.5, tf.float32)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def _peak_step_memory(step) -> int:
    step()  # build everything first
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def _print_table(title: str, columns: dict[str, dict[str, float]], unit: str, scale: float):
    print(f"\n{title}")
    header = "| activation | " + " | ".join(f"{c} ({unit}) | {c} / relu" for c in columns) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(columns)))
    for name in next(iter(columns.values())):
        cells = []
        for values in columns.values():
            cells += [f"{values[name] * scale:.2f}", f"{values[name] / values['relu']:.3f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv):
    del argv
    # Each activation gets its own tf.function: retracing warnings are expected.
    tf.get_logger().setLevel("ERROR")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, tf_smelu {tf_smelu.__version__}")
    if "fwd_bwd" in FLAGS.parts:
        fwd_bwd = {
            mode: _median_times(
                _fwd_bwd_fns(FLAGS.elements, jit=mode == "xla"), FLAGS.repeats, calls=1
            )
            for mode in FLAGS.modes
        }
        _print_table(
            f"fwd+bwd of the activation alone, {FLAGS.elements:,} float32 elements",
            fwd_bwd, "ms", 1e3,
        )
    for mlp, (input_width, widths, batch) in MLPS.items() if "steps" in FLAGS.parts else ():
        steps = {
            mode: _median_times(
                {
                    name: _train_step_fn(fn, mlp, jit=mode == "xla")
                    for name, fn in ACTIVATIONS.items()
                },
                FLAGS.repeats,
                calls=FLAGS.steps_per_round,
            )
            for mode in FLAGS.modes
        }
        _print_table(
            f"training step, {mlp}: {input_width} -> {'-'.join(map(str, widths))} -> 1, "
            f"batch {batch}, Adam",
            steps, "ms", 1e3,
        )
    if "memory" not in FLAGS.parts:
        return
    memory = {
        mlp: {
            name: float(_peak_step_memory(_train_step_fn(fn, mlp, jit=False)))
            for name, fn in ACTIVATIONS.items()
        }
        for mlp in MLPS
    }
    _print_table("peak memory of a training step (graph mode)", memory, "MiB", 2.0**-20)


if __name__ == "__main__":
    cli.run(main)  # the command-line error style: one `error:` line for a bad flag
