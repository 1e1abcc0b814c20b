"""Smooth rectified activations with custom gradients, on every Keras 3 backend.

The whole module rests on one idea: the RESCU family is ReLU convolved with a
centred cardinal B-spline of order `n` stretched over `[-beta, beta]`.
SmeLU is order 1 (a box kernel) and takes exactly the same code path;
generalized SmeLU is an affine combination of an (asymmetric) SmeLU and a
line, so it reuses that code too. That is why the module stays whole: the
three public functions share every kernel below.

**Backends.** The math is written once, in `_Kernels`, over a dozen
primitives (clip, square, custom gradient, ...). `_Kernels` takes them from
`keras.ops`, so the same code runs on the JAX and PyTorch backends of Keras 3;
`_TensorFlowKernels` replaces them with stock TensorFlow ops chosen for speed
without XLA (fused clip, fused squared difference, a gradient that keeps only
the output for SmeLU). TensorFlow tensors, and every input when Keras' backend
is `"tensorflow"`, take the TensorFlow kernels; so exported SavedModels hold
only stock ops and serve without this package. The other backends never see a
TensorFlow op, and TensorFlow never sees their arrays.

**Precision and speed.** The band is evaluated on the distance to its nearer
end in knot spacings, `w = (beta - |x|) / h` in `[0, order / 2]` (exact near
both knots; RESCU minus ReLU is even), so nothing overflows or underflows where
the result does not. Order 1 (SmeLU) is one square; orders 2 to 8 evaluate
the truncated-power sum of the B-spline from that end: half the terms of the plain sum, of size
`~(n/2)^n / n!` instead of `~n^n / n!` (the plain sum cancels: in float32 its
error is 1e-3 at order 10 and 1e8 at order 30), a handful of element-wise ops,
within a few ulps. Order 2's slope is the plain sum where its square cannot
overflow (fewer kernels). Higher orders evaluate the B-splines with the
Cox-de Boor recurrence, whose terms are all positive (about `order**2` ops).
The value and slope are exact to a few ulps times the order, in every dtype,
for every order up to `MAX_RESCU_ORDER` (measured errors next to
`_MAX_REFLECTED_POWER_ORDER`).
Half-precision inputs are computed in float32 and rounded once at the end.

**Parameter checks.** Every parameter must lie in the range its compute dtype
can compute with (`parameter_limits`: band widths in about `[2e-31, 2e37]` in
float32, so that no constant derived from them overflows or is flushed to
zero). Python numbers are checked when the function is called
(ValueError). Tensors with a known value (eager TensorFlow, NumPy, concrete JAX
arrays, PyTorch tensors) are checked the same way. Symbolic tensors (inside a
`tf.function`, or traced by `jax.jit`, as trainable weights are in Keras'
compiled training steps) cannot be read: in TensorFlow graphs an assertion
raises `tf.errors.InvalidArgumentError` when the graph runs, and wherever an
assertion cannot run (under JAX tracing, and under XLA, which drops TF
assertions) an invalid value turns the output into NaN instead of a wrong
number.

Higher derivatives are available: the gradient functions are themselves built
from differentiable ops, so gradient-of-gradient (Hessian-vector products,
gradient penalties) works, and the derivatives with respect to `beta` (and,
for generalized SmeLU, every parameter) are exact.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_smelu.validation import require_order

TensorLike = Any
"""A tensor of any Keras backend, a `tf.Tensor`/`tf.Variable`, NumPy array or list."""
Param = Any
"""A Python number, or a tensor/variable (of any backend) broadcastable to `x`."""

MAX_RESCU_ORDER = 32
"""The largest RESCU order accepted: the cost grows as `order**2` element-wise
ops (Cox-de Boor recurrence), and accuracy is tested up to it in every dtype."""

# Orders up to `_MAX_REFLECTED_POWER_ORDER` (per compute dtype) use the truncated
# powers of the nearer band end (`band_by_reflected_powers`: half the terms of
# the plain truncated-power sum, far less cancellation), higher orders the
# Cox-de Boor recurrence (`order**2` terms, all positive). Measured against
# exact rational arithmetic on the accuracy test's points (`beta` a Python
# number / a tensor), the worst errors (value, slope) in ulps, against the
# `2 (order + 2)` the tests allow:
#   order 2:  float32 1.4, 2.2 / 1.9, 1.8;      float64 2.1, 2.1 / 2.1, 1.5
#   order 3:  float32 2.0, 1.8 / 2.6, 2.0;      float64 4.0, 1.8 / 4.3, 2.3
#   order 8:  float32 7.8, 7.3 / 5.6, 5.6;      float64 13.8, 13.9 / 15.4, 9.6
#   order 9:  float32 10.5, 16.0 / 11.6, 16.0;  float64 11.6, 8.2 / 15.0, 21.5
# so reflected stops at 8 (order 9 has no margin left). The plain sum (one
# term per knot, terms up to `n^n / n!`) was less accurate from order 3 on
# (float32 4.6, 5.8 ulps) and slower at every order.
_MAX_REFLECTED_POWER_ORDER = {"float32": 8, "float64": 8}

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# Half-precision inputs are computed in float32: the band polynomial squares
# and cubes values, which loses too many bits (and can overflow) in float16.
_COMPUTE_DTYPES = {"float16": "float32", "bfloat16": "float32"}


def require_rescu_order(order: object) -> int:
    """A RESCU smoothness order: a Python integer in `[1, MAX_RESCU_ORDER]`.

    Args:
        order: The requested order (a Python or NumPy integer; `True` and
            floats are refused).

    Returns:
        `order` as a Python `int`.

    Raises:
        ValueError: if `order` is not an integer or out of range.
    """
    order = require_order(order)
    if order > MAX_RESCU_ORDER:
        raise ValueError(
            f"`order` must be <= {MAX_RESCU_ORDER} (RESCU costs order**2 element-wise "
            f"ops; orders up to {MAX_RESCU_ORDER} are tested accurate in every dtype). "
            f"Received: order={order}"
        )
    return order


def parameter_limits(dtype: str, positive: bool) -> tuple[float, float]:
    """The range a parameter must lie in to be computed in `dtype`'s compute dtype.

    Half precision computes in float32, so its parameters follow float32's
    limits. With `tiny` the smallest normal number, `eps` the machine epsilon
    and `max` the largest finite number (CPU kernels flush subnormal numbers
    to zero), a band width `beta` must lie in `[2 tiny / eps, 1 / (4 tiny)]`:

    - from below, `x + beta` for `x` just above `-beta` (about
      `beta * eps / 2`) must be normal, or the left of the band would be
      flushed to zero; the knot spacing `h = 2 beta / order` is then normal
      too;
    - from above, SmeLU's `1 / (4 beta)` and RESCU's `1 / h` (times a
      constant between 0.2 and 1) must be normal, and the band's width
      `2 beta` finite (`1 / (4 tiny) < max / 2`).

    In float32 that is about `[2.0e-31, 2.1e37]`, in float64
    `[2.0e-292, 1.1e307]`. Inside it the value and the gradients are finite
    wherever the true ones are, and accurate to a few ulps (values below
    `tiny` may come out as 0). Signed parameters (slopes and shifts) must lie
    in `[-max / 2, max / 2]`, so that differences such as `g_plus - g_minus`
    stay finite.

    Args:
        dtype: The input dtype (`"float16"`, `"bfloat16"`, `"float32"` or
            `"float64"`).
        positive: Whether the parameter is a band width (`> 0`).

    Returns:
        `(low, high)`: bounds on the value (band widths) or on its magnitude
        (signed parameters, `low = 0`).
    """
    info = np.finfo(_COMPUTE_DTYPES.get(dtype, dtype))
    tiny = float(info.tiny)
    if not positive:
        return 0.0, float(info.max) / 2
    return 2.0 * tiny / float(info.eps), 0.25 / tiny


def parameter_problem(value: float, positive: bool, dtype: str = "float32") -> str | None:
    """What is wrong with a parameter's real value, or None if it is valid.

    The text completes "`name` ..." (e.g. "must be a finite number > 0 in
    [1.972e-31, 2.127e+37] to be computed in float32"); callers add the name
    and what they received. See `parameter_limits` for the range.

    Args:
        value: The parameter's value as a Python float.
        positive: Whether it is a band width (must be `> 0`) rather than a
            signed slope or shift.
        dtype: The input dtype it is computed with (half precision follows
            float32's limits).

    Returns:
        The problem as the end of a sentence, or None if `value` is valid.
    """
    low, high = parameter_limits(dtype, positive)
    compute = _COMPUTE_DTYPES.get(dtype, dtype)
    if positive:
        if math.isfinite(value) and low <= value <= high:
            return None
        return f"must be a finite number > 0 in [{low:.4g}, {high:.4g}] to be computed in {compute}"
    if math.isfinite(value) and abs(value) <= high:
        return None
    return f"must be a finite number in [{-high:.4g}, {high:.4g}] to be computed in {compute}"


def require_parameter(name: str, value: object, positive: bool, dtype: str = "float32") -> float:
    """A Python/NumPy real number that `dtype` computes with (see `parameter_limits`).

    Args:
        name: The parameter's name, for the message.
        value: The value to check.
        positive: Whether it is a band width (`> 0`).
        dtype: The dtype of the inputs it will be used with.

    Returns:
        The value as a Python float.

    Raises:
        ValueError: if `value` is not a real number or out of range, e.g.
            "`beta` must be a finite number > 0 in [1.972e-31, 2.127e+37] to be
            computed in float32. Received: beta=1e+300".
    """
    if not _is_number(value):
        condition = "finite and > 0" if positive else "finite"
        raise ValueError(f"`{name}` must be a real number, {condition}. Received: {name}={value!r}")
    try:
        number = float(value)
    except OverflowError:  # a Python integer beyond float64
        number = math.inf
    problem = parameter_problem(number, positive, dtype)
    if problem is not None:
        raise ValueError(f"`{name}` {problem}. Received: {name}={value}")
    return float(value)


def _is_number(value: object) -> bool:
    """A real Python or NumPy scalar (NumPy registers its scalars as `numbers.Real`)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _total(terms: list):
    """The sum of a list of tensors, without adding a zero first."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


# ---------------------------------------------------------------------------
# The math, over backend primitives.
#
# With h = 2 beta / n and s = clip(x, -beta, beta) + beta in [0, 2 beta], the
# k-th antiderivative of the B-spline kernel is a truncated-power sum
#     T_k(s) = 1 / (k! h^n) * sum_{j<n} (-1)^j C(n, j) (s - j h)_+^k
# (the j = n term vanishes because s <= n h). Then, inside the band,
#     rescu(x)  = T_{n+1}(s),   rescu'(x) = T_n(s),   rescu''(x) = T_{n-1}(s).
# Clipping makes the band formula exact on both sides for the slope
# (T_n = 0 on the left, 1 on the right) and, because RESCU is convex and lies
# above ReLU, rescu(x) = max(x, T_{n+1}(s)) everywhere. No truncated power is
# ever evaluated at large |x|, so there is no overflow.
#
# The same two quantities in the B-spline basis (N_m: cardinal B-spline of
# order m on [0, m]; u = s / h = i + f with integer i in [0, n-1] and f in
# [0, 1]), from N_{m+1}'(u) = N_m(u) - N_m(u - 1):
#     rescu'(x) = sum_{r<=i} N_{n+1}(f + r)
#     rescu(x)  = h * sum_{r<=i} (i + 1 - r) N_{n+2}(f + r)
# Every term is >= 0, so nothing cancels at any order.
# ---------------------------------------------------------------------------


class _Kernels:
    """RESCU and its derivatives over `keras.ops` (the JAX and PyTorch backends).

    Subclasses replace the primitives (the methods above "The math"); the
    math below them is shared by every backend.
    """

    # Order 1 can take its slope from its output (see _TensorFlowKernels).
    slope_from_output = False

    def convert(self, x):
        return keras.ops.convert_to_tensor(x)

    def dtype_name(self, x) -> str:
        return keras.backend.standardize_dtype(x.dtype)

    def cast(self, x, dtype: str):
        return keras.ops.cast(x, dtype)

    def clip(self, x, beta):
        return keras.ops.minimum(keras.ops.maximum(x, -beta), beta)

    def relu(self, x):
        return keras.ops.relu(x)

    def square(self, x):
        return keras.ops.square(x)

    def squared_difference(self, x, y):
        return keras.ops.square(x - y)

    def maximum(self, x, y):
        return keras.ops.maximum(x, y)

    def minimum(self, x, y):
        return keras.ops.minimum(x, y)

    def floor(self, x):
        return keras.ops.floor(x)

    def abs(self, x):
        return keras.ops.abs(x)

    def where_positive(self, x, if_positive, otherwise):
        return keras.ops.where(x > 0, if_positive, otherwise)

    def custom_gradient(self, forward: Callable, *args):
        """`forward(*args)` returns `(y, grad)`; `grad(upstream)` the input gradients."""

        @keras.ops.custom_gradient
        def wrapped(*tensors):
            y, grad = forward(*tensors)

            def grad_fn(*positional, upstream=None):
                # JAX passes the upstream gradient positionally; PyTorch
                # passes the saved inputs first and it as `upstream`.
                grads = grad(positional[0] if upstream is None else upstream)
                return grads if isinstance(grads, tuple) else (grads,)

            return y, grad_fn

        return wrapped(*args)

    def sum_to_shape(self, grad, param):
        """Reduces a broadcast gradient back to the (static) shape of `param`."""
        shape = tuple(param.shape)
        extra = len(grad.shape) - len(shape)
        axes = tuple(range(extra)) + tuple(
            extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1
        )
        return keras.ops.reshape(keras.ops.sum(grad, axis=axes), shape) if axes else grad

    def static_value(self, tensor) -> np.ndarray | None:
        """The value of `tensor` if it is known now, else None (traced)."""
        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            if isinstance(tensor, jax.core.Tracer):
                return None
        elif backend == "torch" and tensor.device.type == "meta":
            # Keras infers output shapes on PyTorch with data-less tensors.
            return None
        return keras.ops.convert_to_numpy(tensor)

    def poison(self, tensor, limits: tuple[float, float], positive: bool):
        """0 where the traced parameter `tensor` is valid, NaN where it is not.

        Valid: within `limits` (see `parameter_limits`; NaN compares false).
        Added to the output, it turns the results of an invalid parameter into
        NaN. (Poisoning the parameter itself is not enough: XLA's CPU min/max
        drop NaN, and the clip to the band would hide it.)
        """
        low, high = limits
        magnitude = tensor if positive else keras.ops.abs(tensor)
        valid = keras.ops.logical_and(magnitude >= low, magnitude <= high)
        return keras.ops.cast(keras.ops.where(valid, 0.0, float("nan")), tensor.dtype)

    def check_symbolic(self, tensor, name: str, problem: str, limits, positive: bool):
        """A traced parameter's poison (see `poison`); no assertion exists here."""
        return self.poison(tensor, limits, positive)

    # --- The math -------------------------------------------------------

    def as_float_tensor(self, x: TensorLike, fn_name: str):
        """Converts `x` to a tensor and rejects non-floating dtypes."""
        x = self.convert(x)
        dtype = self.dtype_name(x)
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"`{fn_name}` expects a floating-point tensor (float16, bfloat16, "
                f"float32 or float64). Received: x.dtype={dtype}. "
                "Cast integer inputs to float32 first."
            )
        return x

    def compute_dtype(self, x) -> str:
        dtype = self.dtype_name(x)
        return _COMPUTE_DTYPES.get(dtype, dtype)

    def to_dtype(self, x, dtype: str):
        return x if self.dtype_name(x) == dtype else self.cast(x, dtype)

    def parameter(self, value: Param, name: str, dtype: str, positive: bool):
        """Validates a parameter and returns it ready for `dtype` arithmetic.

        Python numbers stay Python numbers (they fold into constants and need
        no gradient). Tensors and variables are cast to `dtype`; gradients
        flow through them. Values must lie within
        `parameter_limits(dtype, positive)`. See the module docstring for how
        values that are not known yet are checked.

        Returns:
            `(value, poison)`: `poison` is None when the value was checked,
            else a tensor (0 where valid, NaN where not) to add to the output.
        """
        if _is_number(value):
            return require_parameter(name, value, positive, dtype), None
        tensor = self.convert(value)
        if not self.dtype_name(tensor).startswith(("float", "bfloat", "int", "uint")):
            raise TypeError(
                f"`{name}` must be a real number or tensor. "
                f"Received: {name}.dtype={self.dtype_name(tensor)}"
            )
        tensor = self.to_dtype(tensor, dtype)
        static = self.static_value(tensor)
        limits = parameter_limits(dtype, positive)
        # The condition a value must meet, as text (NaN never meets it).
        condition = parameter_problem(math.nan, positive, dtype)
        if static is None:
            return tensor, self.check_symbolic(tensor, name, condition, limits, positive)
        magnitude = static if positive else np.abs(static)
        if not np.all((magnitude >= limits[0]) & (magnitude <= limits[1])):
            raise ValueError(f"`{name}` {condition}. Received: {name}={static}")
        return tensor, None

    def power(self, base, power: int):
        """`base ** power` by repeated squaring: cheaper kernels than `Pow`."""
        if power == 1:
            return base
        if power % 2:
            return self.power(base, power - 1) * base
        return self.square(self.power(base, power // 2))

    def smelu_band(self, clipped, beta, value: bool, slope: bool):
        """Order 1: `(x + beta)^2 / (4 beta)` and `(x + beta) / (2 beta)`.

        The value is one fused kernel where that square cannot overflow or
        underflow, else it is scaled before squaring; `x + beta` is exact near
        the left knot.
        """
        shifted = None if value and self.fused_square(beta, clipped) else clipped + beta
        band_value = None
        if value:
            band_value = (
                self.squared_difference(clipped, -beta) * (0.25 / beta)
                if shifted is None
                else shifted * (shifted * (0.25 / beta))
            )
        if not slope:
            return band_value, None
        shifted = clipped + beta if shifted is None else shifted
        return band_value, shifted * (0.5 / beta)

    def power_sums(self, bases: list, order: int, value: bool, slope: bool):
        """`sum_j (-1)^j C(n, j) b_j^(n+1)` and the same with `b_j^n` (None if not asked).

        `bases[j]` is the j-th truncated base, `(u - j)_+` or a multiple of it.
        """
        value_terms, slope_terms = [], []
        for j, base in enumerate(bases):
            coefficient = (-1) ** j * math.comb(order, j)
            power = self.power(base, order)
            for wanted, terms, term in (
                (value, value_terms, power * base if value else None),
                (slope, slope_terms, power),
            ):
                if wanted:
                    terms.append(term if coefficient == 1 else coefficient * term)
        return (_total(value_terms) if value else None, _total(slope_terms) if slope else None)

    def band_by_reflected_powers(self, clipped, beta, order: int, value: bool, slope: bool):
        """Band value and slope from the truncated powers of the nearer band end.

        See `reflected`, which gives the value's excess over ReLU.
        """
        excess, band_slope = self.reflected(clipped, beta, order, value, slope)
        return (self.relu(clipped) + excess if value else None), band_slope

    def reflected(self, clipped, beta, order: int, value: bool, slope: bool):
        """`rescu(x) - relu(x)` and `rescu'(x)` from the truncated powers of the nearer band end.

        RESCU minus ReLU is even, so with `w = (beta - |x|) / h` in `[0, n / 2]`
        (distance to the nearer end of the band, in knot spacings; exact near
        both ends): `rescu(x) = relu(x) + h P_{n+1}(w)` and
        `rescu'(x) = P_n(w)` left of 0, `1 - P_n(w)` right of it, where
        `P_k(w) = sum_{j < n/2} (-1)^j C(n, j) (w - j)_+^k / k!`. Half the
        terms of the full sum, and terms of size `(n/2)^n / n!` instead of
        `n^n / n!`: the cancellation is small up to
        `_MAX_REFLECTED_POWER_ORDER`. `w` is scaled by
        `c = (1 / (n + 1)!)^(1 / (n + 1))`, which folds the factorial of the
        value into the powers at no cost and keeps every constant normal;
        where the unscaled powers are safe (see `unscaled_powers`), the
        scaling is folded into the final constants instead (one kernel less).
        """
        # The same condition as the value's unscaled cube, which also keeps
        # 0.5 / beta^2 normal.
        if order == 2 and slope and self.unscaled_powers(beta, clipped, order + 1):
            excess = self.reflected(clipped, beta, order, value, slope=False)[0] if value else None
            return excess, self.order_2_slope(clipped, beta)
        n = order
        h = 2.0 * beta / n
        c = math.factorial(n + 1) ** (-1.0 / (n + 1))
        distance = beta - self.abs(clipped)  # in [0, beta]
        # Powers of w (scaled) or of the distance (unscaled); the constants
        # are folded so that none of them is formed from a subnormal.
        if self.unscaled_powers(beta, clipped, n + 1):
            knot, w, value_scale, slope_scale = h, distance, c ** (n + 1) / h**n, 1.0 / h**n
        else:
            knot, w, value_scale, slope_scale = c, distance * (c / h), h, 1.0 / c**n
        bases = [w] + [self.relu(w - j * knot) for j in range(1, (n + 1) // 2)]
        value_sum, slope_sum = self.power_sums(bases, n, value, slope)
        excess = band_slope = None
        if value:
            excess = value_sum * value_scale
        if slope:
            # P on the left, 1 - P on the right: exact where P is tiny.
            scaled = slope_sum * (slope_scale / math.factorial(n))
            band_slope = self.where_positive(clipped, 1.0 - scaled, scaled)
        return excess, band_slope

    def order_2_slope(self, clipped, beta):
        """Order 2's slope `(x + beta)^2 / (2 beta^2) - x_+^2 / beta^2` (see `unscaled_powers`).

        The plain truncated-power sum, whose middle knot is at `x = 0`: four
        kernels on the clipped input and no select, measured 1.4x faster in
        graph mode than the reflected slope (the benchmark's backward pass is
        this slope); exact near the left knot, where only the fused square
        is nonzero.
        """
        return self.squared_difference(clipped, -beta) * (0.5 / beta**2) - self.square(
            self.relu(clipped) * (1.0 / beta)
        )

    def unscaled_powers(self, beta, x, power: int) -> bool:
        """Whether `d^power` is finite and normal for every nonzero `d` in `[0, 2 beta]`.

        `d` is a difference of two numbers of x's dtype in `[-beta, beta]`.

        It is when `(2 beta)^power <= max` and the smallest nonzero `d` (about
        `beta * eps / 2`) to the `power` is at least the smallest normal
        number. Only Python numbers are known when the graph is built.
        """
        if not isinstance(beta, float):
            return False
        info = np.finfo(self.dtype_name(x))
        low = 2.0 * float(info.tiny) ** (1.0 / power) / float(info.eps)
        return low <= beta <= float(info.max) ** (1.0 / power) / 2.0

    def fused_square(self, beta, x) -> bool:
        """Whether `(x + beta)^2` (x in `[-beta, beta]`) is finite and normal in x's dtype."""
        return self.unscaled_powers(beta, x, 2)

    def bspline_basis(self, u, order: int, orders: tuple[int, ...]):
        """Cardinal B-splines at the knot interval of each element of `u`.

        With `u = i + f` (`i` the knot interval in `[0, order - 1]`, `f` in
        `[0, 1]`), returns `i` and, for each `m` in `orders`, the list
        `[N_m(f + r) for r in range(m)]`, by the Cox-de Boor recurrence
        `N_m(t) = (t N_{m-1}(t) + (m - t) N_{m-1}(t - 1)) / (m - 1)`.
        """
        interval = self.minimum(self.relu(self.floor(u)), float(order - 1))
        f = u - interval
        one_minus_f = 1.0 - f
        # f + r and (m - r) - f, shared by every stage of the recurrence.
        f_plus = [f] + [f + r for r in range(1, max(orders))]
        g_plus = [one_minus_f] + [k + one_minus_f for k in range(1, max(orders))]
        basis = [f, one_minus_f]  # N_2
        found = {2: basis}
        for m in range(3, max(orders) + 1):
            scale = 1.0 / (m - 1)
            basis = (
                [f * basis[0] * scale]
                + [
                    (f_plus[r] * basis[r] + g_plus[m - 1 - r] * basis[r - 1]) * scale
                    for r in range(1, m - 1)
                ]
                + [one_minus_f * basis[m - 2] * scale]
            )
            found[m] = basis
        return interval, [found[m] for m in orders]

    def band_by_recurrence(self, clipped, beta, order: int, value: bool, slope: bool):
        """Band value and slope as positive sums of B-splines (see above)."""
        n = order
        h = 2.0 * beta / n
        orders = tuple(m for m, wanted in ((n + 1, slope), (n + 2, value)) if wanted)
        interval, bases = self.bspline_basis((clipped + beta) * (1.0 / h), n, orders)
        # Only r <= i <= n - 1 contribute: the weight (i + 1 - r)_+ is 0 beyond.
        weights = [self.relu(interval + (1 - r)) for r in range(1, n)]
        results = {}
        for m, basis in zip(orders, bases):
            if m == n + 2:
                terms = [(interval + 1.0) * basis[0]] + [
                    w * b for w, b in zip(weights, basis[1:n])
                ]
                results[m] = _total(terms) * h
            else:
                terms = [basis[0]] + [
                    self.minimum(w, 1.0) * b for w, b in zip(weights, basis[1:n])
                ]
                results[m] = _total(terms)
        return results.get(n + 2), results.get(n + 1)

    def is_reflected(self, order: int, x) -> bool:
        """Whether `order` uses `band_by_reflected_powers` in x's dtype."""
        return 1 < order <= _MAX_REFLECTED_POWER_ORDER[self.dtype_name(x)]

    def band(self, clipped, beta, order: int, value: bool = True, slope: bool = True):
        """`(rescu, rescu')` inside the band, on the clipped input (None if not asked)."""
        if order == 1:
            return self.smelu_band(clipped, beta, value, slope)
        if self.is_reflected(order, clipped):
            return self.band_by_reflected_powers(clipped, beta, order, value, slope)
        return self.band_by_recurrence(clipped, beta, order, value, slope)

    def rescu_value(self, x, beta, order: int):
        clipped = self.clip(x, beta)
        if self.is_reflected(order, x):
            # The excess over ReLU is 0 outside the band: no maximum needed.
            excess, _ = self.reflected(clipped, beta, order, value=True, slope=False)
            return self.relu(x) + excess
        band_value, _ = self.band(clipped, beta, order, slope=False)
        return self.maximum(x, band_value)

    def rescu_slope_and_beta_derivative(self, x, beta, order: int, with_beta: bool):
        """rescu'(x) and d rescu / d beta (None unless `with_beta`).

        d rescu / d beta follows from rescu(x; beta) = beta * rescu(x / beta; 1):
        it is (rescu(x) - x rescu'(x)) / beta, which is exactly 0 outside the
        band, so it is evaluated on the clipped input (no inf - inf at
        |x| = inf).
        """
        clipped = self.clip(x, beta)
        value, slope = self.band(clipped, beta, order, value=with_beta)
        return slope, ((value - clipped * slope) / beta if with_beta else None)

    def rescu_with_gradient(self, x, beta, order: int):
        """RESCU of `x` (any float dtype) with a lean custom gradient.

        The forward pass runs in the compute dtype and returns `x.dtype`. The
        backward pass keeps the input and recomputes the slope from it (TensorFlow
        keeps the output for order 1 in float32/64, see `_TensorFlowKernels`):
        computing the slope in the forward pass and keeping it was measured
        slower in graph mode (order 2: 1.4x), as its terms then have two
        consumers each and cannot be computed in place. Gradients flow to
        `beta` when it is a tensor.
        """
        input_dtype = self.dtype_name(x)
        dtype = self.compute_dtype(x)
        with_beta = not isinstance(beta, float)
        # A half-precision output underflows near the left knot (y ~ g^2),
        # and its square root would then lose the slope's leading digits.
        from_output = order == 1 and self.slope_from_output and input_dtype == dtype

        def forward(x, beta):
            y = self.to_dtype(self.rescu_value(self.to_dtype(x, dtype), beta, order), input_dtype)

            def grad(upstream):
                upstream = self.to_dtype(upstream, dtype)
                if from_output:
                    slope, beta_derivative = self.smelu_slope_from_output(
                        self.to_dtype(y, dtype), beta, with_beta
                    )
                else:
                    slope, beta_derivative = self.rescu_slope_and_beta_derivative(
                        self.to_dtype(x, dtype), beta, order, with_beta
                    )
                dx = self.to_dtype(upstream * slope, input_dtype)
                if not with_beta:
                    return dx
                return dx, self.sum_to_shape(upstream * beta_derivative, beta)

            return y, grad

        if not with_beta:
            return self.custom_gradient(lambda x: forward(x, beta), x)
        return self.custom_gradient(forward, x, beta)

    def in_compute_dtype(self, x, compute: Callable):
        """Runs `compute(x_in_compute_dtype, dtype)` and casts back to x.dtype."""
        dtype = self.compute_dtype(x)
        return self.to_dtype(compute(self.to_dtype(x, dtype), dtype), self.dtype_name(x))

    def poisoned(self, y, poisons: list):
        """`y` plus the poisons of unchecked parameters (see `parameter`)."""
        poisons = [p for p in poisons if p is not None]
        if not poisons:
            return y
        return y + self.to_dtype(_total(poisons), self.dtype_name(y))

    def rescu(self, x, beta, order: int):
        x = self.as_float_tensor(x, "rescu")
        beta, poison = self.parameter(beta, "beta", self.compute_dtype(x), positive=True)
        return self.poisoned(self.rescu_with_gradient(x, beta, order), [poison])

    def generalized_smelu(self, x, alpha, beta, g_minus, g_plus, t):
        def compute(x, dtype):
            (a, b, lo, hi, shift), poisons = zip(*(
                self.parameter(value, name, dtype, positive=name in ("alpha", "beta"))
                for name, value in (
                    ("alpha", alpha), ("beta", beta), ("g_minus", g_minus), ("g_plus", g_plus),
                    ("t", t),
                )
            ))
            half_width = 0.5 * (a + b)
            centre = 0.5 * (b - a)
            smooth = self.rescu_with_gradient(x - centre, half_width, order=1)
            return self.poisoned(shift + lo * (x + a) + (hi - lo) * smooth, list(poisons))

        return self.in_compute_dtype(self.as_float_tensor(x, "generalized_smelu"), compute)


class _TensorFlowKernels(_Kernels):
    """The same math over stock TensorFlow ops, tuned for graph mode without XLA.

    The value and the slope are each a handful of element-wise ops on the
    *clipped* input, and the custom gradient keeps a single tensor and no
    intermediates: the output for SmeLU (its slope follows from it in closed
    form, and the next layer keeps the output anyway), the input for higher
    orders.
    """

    slope_from_output = True

    def convert(self, x):
        if isinstance(x, tf.Variable):
            x = x.value()
        return tf.convert_to_tensor(x)

    def dtype_name(self, x) -> str:
        return x.dtype.name

    def cast(self, x, dtype: str):
        return tf.cast(x, dtype)

    def clip(self, x, beta):
        if isinstance(beta, float):
            # One fused kernel instead of Minimum + Maximum.
            return tf.raw_ops.ClipByValue(
                t=x,
                clip_value_min=tf.constant(-beta, x.dtype),
                clip_value_max=tf.constant(beta, x.dtype),
            )
        return tf.minimum(tf.maximum(x, -beta), beta)

    def relu(self, x):
        return tf.nn.relu(x)

    def square(self, x):
        return tf.square(x)

    def squared_difference(self, x, y):
        return tf.math.squared_difference(x, y)

    def maximum(self, x, y):
        return tf.maximum(x, y)

    def minimum(self, x, y):
        return tf.minimum(x, y)

    def floor(self, x):
        return tf.floor(x)

    def abs(self, x):
        return tf.abs(x)

    def where_positive(self, x, if_positive, otherwise):
        return tf.where(x > 0, if_positive, otherwise)

    def custom_gradient(self, forward: Callable, *args):
        return tf.custom_gradient(forward)(*args)

    def sum_to_shape(self, grad, param):
        """Reduces a broadcast gradient back to the (dynamic) shape of `param`."""
        param_shape = tf.shape(param)
        _, axes = tf.raw_ops.BroadcastGradientArgs(
            s0=tf.shape(grad, out_type=param_shape.dtype), s1=param_shape
        )
        return tf.reshape(tf.reduce_sum(grad, axis=axes), param_shape)

    def static_value(self, tensor) -> np.ndarray | None:
        return tf.get_static_value(tensor)

    def poison(self, tensor, limits: tuple[float, float], positive: bool):
        low, high = limits
        magnitude = tensor if positive else tf.abs(tensor)
        valid = tf.logical_and(magnitude >= low, magnitude <= high)
        return tf.where(valid, tf.constant(0.0, tensor.dtype), tf.constant(np.nan, tensor.dtype))

    def check_symbolic(self, tensor, name: str, problem: str, limits, positive: bool):
        """Asserts in the graph (automatic control dependencies keep the check),
        and poisons the output where the assertion cannot run (XLA drops it)."""
        poison = self.poison(tensor, limits, positive)
        tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(poison)),
            [f"`{name}` {problem}. Received: {name}=", tensor],
        )
        return poison

    # Order 1 (SmeLU) can recover its slope from its *output*: inside the
    # band y = beta g^2 with g = (x + beta) / (2 beta), so
    # g = sqrt(min(y, beta) / beta) everywhere, and d y / d beta = g (1 - g).
    # The output is kept alive anyway by the layer that consumes it (as
    # ReLU's gradient uses its output), so saving it instead of the input
    # costs no memory.

    def smelu_slope_from_output(self, y, beta, with_beta: bool):
        """g = sqrt(min(y, beta) / beta), with finite derivatives at y = 0."""

        def slope_and_grad(y, beta):
            slope = tf.sqrt(tf.minimum(y, beta) * (1.0 / beta))

            def grad(upstream):
                # dg/dy = 1 / (2 beta g) and dg/dbeta = -g / (2 beta) inside
                # the band, 0 outside; written with where() so that g = 0
                # gives 0 rather than inf * 0 (second derivatives only, off
                # the hot path).
                inside = tf.logical_and(y < beta, slope > 0)
                safe_slope = tf.where(inside, slope, tf.ones_like(slope))
                dy = tf.where(inside, upstream / (2.0 * beta * safe_slope), 0.0)
                if isinstance(beta, float):
                    return dy
                dbeta = tf.where(inside, -upstream * slope / (2.0 * beta), 0.0)
                return dy, self.sum_to_shape(dbeta, beta)

            return slope, grad

        if isinstance(beta, float):
            slope = tf.custom_gradient(lambda y: slope_and_grad(y, beta))(y)
        else:
            slope = tf.custom_gradient(slope_and_grad)(y, beta)
        return slope, (slope - tf.square(slope) if with_beta else None)


_KERAS_OPS = _Kernels()
_TENSORFLOW = _TensorFlowKernels()


def _kernels_for(x) -> _Kernels:
    """TensorFlow kernels for TensorFlow tensors and the TensorFlow backend."""
    if tf.is_tensor(x) or isinstance(x, tf.Variable) or keras.backend.backend() == "tensorflow":
        return _TENSORFLOW
    return _KERAS_OPS


# ---------------------------------------------------------------------------
# Public functions.
# ---------------------------------------------------------------------------


def rescu(x: TensorLike, beta: Param = 1.0, order: int = 2) -> TensorLike:
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
    That alternating sum cancels at high orders: up to order 8 it is
    evaluated from the nearer end of the band (half the terms, far smaller),
    and from order 9 on from positive sums of B-splines (Cox-de Boor, about
    `order**2` element-wise ops). Every accepted order (`1 <= order <= 32`)
    is accurate to a few ulps of the input dtype (at most `2 (order + 2)`
    ulps in float32 and float64, half an ulp in float16 and bfloat16). See
    `docs/guide/performance.md` for the cost per order.

    Examples:
        >>> tf_smelu.rescu(tf.constant([-2.0, 0.0, 2.0]), beta=1.0, order=2)
        <tf.Tensor: shape=(3,), dtype=float32, numpy=array([0.        , 0.16666667, 2.        ], dtype=float32)>

    Args:
        x: Floating-point tensor (float16, bfloat16, float32 or float64) of
            any Keras backend (or a TensorFlow tensor, NumPy array or list).
            Half-precision inputs are computed in float32.
        beta: Half-width of the smooth band, finite and `> 0`, within
            `parameter_limits(x.dtype, positive=True)` (about `[2e-31, 2e37]`
            in float32). A Python number, or a tensor/variable broadcastable
            to `x` (then it receives gradients; see the module docstring for
            how traced values are checked).
        order: Smoothness order, a Python integer with
            `1 <= order <= MAX_RESCU_ORDER` (32).

    Returns:
        A tensor of the same shape and dtype as `x`, of the backend of `x`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if `beta` is not finite, `<= 0` or outside the range of
            the compute dtype, or `order` is not an integer in `[1, 32]`.

    Reference:
        [Shamir et al., 2020](https://arxiv.org/abs/2010.09931)
    """
    order = require_rescu_order(order)
    return _kernels_for(x).rescu(x, beta, order)


def smelu(x: TensorLike, beta: Param = 1.0) -> TensorLike:
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

    Examples:
        >>> tf_smelu.smelu(tf.constant([-2.0, 0.0, 0.5, 2.0]), beta=1.0)
        <tf.Tensor: shape=(4,), dtype=float32, numpy=array([0.    , 0.25  , 0.5625, 2.    ], dtype=float32)>

    Args:
        x: Floating-point tensor (float16, bfloat16, float32 or float64) of
            any Keras backend (or a TensorFlow tensor, NumPy array or list).
        beta: Half-width of the quadratic band, finite and `> 0`, within
            `parameter_limits(x.dtype, positive=True)` (about `[2e-31, 2e37]`
            in float32; e.g. `beta=1e20` gives the finite `2.5e19` at 0). A
            Python number, or a tensor/variable broadcastable to `x` (then it
            receives gradients).

    Returns:
        A tensor of the same shape and dtype as `x`, of the backend of `x`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if `beta` is not finite, `<= 0` or outside the range of
            the compute dtype.

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
) -> TensorLike:
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

    Examples:
        >>> tf_smelu.generalized_smelu(tf.constant([-3.0, 0.0, 3.0]), g_minus=0.1)
        <tf.Tensor: shape=(3,), dtype=float32, numpy=array([-0.2  ,  0.325,  3.1  ], dtype=float32)>

    Args:
        x: Floating-point tensor (float16, bfloat16, float32 or float64) of
            any Keras backend (or a TensorFlow tensor, NumPy array or list).
        alpha: Left half-width of the band, finite and `> 0`.
        beta: Right half-width of the band, finite and `> 0`.
        g_minus: Slope left of the band, finite.
        g_plus: Slope right of the band, finite.
        t: Value at `x = -alpha`, finite.

    Every parameter may be a Python number or a tensor/variable broadcastable
    to `x`; tensors receive gradients (see the module docstring for how traced
    values are checked).

    Returns:
        A tensor of the same shape and dtype as `x`, of the backend of `x`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if a parameter is not finite or outside the range of the
            compute dtype (see `parameter_limits`), or `alpha <= 0` or
            `beta <= 0`.

    Reference:
        [Shamir et al., 2020](https://arxiv.org/abs/2010.09931), eq. 11.
    """
    return _kernels_for(x).generalized_smelu(x, alpha, beta, g_minus, g_plus, t)
