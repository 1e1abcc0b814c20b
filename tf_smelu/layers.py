"""Keras 3 layers over the smooth activations.

One layer per concept, each with a complete `get_config` and registered under
the `tf_smelu` package so that `.keras` files load with `safe_mode=True`.
The layers run on every Keras 3 backend (TensorFlow, JAX, PyTorch), as the
functions they call do, and a `.keras` file saved under one backend loads
under another. Parameters are checked when a layer is built from them: each
must be a finite Python number that the layer's compute dtype can compute
with (`tf_smelu.activations.parameter_limits`; orders also in range).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tf_smelu import activations
from tf_smelu.activations import TensorLike, require_parameter, require_rescu_order
from tf_smelu.common import KERAS_PACKAGE


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class SmeLU(keras.layers.Layer):
    """Smooth ReLU activation layer.

    $$
    f(x) = 0 \\text{ if } x \\le -\\beta;\\quad
    \\frac{(x + \\beta)^2}{4 \\beta} \\text{ if } |x| \\le \\beta;\\quad
    x \\text{ if } x \\ge \\beta
    $$

    Examples:
        >>> layer = tf_smelu.layers.SmeLU(beta=0.5)
        >>> layer(np.array([-1.0, 0.0, 1.0], "float32"))
        <tf.Tensor: ... numpy=array([0.   , 0.125, 1.   ], dtype=float32)>

    Args:
        beta: Half-width of the quadratic band, finite and `> 0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: if `beta` is not a finite number `> 0` within the range
            of the layer's compute dtype (`[2.0e-31, 2.1e37]` in float32).
    """

    def __init__(self, beta: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.beta = require_parameter("beta", beta, True, self.compute_dtype)
        self.supports_masking = True

    def call(self, inputs: TensorLike) -> TensorLike:
        """Applies the activation element-wise.

        Args:
            inputs: A floating-point tensor of any shape.

        Returns:
            A tensor of the shape and dtype of `inputs`.
        """
        return activations.smelu(inputs, beta=self.beta)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The output shape: the input's, as the activation is element-wise.

        Args:
            input_shape: The shape of the inputs.

        Returns:
            `input_shape`.
        """
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The layer's configuration, from which `from_config` rebuilds it.

        Returns:
            The base layer's configuration with `beta`.
        """
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class RESCU(keras.layers.Layer):
    """REctified Smooth Continuous Unit layer (SmeLU is `order=1`).

    ReLU convolved with the cardinal B-spline of order `order` on
    `[-beta, beta]`; the result is `C^order` smooth. See `tf_smelu.rescu`.

    Examples:
        >>> tf_smelu.layers.RESCU(beta=1.0, order=2)(np.array([0.0], "float32"))
        <tf.Tensor: ... numpy=array([0.16666667], dtype=float32)>

    Args:
        beta: Half-width of the smooth band, finite and `> 0`.
        order: Smoothness order, an integer with
            `1 <= order <= tf_smelu.activations.MAX_RESCU_ORDER` (32).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: if `beta` is not a finite number `> 0` within the range
            of the layer's compute dtype (see
            `tf_smelu.activations.parameter_limits`), or `order` is not an
            integer in `[1, 32]`.
    """

    def __init__(self, beta: float = 1.0, order: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.order = require_rescu_order(order)
        self.beta = require_parameter("beta", beta, True, self.compute_dtype)
        self.supports_masking = True

    def call(self, inputs: TensorLike) -> TensorLike:
        """Applies the activation element-wise.

        Args:
            inputs: A floating-point tensor of any shape.

        Returns:
            A tensor of the shape and dtype of `inputs`.
        """
        return activations.rescu(inputs, beta=self.beta, order=self.order)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The output shape: the input's, as the activation is element-wise.

        Args:
            input_shape: The shape of the inputs.

        Returns:
            `input_shape`.
        """
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The layer's configuration, from which `from_config` rebuilds it.

        Returns:
            The base layer's configuration with `beta` and `order`.
        """
        return {**super().get_config(), "beta": self.beta, "order": self.order}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MinValue(keras.constraints.Constraint):
    """Constrains weights to be `>= min_value` (keeps band widths positive).

    Args:
        min_value: The smallest value a weight keeps after each update, a
            finite number.

    Raises:
        ValueError: if `min_value` is not a finite number within float32's
            range (see `tf_smelu.activations.parameter_limits`).
    """

    def __init__(self, min_value: float = 1e-3):
        self.min_value = require_parameter("min_value", min_value, positive=False)

    def __call__(self, w):
        return keras.ops.maximum(w, keras.ops.cast(self.min_value, w.dtype))

    def get_config(self) -> dict[str, Any]:
        """The constraint's configuration, from which Keras rebuilds it.

        Returns:
            `{"min_value": min_value}`.
        """
        return {"min_value": self.min_value}


_GENERALIZED_PARAMETERS = ("alpha", "beta", "g_minus", "g_plus", "t")
_BAND_WIDTHS = ("alpha", "beta")


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class GeneralizedSmeLU(keras.layers.Layer):
    """Generalized SmeLU with learnable parameters (paper eq. 11).

    Quadratic band `[-alpha, beta]`, slope `g_minus` on the left, `g_plus` on
    the right and value `t` at `x = -alpha`; see `tf_smelu.generalized_smelu`.
    Every parameter is a weight. As in Keras' `PReLU`, there is one value per
    element of the input shape (without the batch axis) unless `shared_axes`
    names axes along which to share it: for `(batch, features)` inputs the
    default is one value per feature; `shared_axes=[1]` gives one scalar per
    layer; for images `(batch, h, w, c)` use `shared_axes=[1, 2]` for one value
    per channel.

    The weights are checked at every call, as the function checks tensor
    parameters: a weight that became non-finite (or a band width that is not
    `> 0`) raises `ValueError` in eager calls (TensorFlow eager, PyTorch) and
    `tf.errors.InvalidArgumentError` in TensorFlow graphs (`model.fit`), and
    turns the output into NaN where no check can run (the JAX backend's
    compiled steps, XLA). Training usually meets such weights after a
    diverging step; `keras.callbacks.TerminateOnNaN` stops it there.

    Examples:
        >>> layer = tf_smelu.layers.GeneralizedSmeLU(g_minus=0.1, shared_axes=[1])
        >>> layer(np.array([[-3.0, 0.0, 3.0]], "float32"))
        <tf.Tensor: ... numpy=array([[-0.2  ,  0.325,  3.1  ]], dtype=float32)>

    Args:
        alpha: Initial left half-width of the band, finite and `> 0`.
        beta: Initial right half-width of the band, finite and `> 0`.
        g_minus: Initial slope left of the band, finite.
        g_plus: Initial slope right of the band, finite.
        t: Initial value at `x = -alpha`, finite.
        trainable_parameters: Names of the parameters to learn (subset of
            `("alpha", "beta", "g_minus", "g_plus", "t")`); the others are
            fixed weights. Default: all of them.
        shared_axes: Axes along which parameters are shared (as in `PReLU`).
        min_width: Lower bound enforced on `alpha` and `beta` after each
            update (a `MinValue` constraint), so that the band never
            collapses, `> 0`.
        regularizer: Optional regularizer applied to every parameter.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: if a parameter is not a finite number within the range
            of the layer's compute dtype (see
            `tf_smelu.activations.parameter_limits`), a band width is not
            `> 0` or below `min_width`, or `trainable_parameters` names an
            unknown parameter.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        g_minus: float = 0.0,
        g_plus: float = 1.0,
        t: float = 0.0,
        trainable_parameters: Sequence[str] = _GENERALIZED_PARAMETERS,
        shared_axes: int | Sequence[int] | None = None,
        min_width: float = 1e-3,
        regularizer: str | dict | keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.min_width = require_parameter("min_width", min_width, True, self.compute_dtype)
        self.initial_values = {
            name: require_parameter(name, value, name in _BAND_WIDTHS, self.compute_dtype)
            for name, value in zip(_GENERALIZED_PARAMETERS, (alpha, beta, g_minus, g_plus, t))
        }
        for name in _BAND_WIDTHS:
            if self.initial_values[name] < self.min_width:
                raise ValueError(
                    f"`{name}` must be >= min_width={self.min_width}. "
                    f"Received: {name}={self.initial_values[name]}"
                )
        unknown = set(trainable_parameters) - set(_GENERALIZED_PARAMETERS)
        if isinstance(trainable_parameters, str) or unknown:
            raise ValueError(
                "`trainable_parameters` must be a list of names among "
                f"{list(_GENERALIZED_PARAMETERS)}. "
                f"Received: trainable_parameters={trainable_parameters!r}"
            )
        self.trainable_parameters = tuple(
            name for name in _GENERALIZED_PARAMETERS if name in trainable_parameters
        )
        if shared_axes is None:
            self.shared_axes = None
        elif isinstance(shared_axes, int):
            self.shared_axes = [shared_axes]
        else:
            self.shared_axes = list(shared_axes)
        self.regularizer = keras.regularizers.get(regularizer)
        self.supports_masking = True

    def build(self, input_shape: tuple) -> None:
        """Creates one weight per parameter, shaped by the non-shared input axes.

        Args:
            input_shape: The shape of the inputs, batch axis first.

        Raises:
            ValueError: if `shared_axes` names an axis outside
                `[1, len(input_shape) - 1]`, or a non-shared axis has an
                unknown size.
        """
        param_shape = list(input_shape[1:])
        for axis in self.shared_axes or ():
            if not 1 <= axis < len(input_shape):
                raise ValueError(
                    f"`shared_axes` must be axes of the input between 1 and "
                    f"{len(input_shape) - 1}. Received: shared_axes="
                    f"{self.shared_axes} for input_shape={input_shape}"
                )
            param_shape[axis - 1] = 1
        if any(dim is None for dim in param_shape):
            raise ValueError(
                "GeneralizedSmeLU needs known sizes on the non-shared axes; "
                f"share the unknown ones. Received: input_shape={input_shape}"
            )
        for name in _GENERALIZED_PARAMETERS:
            weight = self.add_weight(
                shape=param_shape,
                name=name,
                initializer=keras.initializers.Constant(self.initial_values[name]),
                regularizer=self.regularizer,
                constraint=MinValue(self.min_width) if name in _BAND_WIDTHS else None,
                trainable=name in self.trainable_parameters,
            )
            setattr(self, name, weight)

    def call(self, inputs: TensorLike) -> TensorLike:
        """Applies the activation with the layer's current weights.

        Args:
            inputs: A floating-point tensor of the shape the layer was built for.

        Returns:
            A tensor of the shape and dtype of `inputs`.
        """
        return activations.generalized_smelu(
            inputs,
            alpha=self.alpha,
            beta=self.beta,
            g_minus=self.g_minus,
            g_plus=self.g_plus,
            t=self.t,
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The output shape: the input's, as the activation is element-wise.

        Args:
            input_shape: The shape of the inputs.

        Returns:
            `input_shape`.
        """
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The layer's configuration, from which `from_config` rebuilds it.

        Returns:
            The base layer's configuration with the initial parameter values
            (not the trained ones: those are the weights),
            `trainable_parameters`, `shared_axes`, `min_width` and the
            serialized `regularizer`.
        """
        return {
            **super().get_config(),
            **self.initial_values,
            "trainable_parameters": list(self.trainable_parameters),
            "shared_axes": self.shared_axes,
            "min_width": self.min_width,
            "regularizer": keras.regularizers.serialize(self.regularizer),
        }
