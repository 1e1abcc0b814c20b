"""The table of activations, their text specs, and their names in Keras.

`ACTIVATIONS` is the one list of activation names in the package: every
command-line help text, flag validator, model, experiment row and worker
derives its names from it. An entry says what the name builds (a Keras
built-in, or a function and layer of this package) and which parameters its
text spec takes, so adding an activation is one `register_activation` call.

An `Activation` is one parsed spec, e.g. `Activation.parse("smelu:0.2")` or
`Activation.parse("rescu:0.3:2")`: the name, then the entry's parameters in
order, separated by colons.

After `import tf_smelu`, `activation="smelu"` (and `"generalized_smelu"`,
`"rescu"`) works in every Keras layer that takes an activation, and
`keras.activations.get/serialize/deserialize` round-trip the functions.
Keras 3's `activations.get(name)` looks only in a private dict
(`keras.src.activations.ALL_OBJECTS_DICT`), so the names go there, and the
functions are registered as serializable so that saved models find them again
(`tests/test_registry.py` guards the private API). tf-keras looks names up in
its global custom objects.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import keras

from tf_smelu import activations, layers
from tf_smelu.common import KERAS_PACKAGE

PARAMETER_DEFAULTS = {"beta": 1.0, "order": 2}
"""The parameters a text spec can carry, with their defaults."""

_PARAMETER_SYMBOLS = {"beta": "β", "order": "n"}


@dataclasses.dataclass(frozen=True)
class ActivationEntry:
    """One activation name and what it builds.

    Attributes:
        name: The name in specs, flags and Keras (`activation="name"`).
        function: This package's function, registered with Keras under
            `name`; `None` for a Keras built-in such as `"relu"`.
        build_layer: Builds the hidden layers' activation from a parsed spec
            (a fresh layer per call); `None`: the Keras name itself is used.
        parameters: Names of the spec's parameters, in spec order (keys of
            `PARAMETER_DEFAULTS`), e.g. `("beta", "order")` for
            `"rescu:0.3:2"`.

    Raises:
        ValueError: if `parameters` names one not in `PARAMETER_DEFAULTS`, or
            parameters are given without `build_layer`.
    """

    name: str
    function: Callable | None = None
    build_layer: Callable[[Activation], keras.layers.Layer] | None = None
    parameters: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [p for p in self.parameters if p not in PARAMETER_DEFAULTS]
        if unknown:
            raise ValueError(
                f"Unknown activation parameter(s) {unknown}; expected some of "
                f"{tuple(PARAMETER_DEFAULTS)}. Received: parameters={self.parameters!r}"
            )
        if self.parameters and self.build_layer is None:
            raise ValueError(
                f"Activation {self.name!r} takes parameters, so it needs `build_layer`."
            )

    @property
    def spec_syntax(self) -> str:
        """E.g. `"rescu[:beta[:order]]"`."""
        return self.name + "".join(f"[:{p}" for p in self.parameters) + "]" * len(
            self.parameters
        )


ACTIVATIONS: dict[str, ActivationEntry] = {}
"""Name -> entry, in the order shown in help texts and default reports."""


def register_activation(entry: ActivationEntry) -> ActivationEntry:
    """Adds `entry` to the table and, if it has a function, to Keras.

    An entry of the same name is replaced.

    Args:
        entry: The activation to make known to specs and flags.

    Returns:
        `entry`.

    Examples:
        >>> _ = registry.register_activation(registry.ActivationEntry("tanh"))
        >>> registry.Activation.parse("tanh").to_keras()
        'tanh'
    """
    ACTIVATIONS[entry.name] = entry
    if entry.function is not None:
        _register_function_with_keras(entry.name, entry.function)
    return entry


def unregister_activation(name: str) -> None:
    """Removes `name` from the table (Keras' own registry is left as it is).

    Args:
        name: An activation name; an unknown one is ignored.
    """
    ACTIVATIONS.pop(name, None)


def activation_names() -> tuple[str, ...]:
    """The registered activation names, in table order.

    Returns:
        The keys of `ACTIVATIONS`.
    """
    return tuple(ACTIVATIONS)


def activation_help() -> str:
    """One line listing every spec, e.g. for a flag's help text.

    Returns:
        The plain names, the specs with parameters and their defaults.
    """
    with_parameters = [e.spec_syntax for e in ACTIVATIONS.values() if e.parameters]
    plain = [e.name for e in ACTIVATIONS.values() if not e.parameters]
    defaults = ", ".join(f"{k}={v}" for k, v in PARAMETER_DEFAULTS.items())
    return (
        f"{', '.join(plain)}; with parameters: {', '.join(with_parameters)} "
        f"(defaults {defaults})"
    )


@dataclasses.dataclass(frozen=True)
class Activation:
    """A parsed activation spec: a name of `ACTIVATIONS` and its parameters.

    Parameters the entry does not take must be `None`; those it takes default
    to `PARAMETER_DEFAULTS`. Parse one with `Activation.parse("smelu:0.1")`.

    Attributes:
        name: Key of `ACTIVATIONS`.
        beta: Half-width of the smooth band (`> 0`), for entries taking it.
        order: RESCU smoothness order (`>= 1`), for entries taking it.

    Raises:
        ValueError: if `name` is not registered, a parameter is given that
            the entry does not take, `order` is not an integer in `[1, 32]`,
            or `beta` is not a finite number `> 0` that Keras' float type
            computes with.
    """

    name: str
    beta: float | None = None
    order: int | None = None

    def __post_init__(self):
        entry = ACTIVATIONS.get(self.name)
        if entry is None:
            raise ValueError(
                f"Unknown activation {self.name!r}; expected one of {activation_names()}."
            )
        for parameter in PARAMETER_DEFAULTS:
            value = getattr(self, parameter)
            if parameter not in entry.parameters:
                if value is not None:
                    raise ValueError(
                        f"{self.name} takes no {parameter}. Received: {self.name}:{value}"
                    )
            elif value is None:
                object.__setattr__(self, parameter, PARAMETER_DEFAULTS[parameter])
        if self.order is not None:
            object.__setattr__(self, "order", activations.require_rescu_order(self.order))
        if self.beta is not None:
            beta = float(self.beta)
            # Checked against Keras' float type, which models train in, so
            # that a main job stops here rather than at its first NaN.
            problem = activations.parameter_problem(beta, True, keras.config.floatx())
            if problem is not None:
                raise ValueError(f"beta {problem}. Received: {self}")
            object.__setattr__(self, "beta", beta)

    @property
    def entry(self) -> ActivationEntry:
        """The registered entry of `name`."""
        return ACTIVATIONS[self.name]

    @classmethod
    def parse(cls, text: str) -> Activation:
        """`"relu"`, `"smelu:0.1"` (beta) or `"rescu:0.2:3"` (beta, order).

        Args:
            text: A registered name, then its parameters in order, separated
                by `:` (omitted trailing ones take `PARAMETER_DEFAULTS`).

        Returns:
            The checked activation.

        Raises:
            ValueError: if `text` is not a string, names no registered
                activation, has too many or unparsable parameters, or a
                parameter is out of range.
        """
        if not isinstance(text, str):
            raise ValueError(f"An activation spec must be a string. Received: {text!r}")
        name, *values = text.strip().split(":")
        entry = ACTIVATIONS.get(name)
        if entry is None:
            raise ValueError(
                f"Unknown activation {name!r} in {text!r}; expected one of "
                f"{activation_names()}."
            )
        if len(values) > len(entry.parameters):
            raise ValueError(
                f"Cannot parse activation {text!r}: expected {entry.spec_syntax}."
            )
        parameters = {}
        for parameter, value in zip(entry.parameters, values):
            try:
                parameters[parameter] = type(PARAMETER_DEFAULTS[parameter])(value)
            except ValueError:
                raise ValueError(
                    f"Cannot parse activation {text!r}: {parameter} must be a "
                    f"{type(PARAMETER_DEFAULTS[parameter]).__name__}, got {value!r}."
                ) from None
        return cls(name, **parameters)

    def __str__(self) -> str:
        """The spec text, which parses back to an equal `Activation`."""
        values = [getattr(self, p) for p in self.entry.parameters]
        return ":".join([self.name, *(f"{v!r}" if isinstance(v, float) else str(v)
                                      for v in values)])

    @property
    def label(self) -> str:
        """Human-readable, e.g. `smelu(β=0.2)` or `rescu(β=0.2, n=2)`."""
        parameters = self.entry.parameters
        if not parameters:
            return self.name
        text = ", ".join(f"{_PARAMETER_SYMBOLS[p]}={getattr(self, p):g}" for p in parameters)
        return f"{self.name}({text})"

    def to_keras(self) -> str | keras.layers.Layer:
        """A Keras activation name or a new layer instance.

        Returns:
            The name, for activations without parameters (registered with
            Keras); else a new layer built from the parameters (e.g.
            `SmeLU(beta=0.2)` for `"smelu:0.2"`).
        """
        build_layer = self.entry.build_layer
        return self.name if build_layer is None else build_layer(self)


def _register_function_with_keras(name: str, function: Callable) -> None:
    from keras.src import activations as keras_activations

    keras.saving.register_keras_serializable(package=KERAS_PACKAGE, name=name)(function)
    keras_activations.ALL_OBJECTS_DICT[name] = function


def register_keras() -> None:
    """Makes the package's activation names known to Keras 3 (idempotent)."""
    for entry in ACTIVATIONS.values():
        if entry.function is not None:
            _register_function_with_keras(entry.name, entry.function)


def register_tf_keras() -> bool:
    """Makes the package's activation names known to tf-keras, if installed.

    Returns:
        True when tf-keras was found and the names were registered.
    """
    if importlib.util.find_spec("tf_keras") is None:
        return False
    import tf_keras

    tf_keras.utils.get_custom_objects().update(
        {e.name: e.function for e in ACTIVATIONS.values() if e.function is not None}
    )
    return True


def register_all() -> None:
    """Registers the activation names with every Keras that is installed."""
    register_keras()
    register_tf_keras()


for _entry in (
    ActivationEntry("relu"),
    ActivationEntry("gelu"),
    ActivationEntry("swish"),
    ActivationEntry("softplus"),
    ActivationEntry("linear"),
    ActivationEntry(
        "smelu", activations.smelu, lambda spec: layers.SmeLU(beta=spec.beta), ("beta",)
    ),
    ActivationEntry(
        "rescu",
        activations.rescu,
        lambda spec: layers.RESCU(beta=spec.beta, order=spec.order),
        ("beta", "order"),
    ),
    # A spec's single beta sets both half-widths: the symmetric band of SmeLU,
    # whose other parameters then train from SmeLU's values.
    ActivationEntry(
        "generalized_smelu",
        activations.generalized_smelu,
        lambda spec: layers.GeneralizedSmeLU(alpha=spec.beta, beta=spec.beta),
        ("beta",),
    ),
):
    ACTIVATIONS[_entry.name] = _entry
del _entry
