"""Values, gradients, dtypes and errors of the activation functions."""

import re
from fractions import Fraction
from math import comb, factorial

import numpy as np
import pytest
import references
import tensorflow as tf

import tf_smelu
from tf_smelu.activations import MAX_RESCU_ORDER, parameter_limits

FLOAT_DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
# Tolerances per dtype, loosened for half precision (as TF Addons does).
TOLERANCE = {tf.float16: 2e-3, tf.bfloat16: 2e-2, tf.float32: 1e-5, tf.float64: 1e-12}

BETAS = [0.05, 0.5, 1.0, 3.0]
ORDERS = [1, 2, 3, 4]


def _points(beta, order=1, seed=0):
    """Random points around the band plus every knot and its neighbours."""
    rng = np.random.default_rng(seed)
    knots = -beta + 2.0 * beta / order * np.arange(order + 1)
    near = np.concatenate([knots, knots - 1e-3 * beta, knots + 1e-3 * beta])
    return np.concatenate([rng.uniform(-3 * beta, 3 * beta, 200), near])


def _assert_close(actual, expected, dtype, scale=1.0):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(
        np.asarray(tf.cast(actual, tf.float64)), expected, rtol=tol, atol=tol * scale
    )


def _derivatives(fn, x, count):
    """[f(x), f'(x), ..., f^(count)(x)] by nested gradient tapes."""
    tapes = [tf.GradientTape(persistent=True) for _ in range(count)]
    for tape in tapes:
        tape.__enter__()
        tape.watch(x)
    values = [fn(x)]
    for tape in reversed(tapes):
        tape.__exit__(None, None, None)
        values.append(tape.gradient(values[-1], x))
    return [v.numpy() for v in values]


# --- values --------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("beta", BETAS)
def test_smelu_matches_reference(dtype, beta):
    x = _points(beta)
    y = tf_smelu.smelu(tf.constant(x, dtype), beta=beta)
    assert y.dtype == dtype
    x_rounded = tf.cast(tf.constant(x, dtype), tf.float64).numpy()
    _assert_close(y, references.smelu(x_rounded, beta), dtype, scale=3 * beta)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_rescu_matches_reference(dtype, order, beta):
    x = _points(beta, order)
    y = tf_smelu.rescu(tf.constant(x, dtype), beta=beta, order=order)
    assert y.dtype == dtype
    x_rounded = tf.cast(tf.constant(x, dtype), tf.float64).numpy()
    expected = references.rescu_derivative(x_rounded, beta, order)
    _assert_close(y, expected, dtype, scale=3 * beta)


def test_rescu_order_one_is_smelu():
    x = tf.constant(_points(0.7), tf.float64)
    np.testing.assert_array_equal(
        tf_smelu.rescu(x, beta=0.7, order=1), tf_smelu.smelu(x, beta=0.7)
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "params",
    [
        dict(),
        dict(alpha=0.5, beta=2.0),
        dict(alpha=2.0, beta=0.3, g_minus=-0.2, g_plus=1.5, t=0.4),
        dict(alpha=1.0, beta=1.0, g_minus=0.3, g_plus=0.3, t=-1.0),
    ],
)
def test_generalized_smelu_matches_reference(dtype, params):
    x = np.concatenate(
        [np.linspace(-5, 5, 101), [-params.get("alpha", 1.0), params.get("beta", 1.0)]]
    )
    y = tf_smelu.generalized_smelu(tf.constant(x, dtype), **params)
    assert y.dtype == dtype
    x_rounded = tf.cast(tf.constant(x, dtype), tf.float64).numpy()
    _assert_close(y, references.generalized_smelu(x_rounded, **params), dtype, scale=8)


def test_generalized_smelu_defaults_reduce_to_smelu():
    x = tf.constant(_points(0.8), tf.float64)
    np.testing.assert_allclose(
        tf_smelu.generalized_smelu(x, alpha=0.8, beta=0.8),
        tf_smelu.smelu(x, beta=0.8),
        rtol=1e-14,
        atol=1e-15,
    )


def test_accepts_numpy_lists_and_variables():
    expected = references.smelu([-1.0, 0.0, 2.0])
    for value in ([-1.0, 0.0, 2.0], np.array([-1.0, 0.0, 2.0], np.float32)):
        np.testing.assert_allclose(tf_smelu.smelu(value), expected)
    np.testing.assert_allclose(tf_smelu.smelu(tf.Variable([-1.0, 0.0, 2.0])), expected)


@pytest.mark.parametrize("fn", [tf_smelu.smelu, tf_smelu.rescu, tf_smelu.generalized_smelu])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_works_inside_tf_function(fn):
    x = tf.constant(np.linspace(-3, 3, 13), tf.float32)
    np.testing.assert_allclose(tf.function(fn)(x), fn(x), rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_does_not_overflow(dtype):
    big = tf.constant([-6.0e4, -300.0, 300.0, 6.0e4], tf.float16)
    x = tf.cast(big, dtype)
    for fn in (tf_smelu.smelu, lambda v: tf_smelu.rescu(v, order=4)):
        y = fn(x)
        assert y.dtype == dtype
        np.testing.assert_array_equal(
            tf.cast(y, tf.float64).numpy(),
            np.maximum(tf.cast(x, tf.float64).numpy(), 0.0),
        )
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 0, 1, 1])


@pytest.mark.parametrize("fn", [tf_smelu.smelu, tf_smelu.rescu])
def test_nan_and_inf_propagate_like_relu(fn):
    x = tf.constant([np.nan, np.inf, -np.inf, 2.0], tf.float32)
    np.testing.assert_array_equal(fn(x).numpy(), tf.nn.relu(x).numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    # Gradient at +-inf is ReLU's; at NaN it is NaN (ReLU says 0) on purpose:
    # a NaN input should not look like a healthy zero gradient.
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad[1:], [1.0, 0.0, 1.0])
    assert np.isnan(grad[0])


# --- accuracy at every order, against exact rational arithmetic -------------

# Machine epsilon of each dtype.
EPS = {tf.float16: 2.0**-10, tf.bfloat16: 2.0**-7, tf.float32: 2.0**-23, tf.float64: 2.0**-52}


def _exact_rescu(x: float, beta: float, order: int, k: int = 0) -> float:
    """k-th derivative (k = 0, 1, 2) of RESCU at `x`, exact, rounded once to float.

    The alternating truncated-power sum of the definition cancels
    catastrophically in floating point (even float64 loses everything by
    order 30); in rational arithmetic it is exact.
    """
    x, beta = Fraction(x), Fraction(beta)
    if x <= -beta:
        return 0.0
    if x >= beta:
        return (float(x), 1.0, 0.0)[k]
    h = 2 * beta / order
    u = (x + beta) / h
    power = order + 1 - k
    total = sum((-1) ** j * comb(order, j) * (u - j) ** power for j in range(order + 1) if u > j)
    return float(total * h ** (1 - k) / factorial(power))


def _accuracy_tolerance(dtype, order: int) -> float:
    # float32/64: a few ulps per order (the Cox-de Boor sums have ~order
    # terms). Half precision is computed in float32 and rounded once, so
    # half an ulp of the result.
    return EPS[dtype] if dtype in (tf.float16, tf.bfloat16) else 2 * (order + 2) * EPS[dtype]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("order", range(1, MAX_RESCU_ORDER + 1))
def test_rescu_is_accurate_at_every_order(dtype, order):
    _assert_rescu_accurate(dtype, order, beta_tensor=False)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("order", [2, 3, 8])
def test_rescu_with_a_tensor_beta_is_as_accurate(dtype, order):
    # A tensor beta is not known when the graph is built: the band is then
    # always evaluated in scaled units (a Python beta of 0.7 is not).
    _assert_rescu_accurate(dtype, order, beta_tensor=True)


def _assert_rescu_accurate(dtype, order: int, beta_tensor: bool):
    """RESCU and its slope at beta = 0.7 against `_exact_rescu`, within `_accuracy_tolerance`."""
    beta = 0.7
    x = tf.constant(np.concatenate([np.linspace(-1.2, 1.2, 37) * beta, _points(beta, order)[200:]]),
                    dtype)
    beta_argument = tf.constant(beta, dtype) if beta_tensor else beta
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf_smelu.rescu(x, beta=beta_argument, order=order)
    grad = tape.gradient(y, x)
    assert y.dtype == grad.dtype == dtype
    x_rounded = tf.cast(x, tf.float64).numpy()
    # The function computes with beta rounded to its compute dtype, as x is.
    beta_rounded = float((np.float64 if dtype == tf.float64 else np.float32)(beta))
    tol = _accuracy_tolerance(dtype, order)
    # Below ~1e-3 beta the absolute tolerance takes over (float16 subnormals).
    for actual, k, scale in ((y, 0, beta), (grad, 1, 1.0)):
        expected = [_exact_rescu(v, beta_rounded, order, k) for v in x_rounded]
        np.testing.assert_allclose(
            tf.cast(actual, tf.float64).numpy(), expected, rtol=tol, atol=1e-3 * tol * scale,
            err_msg=f"derivative {k}",
        )


@pytest.mark.parametrize("order", [3, 5, 12, MAX_RESCU_ORDER])
def test_high_order_second_derivative_is_exact(order):
    beta = 0.9
    x = tf.constant(_points(beta, order)[:200], tf.float64)  # random points only
    _, _, second = _derivatives(lambda v: tf_smelu.rescu(v, beta=beta, order=order), x, 2)
    expected = [_exact_rescu(v, beta, order, 2) for v in x.numpy()]
    np.testing.assert_allclose(second, expected, rtol=1e-11, atol=1e-11)


# --- first-order gradients -------------------------------------------------


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("order", ORDERS)
def test_rescu_gradient_matches_finite_differences(dtype, order):
    # Away from infinity the gradient is continuous, so the knots are fine too.
    x = tf.constant(_points(0.9, order)[::7], dtype)
    theoretical, numerical = tf.test.compute_gradient(
        lambda v: tf_smelu.rescu(v, beta=0.9, order=order), [x], delta=1e-3 if dtype == tf.float32 else 1e-6
    )
    np.testing.assert_allclose(
        theoretical[0], numerical[0], atol=5e-3 if dtype == tf.float32 else 1e-6
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("order", ORDERS)
def test_rescu_gradient_matches_reference(dtype, order):
    x = tf.constant(_points(1.3, order), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf_smelu.rescu(x, beta=1.3, order=order)
    grad = tape.gradient(y, x)
    assert grad.dtype == dtype
    x_rounded = tf.cast(x, tf.float64).numpy()
    expected = references.rescu_derivative(x_rounded, 1.3, order, k=1)
    _assert_close(grad, expected, dtype)


def test_smelu_gradient_is_the_clip_formula():
    x = tf.constant(_points(0.4), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf_smelu.smelu(x, beta=0.4)
    np.testing.assert_allclose(tape.gradient(y, x), references.smelu_grad(x.numpy(), 0.4))


def test_custom_gradient_equals_autodiff_of_a_plain_formula():
    beta = 0.6
    x = tf.constant(_points(beta), tf.float64)

    def plain(v):  # autodiff through tf.where, no custom gradient
        return tf.where(
            v <= -beta, tf.zeros_like(v), tf.where(v >= beta, v, (v + beta) ** 2 / (4 * beta))
        )

    grads = []
    for fn in (plain, lambda v: tf_smelu.smelu(v, beta=beta)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        grads.append(tape.gradient(y, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "params",
    [dict(), dict(alpha=0.5, beta=2.0, g_minus=-0.2, g_plus=1.5, t=0.4)],
)
def test_generalized_smelu_gradient_matches_reference(params):
    x = tf.constant(np.linspace(-4, 4, 97), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf_smelu.generalized_smelu(x, **params)
    np.testing.assert_allclose(
        tape.gradient(y, x), references.generalized_smelu_grad(x.numpy(), **params),
        rtol=1e-12, atol=1e-12,
    )


# --- parameter gradients ---------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3, 8])
def test_rescu_beta_gradient_matches_finite_differences(order):
    x = tf.constant(_points(0.8, order)[::5], tf.float64)
    theoretical, numerical = tf.test.compute_gradient(
        lambda b: tf_smelu.rescu(x, beta=b, order=order),
        [tf.constant(0.8, tf.float64)],
        delta=1e-7,
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_per_channel_beta_gets_reduced_gradient():
    x = np.random.default_rng(1).normal(size=(5, 3))
    beta = tf.Variable([0.3, 1.0, 2.0], dtype=tf.float64)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf_smelu.smelu(tf.constant(x), beta=beta) ** 2)
    grad = tape.gradient(y, beta)
    assert grad.shape == (3,)

    def per_channel_loss(b):
        return (references.smelu(x, b) ** 2).sum(axis=0)

    step = 1e-6
    numerical = (
        per_channel_loss(beta.numpy() + step) - per_channel_loss(beta.numpy() - step)
    ) / (2 * step)
    np.testing.assert_allclose(grad, numerical, rtol=1e-6)


@pytest.mark.parametrize("name", ["alpha", "beta", "g_minus", "g_plus", "t"])
def test_generalized_smelu_parameter_gradients(name):
    params = dict(alpha=0.7, beta=1.2, g_minus=-0.1, g_plus=1.3, t=0.2)
    x = tf.constant(np.linspace(-3, 3, 41), tf.float64)

    def fn(value):
        return tf_smelu.generalized_smelu(x, **{**params, name: value})

    theoretical, numerical = tf.test.compute_gradient(
        fn, [tf.constant(params[name], tf.float64)], delta=1e-7
    )
    assert np.abs(theoretical[0]).max() > 0
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


# --- higher order ----------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_second_derivative_matches_reference(order):
    beta = 1.1
    x = tf.constant(_points(beta, order)[:200], tf.float64)  # random points only
    _, _, second = _derivatives(lambda v: tf_smelu.rescu(v, beta=beta, order=order), x, 2)
    expected = references.rescu_derivative(x.numpy(), beta, order, k=2)
    np.testing.assert_allclose(second, expected, rtol=1e-9, atol=1e-9)


def test_second_order_in_tf_function_and_beta():
    beta = tf.Variable(0.5, dtype=tf.float64)
    x = tf.constant(np.linspace(-1, 1, 11), tf.float64)

    @tf.function
    def mixed():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf_smelu.smelu(x, beta=beta)
            grad_x = inner.gradient(y, x)
            penalty = tf.reduce_sum(grad_x**2)
        return outer.gradient(penalty, beta)

    # d/dbeta sum clip((x+b)/(2b))^2 inside the band = sum 2 g * (-x / (2 b^2)).
    xs = x.numpy()
    g = references.smelu_grad(xs, 0.5)
    inside = np.abs(xs) < 0.5
    expected = np.sum(np.where(inside, 2 * g * (-xs / (2 * 0.5**2)), 0.0))
    np.testing.assert_allclose(mixed().numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_rescu_is_exactly_c_n_smooth(order):
    """Derivatives 0..n are continuous at every knot, derivative n+1 jumps."""
    beta = 1.0
    h = 2.0 * beta / order
    eps = 1e-7
    knots = -beta + h * np.arange(order + 1)
    x = tf.constant(np.concatenate([knots - eps, knots + eps]), tf.float64)
    derivatives = _derivatives(lambda v: tf_smelu.rescu(v, beta=beta, order=order), x, order + 1)
    for k, values in enumerate(derivatives):
        left, right = np.split(values, 2)
        jump = np.abs(right - left).max()
        if k <= order:
            # A continuous k-th derivative moves by O(eps * |f^(k+1)|).
            assert jump < 1e-5 * h ** (-k), (k, jump)
        else:
            assert jump > 0.1 * h ** (-order), (k, jump)


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_non_positive_beta_is_rejected(beta):
    with pytest.raises(ValueError, match="beta"):
        tf_smelu.smelu(tf.constant([1.0]), beta=beta)
    with pytest.raises(ValueError, match="beta"):
        tf_smelu.rescu(tf.constant([1.0]), beta=beta)


def test_non_positive_tensor_beta_is_rejected():
    with pytest.raises(ValueError, match="beta"):
        tf_smelu.smelu(tf.constant([1.0]), beta=tf.constant([1.0, -0.5]))

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def traced(beta):
        return tf_smelu.smelu(tf.constant([1.0]), beta=beta)

    np.testing.assert_allclose(traced(tf.constant(0.5)), [1.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="beta"):
        traced(tf.constant(-0.5))


def test_non_positive_alpha_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        tf_smelu.generalized_smelu(tf.constant([1.0]), alpha=0.0)


@pytest.mark.parametrize("order", [0, -2, 1.5, "2", True, MAX_RESCU_ORDER + 1])
def test_bad_order_is_rejected(order):
    with pytest.raises(ValueError, match="order"):
        tf_smelu.rescu(tf.constant([1.0]), order=order)


def test_order_limit_is_named():
    with pytest.raises(ValueError, match=f"must be <= {MAX_RESCU_ORDER} .*order=40"):
        tf_smelu.rescu(tf.constant([1.0]), order=40)


PARAMETERS = [
    (tf_smelu.smelu, "beta"),
    (tf_smelu.rescu, "beta"),
    *((tf_smelu.generalized_smelu, name) for name in ("alpha", "beta", "g_minus", "g_plus", "t")),
]
PARAMETER_IDS = ["smelu-beta", "rescu-beta"] + [
    f"generalized-{name}" for name in ("alpha", "beta", "g_minus", "g_plus", "t")
]
AS = {
    "python": float,
    "numpy": np.float32,
    "tensor": lambda v: tf.constant(v, tf.float32),
    "variable": lambda v: tf.Variable([v, 1.0], dtype=tf.float64),
}


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("form", list(AS))
@pytest.mark.parametrize("fn, name", PARAMETERS, ids=PARAMETER_IDS)
def test_non_finite_parameters_are_rejected(fn, name, form, value):
    with pytest.raises(ValueError, match=f"`{name}` must be .*finite.* Received: {name}="):
        fn(tf.constant([1.0, -1.0]), **{name: AS[form](value)})


@pytest.mark.parametrize("fn, name", PARAMETERS, ids=PARAMETER_IDS)
def test_non_finite_traced_parameter_fails_when_the_graph_runs(fn, name):
    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def traced(value):
        return fn(tf.constant([1.0, -1.0]), **{name: value})

    assert np.all(np.isfinite(traced(tf.constant(0.5))))
    for value in (np.inf, np.nan):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}` must be"):
            traced(tf.constant(value, tf.float32))


def test_invalid_parameter_under_xla_gives_nan_not_a_wrong_number():
    # XLA drops TensorFlow assertions; the parameter is poisoned instead.
    traced = tf.function(
        lambda beta: tf_smelu.smelu(tf.constant([1.0, -0.2, 3.0]), beta=beta), jit_compile=True
    )
    np.testing.assert_allclose(traced(tf.constant(1.0)), references.smelu([1.0, -0.2, 3.0]))
    assert np.all(np.isnan(traced(tf.constant(-1.0))))
    assert np.all(np.isnan(traced(tf.constant(np.inf))))


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64, tf.complex64, tf.bool])
@pytest.mark.parametrize("fn", [tf_smelu.smelu, tf_smelu.rescu, tf_smelu.generalized_smelu])
def test_non_float_inputs_are_rejected(dtype, fn):
    with pytest.raises(TypeError, match="floating-point"):
        fn(tf.zeros([2], dtype))


# --- band widths at the limits of the compute dtype ---------------------------


def _exact_at(x_rounded, beta, order):
    """Exact value and slope, rounded once to float64."""
    return (
        np.array([_exact_rescu(v, beta, order, 0) for v in x_rounded]),
        np.array([_exact_rescu(v, beta, order, 1) for v in x_rounded]),
    )


def _assert_exact_in(actual, expected, dtype, order):
    """Within the accuracy test's tolerance, after rounding to `dtype` once
    (a half-precision result may overflow to inf exactly where its true
    value does). True values below the smallest normal number may come out
    as 0: CPU kernels flush subnormal numbers to zero."""
    rounded = tf.cast(tf.constant(expected, tf.float64), dtype)
    compute = np.float64 if dtype == tf.float64 else np.float32
    np.testing.assert_allclose(
        tf.cast(actual, tf.float64).numpy(), tf.cast(rounded, tf.float64).numpy(),
        rtol=_accuracy_tolerance(dtype, order), atol=float(np.finfo(compute).tiny),
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("end", ["low", "high"])
def test_band_widths_at_the_limits_are_computed_exactly(dtype, order, end):
    low, high = parameter_limits(dtype.name, positive=True)
    beta = low if end == "low" else high
    x = tf.cast(tf.constant(beta * np.linspace(-1.2, 1.2, 49), tf.float64), dtype)
    x = tf.boolean_mask(x, tf.math.is_finite(x))  # half precision holds only some
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf_smelu.rescu(x, beta=beta, order=order)
    grad = tape.gradient(y, x)
    # The function computes with beta rounded to its compute dtype, as x is.
    beta_rounded = float((np.float64 if dtype == tf.float64 else np.float32)(beta))
    value, slope = _exact_at(tf.cast(x, tf.float64).numpy(), beta_rounded, order)
    _assert_exact_in(y, value, dtype, order)
    _assert_exact_in(grad, slope, dtype, order)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_beta_1e20_gives_the_finite_value_in_float32(order):
    # (x + beta)^2 / (4 beta) used to overflow; the value (about 2.5e19 at 0
    # for SmeLU) fits in float32.
    x = tf.constant([-3e20, -5e19, -1.0, 0.0, 1.0, 7e19, 3e20], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf_smelu.rescu(x, beta=1e20, order=order)
    value, slope = _exact_at(tf.cast(x, tf.float64).numpy(), float(np.float32(1e20)), order)
    assert np.all(np.isfinite(y.numpy()))
    _assert_exact_in(y, value, tf.float32, order)
    _assert_exact_in(tape.gradient(y, x), slope, tf.float32, order)


def test_smelu_beta_1e20_is_finite():
    y = tf_smelu.smelu(tf.constant([0.0], tf.float32), beta=1e20)
    np.testing.assert_allclose(y.numpy(), [2.5e19], rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("order", [1, 3, 8])
def test_band_widths_beyond_the_limits_are_rejected(dtype, order):
    low, high = parameter_limits(dtype.name, positive=True)
    x = tf.constant([1.0, -1.0], dtype)
    for beta in (high * 1.5, low / 1.5, 1e-320, 5e-324):
        with pytest.raises(ValueError, match=r"`beta` must be .* to be computed in float"):
            tf_smelu.rescu(x, beta=beta, order=order)


@pytest.mark.parametrize("beta", [1e300, 1e-320, 1e-45, 1e-35, 1e38])
@pytest.mark.parametrize("fn", [tf_smelu.smelu, tf_smelu.generalized_smelu])
def test_the_reported_float32_betas_are_rejected(fn, beta):
    message = re.escape(f"to be computed in float32. Received: beta={beta}")
    with pytest.raises(ValueError, match=message):
        fn(tf.constant([1.0, -1.0], tf.float32), beta=beta)


def test_float64_computes_betas_float32_cannot():
    x = tf.constant([-1e300, 0.0, 3e300], tf.float64)
    np.testing.assert_allclose(tf_smelu.smelu(x, beta=1e300).numpy(), [0.0, 2.5e299, 3e300])


@pytest.mark.parametrize("form", list(AS))
@pytest.mark.parametrize("fn, name", PARAMETERS, ids=PARAMETER_IDS)
def test_parameters_float32_cannot_hold_are_rejected(fn, name, form):
    make = np.float64 if form == "numpy" else AS[form]  # np.float32(1e300) is inf already
    with pytest.raises(ValueError, match=f"`{name}` must be .* Received: {name}="):
        fn(tf.constant([1.0, -1.0]), **{name: make(1e300)})


@pytest.mark.parametrize("fn, name", PARAMETERS, ids=PARAMETER_IDS)
def test_traced_parameter_out_of_range_fails_when_the_graph_runs(fn, name):
    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def traced(value):
        return fn(tf.constant([1.0, -1.0]), **{name: value})

    with pytest.raises(tf.errors.InvalidArgumentError, match="to be computed in float32"):
        traced(tf.constant(3e38, tf.float32))


def test_parameter_out_of_range_under_xla_gives_nan():
    traced = tf.function(
        lambda beta: tf_smelu.smelu(tf.constant([1.0, -0.2, 3.0]), beta=beta), jit_compile=True
    )
    assert np.all(np.isnan(traced(tf.constant(1e38))))
    assert np.all(np.isnan(traced(tf.constant(1e-45))))
