"""Smooth rectified activations with custom gradients.

The whole module rests on one idea: the RESCU family is ReLU convolved with a
centred cardinal B-spline of order `n` stretched over `[-beta, beta]`.
SmeLU is order 1 (a box kernel) and takes exactly the same code path;
generalized SmeLU is an affine combination of an (asymmetric) SmeLU and a
line, so it reuses that code too. That is why the module stays whole (about
430 lines): the three public functions share every kernel below.

Kernels are written for speed without XLA: the value and the slope are each a
handful of element-wise ops on the *clipped* input, and the custom gradient
keeps a single tensor and no intermediates: the output for SmeLU (its slope
follows from it in closed form, and the next layer keeps the output anyway),
the input for higher orders. Every op is a stock TensorFlow op, so exported
SavedModels serve without this package.

Higher derivatives are available: the gradient functions are themselves built
from differentiable ops, so gradient-of-gradient (Hessian-vector products,
gradient penalties) works, and the derivatives with respect to `beta` (and,
for generalized SmeLU, every parameter) are exact.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from tf_smelu.validation import require_order

TensorLike = tf.Tensor | tf.Variable | np.ndarray | float | list
Param = float | tf.Tensor | tf.Variable | np.ndarray

# Half-precision inputs are computed in float32: the band polynomial squares
# and cubes values, which loses too many bits (and can overflow) in float16.
_COMPUTE_DTYPES = {tf.float16: tf.float32, tf.bfloat16: tf.float32}


# ---------------------------------------------------------------------------
# Input validation and dtype handling.
# ---------------------------------------------------------------------------


def _as_float_tensor(x: TensorLike, fn_name: str) -> tf.Tensor:
    """Converts `x` to a tensor and rejects non-floating dtypes."""
    if isinstance(x, tf.Variable):
        x = x.value()
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(
            f"`{fn_name}` expects a floating-point tensor (float16, bfloat16, "
            f"float32 or float64). Received: x.dtype={x.dtype.name}. "
            "Cast integer inputs with tf.cast(x, tf.float32) first."
        )
    return x


def _is_python_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parameter(value: Param, name: str, dtype: tf.DType, positive: bool):
    """Validates a parameter and returns it ready for `dtype` arithmetic.

    Python numbers stay Python numbers (they fold into constants and need no
    gradient). Tensors and variables are cast to `dtype`; gradients flow
    through them. Positivity is checked eagerly when the value is known and
    with `tf.debugging.assert_positive` otherwise (a Python `assert` cannot see
    traced values).
    """
    if _is_python_number(value) or isinstance(value, np.generic):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be finite. Received: {name}={value}")
        if positive and value <= 0:
            raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")
        return value
    if isinstance(value, tf.Variable):
        value = value.value()
    tensor = tf.convert_to_tensor(value)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise TypeError(
            f"`{name}` must be a real number or tensor. "
            f"Received: {name}.dtype={tensor.dtype.name}"
        )
    tensor = tf.cast(tensor, dtype)
    if positive:
        static = tf.get_static_value(tensor)
        if static is not None:
            if not np.all(static > 0):
                raise ValueError(
                    f"`{name}` must be > 0. Received: {name}={static}"
                )
        else:
            # In a tf.function, automatic control dependencies keep the check.
            tf.debugging.assert_positive(tensor, message=f"`{name}` must be > 0")
    return tensor


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    return _COMPUTE_DTYPES.get(dtype, dtype)


def _sum_to_shape(grad: tf.Tensor, param) -> tf.Tensor:
    """Reduces a broadcast gradient back to the shape of `param`."""
    param_shape = tf.shape(param)
    _, axes = tf.raw_ops.BroadcastGradientArgs(
        s0=tf.shape(grad, out_type=param_shape.dtype), s1=param_shape
    )
    return tf.reshape(tf.reduce_sum(grad, axis=axes), param_shape)


# ---------------------------------------------------------------------------
# The RESCU core (SmeLU is order 1).
#
# With h = 2 beta / n and s = clip(x, -beta, beta) + beta in [0, 2 beta], the
# k-th antiderivative of the B-spline kernel is a truncated-power sum
#     T_k(s) = 1 / (k! h^n) * sum_{j<n} (-1)^j C(n, j) (s - j h)_+^k
# (the j = n term vanishes because s <= n h). Then, inside the band,
#     rescu(x)  = T_{n+1}(s),   rescu'(x) = T_n(s),   rescu''(x) = T_{n-1}(s).
# Clipping makes the band formula exact on both sides for the slope
# (T_n = 0 on the left, 1 on the right) and, because RESCU is convex and lies
# above ReLU, rescu(x) = max(x, T_{n+1}(s)) everywhere. No truncated power is
# ever evaluated at large |x|, so there is no catastrophic cancellation and no
# overflow.
# ---------------------------------------------------------------------------


def _truncated_power(shifted: tf.Tensor, knot, power: int, first: bool):
    """`(shifted - knot)_+ ** power`; the first knot is 0 and needs no clamp."""
    base = shifted if first else tf.nn.relu(shifted - knot)
    if power == 1:
        return base
    if power == 2:
        return tf.square(base)
    return tf.pow(base, power)


def _band_antiderivative(clipped: tf.Tensor, beta, order: int, k: int):
    """`T_k(clipped + beta)`: the k-th antiderivative of the kernel."""
    n = order
    h = 2.0 * beta / n
    shifted = None
    total = None
    for j in range(n):
        coefficient = (-1) ** j * math.comb(n, j)
        if j == 0 and k == 2:
            # (x + beta)^2 as one fused op; this is the whole SmeLU value.
            term = tf.math.squared_difference(clipped, -beta)
        else:
            shifted = clipped + beta if shifted is None else shifted
            term = _truncated_power(shifted, j * h, k, first=j == 0)
        term = term if coefficient == 1 else coefficient * term
        total = term if total is None else total + term
    return total * (1.0 / (math.factorial(k) * h**n))


def _clip_to_band(x: tf.Tensor, beta) -> tf.Tensor:
    if isinstance(beta, float):
        # One fused kernel instead of Minimum + Maximum.
        return tf.raw_ops.ClipByValue(
            t=x,
            clip_value_min=tf.constant(-beta, x.dtype),
            clip_value_max=tf.constant(beta, x.dtype),
        )
    return tf.minimum(tf.maximum(x, -beta), beta)


def _rescu_value(x: tf.Tensor, beta, order: int) -> tf.Tensor:
    clipped = _clip_to_band(x, beta)
    return tf.maximum(x, _band_antiderivative(clipped, beta, order, order + 1))


def _rescu_slope(x: tf.Tensor, beta, order: int) -> tf.Tensor:
    clipped = _clip_to_band(x, beta)
    return _band_antiderivative(clipped, beta, order, order)


def _rescu_beta_derivative(x: tf.Tensor, beta, order: int) -> tf.Tensor:
    """d rescu / d beta, from rescu(x; beta) = beta * rescu(x / beta; 1).

    It is (rescu(x) - x rescu'(x)) / beta, which is exactly 0 outside the
    band, so it is evaluated on the clipped input (no inf - inf at |x| = inf).
    """
    clipped = _clip_to_band(x, beta)
    value = _band_antiderivative(clipped, beta, order, order + 1)
    slope = _band_antiderivative(clipped, beta, order, order)
    return (value - clipped * slope) / beta


# Order 1 (SmeLU) can recover its slope from its *output*: inside the band
# y = beta g^2 with g = (x + beta) / (2 beta), so g = sqrt(min(y, beta) / beta)
# everywhere, and d y / d beta = g (1 - g). The output is kept alive anyway by
# the layer that consumes it (as ReLU's gradient uses its output), so saving
# it instead of the input costs no memory. Higher orders have no closed-form
# inverse and save the input.


def _smelu_slope_from_output(y: tf.Tensor, beta) -> tf.Tensor:
    """g = sqrt(min(y, beta) / beta), with finite derivatives at y = 0."""

    def slope_and_grad(y, beta):
        slope = tf.sqrt(tf.minimum(y, beta) * (1.0 / beta))

        def grad(upstream):
            # dg/dy = 1 / (2 beta g) and dg/dbeta = -g / (2 beta) inside the
            # band, 0 outside; written with where() so that g = 0 gives 0
            # rather than inf * 0 (second derivatives only, off the hot path).
            inside = tf.logical_and(y < beta, slope > 0)
            safe_slope = tf.where(inside, slope, tf.ones_like(slope))
            dy = tf.where(inside, upstream / (2.0 * beta * safe_slope), 0.0)
            if isinstance(beta, float):
                return dy
            dbeta = tf.where(inside, -upstream * slope / (2.0 * beta), 0.0)
            return dy, _sum_to_shape(dbeta, beta)

        return slope, grad

    if isinstance(beta, float):
        return tf.custom_gradient(lambda y: slope_and_grad(y, beta))(y)
    return tf.custom_gradient(slope_and_grad)(y, beta)


def _rescu_with_gradient(x: tf.Tensor, beta, order: int) -> tf.Tensor:
    """RESCU of `x` (any float dtype) with a lean custom gradient.

    The forward pass runs in the compute dtype and returns `x.dtype`. The
    backward pass keeps one tensor: the output for order 1, the input
    otherwise (see above). Gradients flow to `beta` when it is a tensor.
    """
    dtype = _compute_dtype(x.dtype)

    def to_compute(tensor):
        return tf.cast(tensor, dtype) if tensor.dtype != dtype else tensor

    def to_input(tensor):
        return tf.cast(tensor, x.dtype) if tensor.dtype != x.dtype else tensor

    def forward(x, beta):
        y = to_input(_rescu_value(to_compute(x), beta, order))

        def grad(upstream):
            upstream = to_compute(upstream)
            if order == 1:
                slope = _smelu_slope_from_output(to_compute(y), beta)
                beta_derivative = slope - tf.square(slope)
            else:
                slope = _rescu_slope(to_compute(x), beta, order)
                beta_derivative = _rescu_beta_derivative(to_compute(x), beta, order)
            dx = to_input(upstream * slope)
            if isinstance(beta, float):
                return dx
            return dx, _sum_to_shape(upstream * beta_derivative, beta)

        return y, grad

    if isinstance(beta, float):
        return tf.custom_gradient(lambda x: forward(x, beta))(x)
    return tf.custom_gradient(forward)(x, beta)


def _in_compute_dtype(x: tf.Tensor, compute):
    """Runs `compute(x_in_compute_dtype, dtype)` and casts back to x.dtype."""
    dtype = _compute_dtype(x.dtype)
    result = compute(tf.cast(x, dtype) if dtype != x.dtype else x, dtype)
    return tf.cast(result, x.dtype) if dtype != x.dtype else result


# ---------------------------------------------------------------------------
# Public functions.
# ---------------------------------------------------------------------------


def rescu(x: TensorLike, beta: Param = 1.0, order: int = 2) -> tf.Tensor:
    r"""REctified Smooth Continuous Unit of a given smoothness order.

    ReLU convolved with the centred cardinal B-spline of order `n` stretched
    to `[-beta, beta]`. With $h = 2\beta / n$ and $u = (x + \beta) / h$:

    $$
    \mathrm{rescu}_n(x) =
    \begin{cases}
        0 & x \le -\beta \\
        \frac{h}{(n+1)!} \sum_{j=0}^{n} (-1)^j \binom{n}{j} (u - j)_+^{n+1}
          & |x| < \beta \\
        x & x \ge \beta
    \end{cases}
    $$

    It is $C^n$: order 1 is SmeLU ($C^1$), order 2 is piecewise cubic and
    $C^2$, and so on. The gradient is
    $\frac{1}{n!} \sum_j (-1)^j \binom{n}{j} (u - j)_+^n$, a B-spline CDF.

    Example:

    >>> tf_smelu.rescu(tf.constant([-2.0, 0.0, 2.0]), beta=1.0, order=2)
    <tf.Tensor: shape=(3,), dtype=float32, numpy=array([0., 0.16666667, 2.], ...)>

    Args:
        x: Floating-point tensor (float16, bfloat16, float32 or float64).
            Half-precision inputs are computed in float32.
        beta: Half-width of the smooth band, `> 0`. A Python number, or a
            tensor/variable broadcastable to `x` (then it receives gradients).
        order: Smoothness order `n >= 1` (Python int).

    Returns:
        A tensor of the same shape and dtype as `x`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if `beta <= 0` or `order` is not an integer `>= 1`.

    Reference:
        [Shamir et al., 2020](https://arxiv.org/abs/2010.09931)
    """
    order = require_order(order)
    x = _as_float_tensor(x, "rescu")
    beta = _parameter(beta, "beta", _compute_dtype(x.dtype), positive=True)
    return _rescu_with_gradient(x, beta, order)


def smelu(x: TensorLike, beta: Param = 1.0) -> tf.Tensor:
    r"""Smooth ReLU (SmeLU).

    $$
    \mathrm{smelu}(x) =
    \begin{cases}
        0 & x \le -\beta \\
        \frac{(x + \beta)^2}{4 \beta} & |x| \le \beta \\
        x & x \ge \beta
    \end{cases}
    \qquad
    \mathrm{smelu}'(x) = \mathrm{clip}\!\left(\frac{x + \beta}{2 \beta}, 0, 1\right)
    $$

    ReLU convolved with a box of width `2 beta`: the gradient is continuous,
    which makes training more reproducible than with ReLU. It is
    `rescu(x, beta, order=1)`, computed by the same code.

    Example:

    >>> tf_smelu.smelu(tf.constant([-2.0, 0.0, 0.5, 2.0]), beta=1.0)
    <tf.Tensor: shape=(4,), dtype=float32, numpy=array([0., 0.25, 0.5625, 2.], ...)>

    Args:
        x: Floating-point tensor (float16, bfloat16, float32 or float64).
        beta: Half-width of the quadratic band, `> 0`. A Python number, or a
            tensor/variable broadcastable to `x` (then it receives gradients).

    Returns:
        A tensor of the same shape and dtype as `x`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if `beta <= 0`.

    Reference:
        [Shamir et al., 2020](https://arxiv.org/abs/2010.09931)
    """
    return rescu(x, beta=beta, order=1)


def generalized_smelu(
    x: TensorLike,
    alpha: Param = 1.0,
    beta: Param = 1.0,
    g_minus: Param = 0.0,
    g_plus: Param = 1.0,
    t: Param = 0.0,
) -> tf.Tensor:
    r"""Generalized SmeLU: asymmetric band, arbitrary slopes and shift.

    With the quadratic band $[-\alpha, \beta]$:

    $$
    f(x) =
    \begin{cases}
        g_-(x + \alpha) + t & x \le -\alpha \\
        a x^2 + b x + c & -\alpha < x < \beta \\
        g_+(x - \beta) + a\beta^2 + b\beta + c & x \ge \beta
    \end{cases}
    $$

    where $a = \frac{g_+ - g_-}{2(\alpha + \beta)}$,
    $b = \frac{\alpha g_+ + \beta g_-}{\alpha + \beta}$ and
    $c = t + \frac{\alpha^2 (g_+ + g_-) + 2 \alpha \beta g_-}{2(\alpha + \beta)}$.
    Value and slope are continuous. It equals
    $t + g_-(x + \alpha) + (g_+ - g_-)\,\mathrm{smelu}(x - \frac{\beta - \alpha}{2};
    \frac{\alpha + \beta}{2})$, which is how it is computed. With `alpha=beta`,
    `g_minus=0`, `g_plus=1`, `t=0` it is SmeLU.

    Example:

    >>> tf_smelu.generalized_smelu(tf.constant([-3.0, 0.0, 3.0]), g_minus=0.1)
    <tf.Tensor: shape=(3,), dtype=float32, numpy=array([-0.2, 0.325, 3.1], ...)>

    Args:
        x: Floating-point tensor (float16, bfloat16, float32 or float64).
        alpha: Left half-width of the band, `> 0`.
        beta: Right half-width of the band, `> 0`.
        g_minus: Slope left of the band.
        g_plus: Slope right of the band.
        t: Value at `x = -alpha`.
        Every parameter may be a Python number or a tensor/variable
        broadcastable to `x`; tensors receive gradients.

    Returns:
        A tensor of the same shape and dtype as `x`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if `alpha <= 0` or `beta <= 0`.

    Reference:
        [Shamir et al., 2020](https://arxiv.org/abs/2010.09931), eq. 11.
    """

    def compute(x, dtype):
        a = _parameter(alpha, "alpha", dtype, positive=True)
        b = _parameter(beta, "beta", dtype, positive=True)
        lo = _parameter(g_minus, "g_minus", dtype, positive=False)
        hi = _parameter(g_plus, "g_plus", dtype, positive=False)
        shift = _parameter(t, "t", dtype, positive=False)
        half_width = 0.5 * (a + b)
        centre = 0.5 * (b - a)
        smooth = _rescu_with_gradient(x - centre, half_width, order=1)
        return shift + lo * (x + a) + (hi - lo) * smooth

    return _in_compute_dtype(_as_float_tensor(x, "generalized_smelu"), compute)
