"""Checks tf_smelu under the Keras backend named by KERAS_BACKEND (run by test_backends.py).

Usage: python tests/backend_worker.py COMMAND DIR
  check   functions, gradients, layers and activation strings against NumPy
  save    builds and trains the model of `build_model`, writes DIR/<backend>.keras
          and DIR/<backend>.npz (inputs and the model's outputs)
  load    loads every other backend's .keras file in DIR and compares outputs
  export  writes a SavedModel to DIR/<backend>_export (`model.export`)

Exits non-zero with a traceback on the first failed check. The backend must be
chosen before Keras is imported, hence one process per backend.
"""

from __future__ import annotations

import glob
import os
import sys

import keras
import numpy as np
import references

import tf_smelu
from tf_smelu import layers

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X = np.concatenate([RNG.uniform(-3, 3, 60), [-1.0, 0.0, 1.0, -0.5, 0.5]])


def to_numpy(tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")), np.float64)


def gradients(fn, *args):
    """Gradients of sum(fn(*args)) with respect to every argument (NumPy arrays)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            total = tf.reduce_sum(fn(*tensors))
        return [to_numpy(g) for g in tape.gradient(total, tensors)]
    if BACKEND == "jax":
        import jax

        grads = jax.grad(lambda *a: fn(*a).sum(), argnums=tuple(range(len(args))))(*args)
        return [to_numpy(g) for g in grads]
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in args]
    fn(*tensors).sum().backward()
    return [to_numpy(t.grad) for t in tensors]


def numerical_derivative(fn, value: float, step: float = 1e-6) -> float:
    return (fn(value + step) - fn(value - step)) / (2 * step)


def check_functions():
    x32 = X.astype("float32")
    cases = [
        (lambda v: tf_smelu.smelu(v, beta=0.5), references.smelu(X, 0.5),
         references.smelu_grad(X, 0.5)),
        (lambda v: tf_smelu.rescu(v, beta=0.8, order=2), references.rescu_derivative(X, 0.8, 2),
         references.rescu_derivative(X, 0.8, 2, k=1)),
        (lambda v: tf_smelu.rescu(v, beta=1.3, order=5), references.rescu_derivative(X, 1.3, 5),
         references.rescu_derivative(X, 1.3, 5, k=1)),
        (lambda v: tf_smelu.generalized_smelu(v, 0.5, 2.0, -0.2, 1.5, 0.4),
         references.generalized_smelu(X, 0.5, 2.0, -0.2, 1.5, 0.4),
         references.generalized_smelu_grad(X, 0.5, 2.0, -0.2, 1.5, 0.4)),
    ]
    for fn, expected, expected_grad in cases:
        for dtype, tol in (("float32", 1e-5), ("float16", 3e-3), ("bfloat16", 3e-2)):
            x = keras.ops.convert_to_tensor(X.astype(dtype))
            y = fn(x)
            assert keras.backend.standardize_dtype(y.dtype) == dtype, (dtype, y.dtype)
            np.testing.assert_allclose(to_numpy(y), expected, rtol=tol, atol=tol * 3)
        (grad,) = gradients(fn, x32)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-5)

    # Gradients with respect to tensor parameters.
    beta = np.float32(0.7)
    (_, grad_beta) = gradients(lambda v, b: tf_smelu.rescu(v, beta=b, order=3), x32, beta)
    expected = numerical_derivative(
        lambda b: references.rescu_derivative(X, b, 3).sum(), 0.7
    )
    np.testing.assert_allclose(grad_beta, expected, rtol=1e-4)
    params = {"alpha": 0.7, "beta": 1.2, "g_minus": -0.1, "g_plus": 1.3, "t": 0.2}
    grads = gradients(
        lambda v, *p: tf_smelu.generalized_smelu(v, *p),
        x32, *(np.float32(p) for p in params.values()),
    )
    for (name, value), grad in zip(params.items(), grads[1:]):
        expected = numerical_derivative(
            lambda p, name=name: references.generalized_smelu(X, **{**params, name: p}).sum(),
            value,
        )
        np.testing.assert_allclose(grad, expected, rtol=1e-4, err_msg=name)


def check_parameter_errors():
    x = keras.ops.convert_to_tensor(X.astype("float32"))
    bad = [
        lambda: tf_smelu.smelu(x, beta=float("inf")),
        lambda: tf_smelu.rescu(x, beta=keras.ops.convert_to_tensor(np.float32("nan"))),
        lambda: tf_smelu.generalized_smelu(x, g_minus=keras.ops.convert_to_tensor(np.inf)),
        lambda: tf_smelu.smelu(x, beta=keras.ops.convert_to_tensor(np.float32(-1.0))),
        lambda: tf_smelu.rescu(x, order=33),
        lambda: layers.GeneralizedSmeLU(g_minus=float("nan")),
        lambda: layers.RESCU(beta=float("inf")),
    ]
    for i, call in enumerate(bad):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError(f"case {i} did not raise ValueError")
    if BACKEND == "jax":
        import jax

        # A traced parameter cannot be checked: the result is NaN, not wrong.
        traced = jax.jit(lambda b: tf_smelu.smelu(x, beta=b))
        assert np.all(np.isnan(to_numpy(traced(-1.0)))), "negative traced beta"
        np.testing.assert_allclose(to_numpy(traced(0.5)), references.smelu(X, 0.5), rtol=1e-6)


def check_strings():
    for name in ("smelu", "generalized_smelu", "rescu"):
        function = getattr(tf_smelu, name)
        assert keras.activations.get(name) is function, name
        dense = keras.layers.Dense(3, activation=name)
        x = RNG.normal(size=(5, 4)).astype("float32")
        y = to_numpy(dense(x))
        kernel, bias = dense.get_weights()
        expected = {
            "smelu": references.smelu,
            "generalized_smelu": references.generalized_smelu,
            "rescu": references.rescu_derivative,
        }[name](x.astype(np.float64) @ kernel + bias)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="smelu")(inputs)
    hidden = keras.layers.Dense(8, activation="rescu")(hidden)
    hidden = keras.layers.Dense(8, activation="generalized_smelu")(hidden)
    hidden = layers.GeneralizedSmeLU(shared_axes=[1], g_minus=0.05)(hidden)
    hidden = layers.RESCU(beta=0.4, order=3)(hidden)
    hidden = layers.SmeLU(beta=0.3)(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def numpy_forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model of `build_model`, from its weights and the NumPy references."""
    h = x.astype(np.float64)
    activations = {tf_smelu.smelu: references.smelu, tf_smelu.rescu: references.rescu_derivative,
                   tf_smelu.generalized_smelu: references.generalized_smelu,
                   keras.activations.linear: lambda v: v}
    for layer in model.layers[1:]:
        weights = [w.astype(np.float64) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.Dense):
            h = activations[layer.activation](h @ weights[0] + weights[1])
        elif isinstance(layer, layers.GeneralizedSmeLU):
            named = dict(zip([w.name for w in layer.weights], weights))
            h = references.generalized_smelu(h, *(named[p] for p in
                                                  ("alpha", "beta", "g_minus", "g_plus", "t")))
        elif isinstance(layer, layers.RESCU):
            h = references.rescu_derivative(h, layer.beta, layer.order)
        else:
            h = references.smelu(h, layer.beta)
    return h


def trained_model():
    model = build_model()
    x = RNG.normal(size=(64, 4)).astype("float32")
    y = (x[:, :1] * x[:, 1:2] > 0).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    return model, x


def check_model():
    model, x = trained_model()
    # Training moved the GeneralizedSmeLU weights, so the reference uses them.
    np.testing.assert_allclose(
        to_numpy(model.predict(x, verbose=0)), numpy_forward(model, x), rtol=1e-4, atol=1e-5
    )


def save(directory: str):
    model, x = trained_model()
    model.save(os.path.join(directory, f"{BACKEND}.keras"))
    np.savez(os.path.join(directory, f"{BACKEND}.npz"), x=x, y=model.predict(x, verbose=0))


def load(directory: str):
    sources = [p for p in glob.glob(os.path.join(directory, "*.keras"))
               if os.path.basename(p) != f"{BACKEND}.keras"]
    assert sources, f"no .keras file from another backend in {directory}"
    for path in sources:
        model = keras.models.load_model(path, safe_mode=True)
        with np.load(path[: -len(".keras")] + ".npz") as saved:
            np.testing.assert_allclose(
                to_numpy(model.predict(saved["x"], verbose=0)), saved["y"], rtol=1e-5,
                atol=1e-6, err_msg=f"{path} loaded under {BACKEND}",
            )
        print(f"loaded {os.path.basename(path)} under {BACKEND}")


def export(directory: str):
    model, x = trained_model()
    model.export(os.path.join(directory, f"{BACKEND}_export"), verbose=False)
    np.savez(os.path.join(directory, f"{BACKEND}_export.npz"), x=x,
             y=model.predict(x, verbose=0))


def main(command: str, directory: str):
    if command == "check":
        check_functions()
        check_parameter_errors()
        check_strings()
        check_model()
    else:
        {"save": save, "load": load, "export": export}[command](directory)
    print(f"{command} passed under {BACKEND}")


if __name__ == "__main__":
    main(*sys.argv[1:])
