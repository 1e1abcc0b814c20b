"""Any Keras model with another hidden activation, and seeded rebuilds of it.

`convert_activations` turns a model's hidden ReLUs into the activation under
test, e.g. a trained ReLU model into a SmeLU model ready to fine-tune, which is
how a production model adopts a smooth activation. `rebuild` is the one pass
behind it: it also gives every initializer its own seed, so that the replica
tools can train fresh copies of a user's model whose embedding tables and
other weights follow two independent seeds, as `tf_smelu.models` does.

What counts as a ReLU: `activation="relu"` (or `keras.activations.relu`,
`tf.nn.relu`) in any layer that has an `activation`, a `keras.layers.ReLU()`
with default arguments, and `keras.layers.Activation("relu")`. Leaky, capped
or thresholded ReLUs and other activations stay as they are and are listed in
the `ConversionReport`.

Every hidden ReLU may get its own activation (a mapping from the path of the
layer that applies it to an activation), e.g. a SmeLU whose β follows each
layer's pre-activation spread (`tf_smelu.training.preactivation`).

The output layers, whose outputs are the model's outputs, are never changed:
their activation (linear for logits, sigmoid for probabilities) belongs to the
task, not to the hidden representation.

Supported models: Functional and Sequential models (nested ones too), and
subclassed models whose class names the `get_config()` entry holding their
hidden activation in a class attribute `hidden_activation_key` (the rankers of
`tf_smelu.models` do: `"activation"`); they are rebuilt with
`from_config`. Other subclassed models raise a `ValueError`: their layers
are created in Python code this module cannot see.

The seeding and activation helpers here are shared with `tf_smelu.models`.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

# Keras exports no name for the class of models built from inputs and outputs;
# tests/test_conversion.py fails if this private import moves.
from keras.src.models.functional import Functional

from tf_smelu.registry import Activation

ActivationLike = str | Activation | Callable | keras.layers.Layer
"""An activation: a name or spec (`"relu"`, `"smelu:0.2"`), an `Activation`,
a function, or a layer instance (cloned for every layer that uses it)."""
PerLayerActivations = Mapping[str, ActivationLike]
"""One activation per hidden layer, keyed by the layer's name or path."""
InitializerLike = str | Mapping[str, Any] | keras.initializers.Initializer
"""A Keras initializer: its name, its serialized config or an instance."""

ACTIVATION_LAST_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
"""Layers that apply their `activation` last, to their whole output.

Their ReLU can become a linear layer followed by an activation layer, which is
how an activation with parameters (a layer such as `SmeLU(beta=0.2)`) takes
its place. Other layers (e.g. recurrent ones) only take activation names.
"""

_ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
)


# --------------------------------------------------------------------------
# Seeds, initializers and activations (shared with tf_smelu.models).
# --------------------------------------------------------------------------


def derive_seed(base_seed: int | None, *path: str | int) -> int | None:
    """Deterministic per-layer seed from a base seed and the layer's role.

    Uses a process-independent hash of `path`, so the seed of one layer does
    not depend on how many other layers exist.  `None` stays `None`.

    Args:
        base_seed: The model's seed, or None for unseeded (Keras draws).
        *path: The layer's role, e.g. `("hidden", 2, "kernel")`.

    Returns:
        A seed in `[0, 2**31 - 1]`, or None when `base_seed` is None.
    """
    if base_seed is None:
        return None
    path_hash = zlib.crc32("/".join(str(part) for part in path).encode("utf-8"))
    state = np.random.SeedSequence([int(base_seed), path_hash]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)  # initializers want a non-negative int32


def seeded_initializer(
    initializer: InitializerLike, seed: int | None
) -> keras.initializers.Initializer:
    """A fresh copy of `initializer` using `seed` (if it takes a seed).

    A fresh instance per layer matters even for `seed=None`: Keras then
    draws a new seed per instance, instead of sharing one between layers.

    Args:
        initializer: The initializer to copy.
        seed: Its new seed (ignored by initializers without one).

    Returns:
        A new initializer instance.
    """
    template = keras.initializers.get(initializer)
    config = template.get_config()
    if "seed" in config:
        config["seed"] = seed
    return template.__class__.from_config(config)


def is_per_layer(activation: object) -> bool:
    """Whether `activation` holds one activation per hidden layer.

    A mapping is per layer unless it is a serialized Keras object (which has a
    `"class_name"`); layer names never take that key in practice, and the
    rankers' and `rebuild`'s keys are checked against the model's layers.

    Args:
        activation: What a model function or `convert_activations` received.

    Returns:
        True for a mapping from layer names to activations.
    """
    return isinstance(activation, Mapping) and "class_name" not in activation


def resolve_activation(
    activation: ActivationLike | Mapping[str, Any],
) -> str | Callable | keras.layers.Layer:
    """Specs with parameters (`"smelu:0.2"`, an `Activation`) become their layer.

    Plain names (`"relu"`, `"smelu"`, `"tanh"`) and callables go to Keras as
    they are: the registry makes the package's names known to Keras. A
    serialized Keras object (a `get_config` entry) is deserialized.

    Args:
        activation: One activation (not one per layer).

    Returns:
        What Keras takes as a layer's `activation`: a name, a callable or a
        layer instance.

    Raises:
        ValueError: `activation` holds one activation per layer (pick one
            with `activation_for`).
    """
    if is_per_layer(activation):
        raise ValueError(
            "Expected one activation, not one per layer. "
            f"Received: activation={dict(activation)!r}"
        )
    if isinstance(activation, Mapping):
        return keras.saving.deserialize_keras_object(dict(activation))
    if isinstance(activation, str) and ":" in activation:
        activation = Activation.parse(activation)
    if isinstance(activation, Activation):
        return activation.to_keras()
    return activation


def activation_for(
    activation: ActivationLike | PerLayerActivations, name: str
) -> str | Callable | keras.layers.Layer:
    """The activation of hidden layer `name`: its entry if one per layer, else `activation`.

    Args:
        activation: One activation for every hidden layer, or a mapping from
            layer name (or path) to activation.
        name: The hidden layer's name (or path) in that mapping.

    Returns:
        The resolved activation (see `resolve_activation`).

    Raises:
        ValueError: the mapping has no entry for `name`.
    """
    if not is_per_layer(activation):
        return resolve_activation(activation)
    try:
        value = activation[name]
    except KeyError:
        raise ValueError(
            f"The per-layer activations name no activation for hidden layer {name!r}. "
            f"Received: activation keys {sorted(activation)}"
        ) from None
    return resolve_activation(value)


def serialize_activation(activation: str | Callable | keras.layers.Layer) -> str | dict:
    """A `get_config` entry for a resolved activation: names stay names.

    Args:
        activation: A resolved activation (see `resolve_activation`).

    Returns:
        The name, or the serialized Keras object of a callable or layer.
    """
    if isinstance(activation, str):
        return activation
    return keras.saving.serialize_keras_object(activation)


def activation_layer(
    activation: ActivationLike | PerLayerActivations, name: str
) -> keras.layers.Layer:
    """A new activation layer named `name`; layer instances are cloned, never shared.

    Cloning through `from_config` gives each hidden layer its own (unbuilt)
    copy, so trainable activation parameters are per layer. Use it in a model
    function of `--model=package.module:function`, which receives the
    activation under test as a name, a layer instance, or (for a β relative
    to each layer's pre-activation spread) a mapping from the names your
    function gives its activation layers to their activations.

    Args:
        activation: A Keras activation name, a spec such as `"smelu:0.2"`, an
            `Activation`, a callable or a layer instance (the template); or
            one of these per hidden layer, keyed by layer name.
        name: The new layer's name (its key in a per-layer mapping).

    Returns:
        A new, unbuilt layer.

    Raises:
        ValueError: A per-layer mapping has no entry for `name`.
    """
    activation = activation_for(activation, name)
    if isinstance(activation, keras.layers.Layer):
        config = activation.get_config()
        config["name"] = name
        return activation.__class__.from_config(config)
    return keras.layers.Activation(activation, name=name)


# --------------------------------------------------------------------------
# What a layer's activation is.
# --------------------------------------------------------------------------


def _is_relu(activation: object) -> bool:
    """Whether `activation` (name, function, layer or config) is a plain ReLU.

    One activation per layer is a ReLU when every layer's is.
    """
    if isinstance(activation, str):
        return activation == "relu"
    if is_per_layer(activation):
        return bool(activation) and all(_is_relu(value) for value in activation.values())
    if isinstance(activation, Mapping):
        return _is_relu(keras.saving.deserialize_keras_object(dict(activation)))
    if isinstance(activation, keras.layers.ReLU):
        return (activation.max_value is None and not activation.negative_slope
                and not activation.threshold)
    if isinstance(activation, keras.layers.Activation):
        return _is_relu(activation.activation)
    return callable(activation) and getattr(activation, "__name__", None) == "relu"


def _deserialized(activation: object) -> object:
    """A `get_config` entry of an activation as the object it describes."""
    if isinstance(activation, Mapping) and not is_per_layer(activation):
        return keras.saving.deserialize_keras_object(dict(activation))
    return activation


def _activation_name(activation: object) -> str:
    if isinstance(activation, keras.layers.Activation):
        activation = activation.activation
    if isinstance(activation, keras.layers.Layer):
        return type(activation).__name__
    return getattr(activation, "__name__", str(activation))


def _is_linear(activation: object) -> bool:
    return activation is None or _activation_name(activation) == "linear"


def _is_sigmoid(activation: object) -> bool:
    return _activation_name(activation) == "sigmoid"


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    taken.add(candidate)
    return candidate


# --------------------------------------------------------------------------
# The rebuild.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What `rebuild` (and so `convert_activations`) changed in a model.

    Layers are named by their path from the model, e.g. `"tower/dense_1"`
    for a layer of a nested model `tower`.

    Attributes:
        replaced: Layers whose ReLU was replaced (a subclassed model appears
            as its own name).
        kept: Hidden activations left as they were (with an activation to
            put in: those other than ReLU): path -> activation name.
        outputs: The output layers (never converted).
        sigmoid_removed: Output layers whose sigmoid was removed so that the
            model returns logits (only with `logit_output=True`).
    """

    replaced: tuple[str, ...] = ()
    kept: Mapping[str, str] = dataclasses.field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    sigmoid_removed: tuple[str, ...] = ()


@dataclasses.dataclass
class _Rebuilder:
    """One pass over a model: new layers from configs, changed as asked."""

    activation: str | Callable | keras.layers.Layer | PerLayerActivations | None
    keep_weights: bool
    seeds: tuple[int | None, int | None] | None
    logit_output: bool
    used_keys: set[str] = dataclasses.field(default_factory=set)
    replaced: list[str] = dataclasses.field(default_factory=list)
    kept: dict[str, str] = dataclasses.field(default_factory=dict)
    outputs: list[str] = dataclasses.field(default_factory=list)
    sigmoid_removed: list[str] = dataclasses.field(default_factory=list)

    def report(self) -> ConversionReport:
        return ConversionReport(tuple(self.replaced), dict(self.kept), tuple(self.outputs),
                                tuple(self.sigmoid_removed))

    def activation_for(self, path: str) -> str | Callable | keras.layers.Layer:
        """What replaces the hidden ReLU at `path` (noting the per-layer key as used)."""
        if is_per_layer(self.activation):
            self.used_keys.add(path)
        return activation_for(self.activation, path)

    def check_unused_keys(self, model: keras.Model) -> None:
        """Per-layer activations must all find their ReLU: a typo must not pass silently."""
        if not is_per_layer(self.activation):
            return
        unused = sorted(key for key in self.activation if key not in self.used_keys)
        if unused:
            raise ValueError(
                f"The per-layer activations name layers of model {model.name!r} that apply "
                f"no hidden ReLU: {unused}. Layers with a hidden ReLU: {self.replaced}."
            )

    def model(self, model: keras.Model, prefix: str, final: bool) -> keras.Model:
        """A rebuilt `model`; `final`: its output layers are the overall outputs."""
        if isinstance(model, keras.Sequential):
            return self._sequential(model, prefix, final)
        if isinstance(model, Functional):
            return self._functional(model, prefix, final)
        return self._subclassed(model, prefix)

    def _functional(self, model: Functional, prefix: str, final: bool) -> keras.Model:
        output_ids = {id(t._keras_history.operation) for t in keras.tree.flatten(model.outputs)}
        taken = {layer.name for layer in model.layers}
        taken |= {tensor.name for tensor in keras.tree.flatten(model.inputs)}
        pairs, after = [], {}

        def clone(layer):
            if not isinstance(layer, keras.layers.Layer):
                # A Keras op in the graph (`h[:, :4]`, `keras.ops.square`): stateless,
                # with no activation or weights, so the rebuilt graph reuses it.
                return layer
            new, extra = self._layer(layer, prefix, id(layer) in output_ids, final, taken)
            pairs.append((layer, new))
            if extra is not None:
                after[id(new)] = extra
            return new

        def call(layer, *args, **kwargs):
            outputs = layer(*args, **kwargs)
            return after[id(layer)](outputs) if id(layer) in after else outputs

        rebuilt = keras.models.clone_model(model, clone_function=clone, call_function=call)
        self._copy_layer_weights(pairs)
        return rebuilt

    def _sequential(self, model: keras.Sequential, prefix: str, final: bool) -> keras.Model:
        taken = {layer.name for layer in model.layers}
        pairs, layers = [], []
        for index, layer in enumerate(model.layers):
            is_output = index == len(model.layers) - 1
            new, extra = self._layer(layer, prefix, is_output, final, taken)
            pairs.append((layer, new))
            layers += [new] if extra is None else [new, extra]
        inputs = []
        if model.built:
            inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name)
                      for t in model.inputs]
        rebuilt = keras.Sequential([*inputs, *layers], name=model.name, trainable=model.trainable)
        self._copy_layer_weights(pairs)
        return rebuilt

    def _subclassed(self, model: keras.Model, prefix: str) -> keras.Model:
        key = getattr(type(model), "hidden_activation_key", None)
        if key is None:
            raise ValueError(
                f"Cannot rebuild the subclassed model {model.name!r} "
                f"({type(model).__name__}): its layers are made by its Python code. "
                "Supported: Functional and Sequential models, and subclassed models whose "
                "class names its hidden activation's get_config() entry in "
                "`hidden_activation_key` (like tf_smelu.models.MLPRanker)."
            )
        config = model.get_config()
        name = f"{prefix}{model.name}"
        if self.activation is not None:
            if is_per_layer(self.activation) or is_per_layer(config[key]):
                config[key] = self._per_layer_entry(model, config[key], prefix)
            elif _is_relu(config[key]):
                config[key] = serialize_activation(self.activation)
                self.replaced.append(name)
            elif not _is_linear(_deserialized(config[key])):
                self.kept[name] = _activation_name(_deserialized(config[key]))
        if self.seeds is not None:
            missing = [k for k in ("embedding_seed", "tower_seed") if k not in config]
            if missing:
                raise ValueError(
                    f"Cannot seed the subclassed model {model.name!r}: its config has no "
                    f"{missing}. Received: config keys {sorted(config)}"
                )
            config["embedding_seed"], config["tower_seed"] = self.seeds
        rebuilt = type(model).from_config(config)
        if self.keep_weights:
            _copy_weights_by_path(model, rebuilt)
        return rebuilt

    def _per_layer_entry(self, model: keras.Model, current, prefix: str) -> dict:
        """The config entry giving each hidden layer of a subclassed model its activation.

        Its hidden layers are named by the model's `hidden_activation_names`;
        in the report and in per-layer keys they are `prefix` + that name.
        """
        names = getattr(model, "hidden_activation_names", None)
        if names is None:
            raise ValueError(
                f"Cannot give per-layer activations to the subclassed model {model.name!r} "
                f"({type(model).__name__}): it has no `hidden_activation_names`."
            )
        entry = {}
        for name in names:
            path = f"{prefix}{name}"
            value = current[name] if is_per_layer(current) else current
            if _is_relu(value):
                value = serialize_activation(self.activation_for(path))
                self.replaced.append(path)
            elif not _is_linear(_deserialized(value)):
                self.kept[path] = _activation_name(_deserialized(value))
            entry[name] = value
        return entry

    def _layer(self, layer, prefix: str, is_output: bool, final: bool, taken: set[str]):
        """`(new layer, activation layer to apply after it or None)`."""
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            return self.model(layer, f"{path}/", final and is_output), None
        config = layer.get_config()
        if self.seeds is not None:
            self._seed(config, path)
        # Dense(activation=...), Conv(...), and the function of an Activation layer.
        inline = getattr(layer, "activation", None) if "activation" in config else None
        if is_output and final:
            self.outputs.append(path)
            if self.logit_output and _is_sigmoid(inline):
                config["activation"] = "linear"
                self.sigmoid_removed.append(path)
            return layer.__class__.from_config(config), None
        standalone = isinstance(layer, (keras.layers.ReLU, keras.layers.Activation))
        if self.activation is not None and standalone and _is_relu(layer):
            self.replaced.append(path)
            return activation_layer(self.activation_for(path), layer.name), None
        if self.activation is not None and inline and _is_relu(inline):
            self.replaced.append(path)
            activation = self.activation_for(path)
            if not isinstance(activation, keras.layers.Layer):
                config["activation"] = activation
                return layer.__class__.from_config(config), None
            if not isinstance(layer, ACTIVATION_LAST_LAYERS):
                raise ValueError(
                    f"Cannot put an activation layer ({type(activation).__name__}) "
                    f"inside layer {path!r} ({type(layer).__name__}): only layers that apply "
                    "their activation last (Dense, EinsumDense, convolutions) can be split. "
                    "Use an activation name without parameters, e.g. 'smelu' or 'gelu'."
                )
            config["activation"] = "linear"
            suffix = type(activation).__name__.lower()
            return (layer.__class__.from_config(config),
                    activation_layer(activation, _unique_name(f"{layer.name}_{suffix}", taken)))
        if isinstance(layer, _ACTIVATION_LAYERS) and not _is_linear(layer):
            self.kept[path] = _activation_name(layer)
        elif inline and not _is_linear(inline):
            self.kept[path] = _activation_name(inline)
        return layer.__class__.from_config(config), None

    def _seed(self, config: dict, path: str) -> None:
        """Seeds every initializer (and `seed`) of a layer config in place.

        Embedding tables (`embeddings_initializer`) follow the embedding seed,
        everything else the tower seed, each with its own derived seed.
        """
        embedding_seed, tower_seed = self.seeds
        for key, value in config.items():
            if key.endswith("initializer") and value is not None:
                if key == "embeddings_initializer":
                    seed = derive_seed(embedding_seed, "embedding", path)
                else:
                    seed = derive_seed(tower_seed, path, key)
                config[key] = keras.initializers.serialize(seeded_initializer(value, seed))
            elif key == "seed":  # e.g. Dropout's masks
                config[key] = derive_seed(tower_seed, path, key)

    def _copy_layer_weights(self, pairs) -> None:
        if not self.keep_weights:
            return
        for original, new in pairs:
            if original.weights and not isinstance(original, keras.Model):
                new.set_weights(original.get_weights())


def _weights_by_path(model: keras.Model) -> dict[str, keras.Variable]:
    """Weights keyed by their path inside the model (without the model's name)."""
    return {weight.path.split("/", 1)[-1]: weight for weight in model.weights}


def _copy_weights_by_path(source: keras.Model, target: keras.Model) -> None:
    """Copies every weight of `source` into the weight of `target` at the same path.

    Weights only `target` has (e.g. the parameters of a new activation layer)
    keep their initial values.
    """
    targets = _weights_by_path(target)
    for path, weight in _weights_by_path(source).items():
        if path not in targets or tuple(targets[path].shape) != tuple(weight.shape):
            raise ValueError(
                f"Cannot carry weight {path!r} {tuple(weight.shape)} over to the rebuilt "
                f"model {target.name!r}, whose weights are {sorted(targets)}."
            )
        targets[path].assign(weight)


def rebuild(
    model: keras.Model,
    activation: ActivationLike | PerLayerActivations | None = None,
    *,
    keep_weights: bool = False,
    seeds: tuple[int | None, int | None] | None = None,
    logit_output: bool = False,
) -> tuple[keras.Model, ConversionReport]:
    """A new model with `model`'s architecture, changed as asked.

    Args:
        model: A Functional or Sequential model, or a subclassed model with
            a `hidden_activation_key` class attribute. It is left unchanged.
        activation: What replaces every hidden ReLU (see `convert_activations`),
            or one activation per hidden ReLU keyed by the path of the layer
            that applies it (the paths `ConversionReport.replaced` lists;
            inside a subclassed model, the model's path and one of its
            `hidden_activation_names`). `None` keeps every activation.
        keep_weights: Copy `model`'s weights into the new model (weights of new
            activation layers keep their initial values); otherwise the new
            model's weights are freshly initialised.
        seeds: `(embedding_seed, tower_seed)`: every initializer gets its own
            seed derived from the layer's path, from `embedding_seed` for
            embedding tables (`embeddings_initializer`) and from `tower_seed`
            for everything else (also layers' `seed`, e.g. Dropout). `None`
            keeps the initializers as they are.
        logit_output: Remove a sigmoid from the output layers, so that the
            model returns logits (the replica trainers apply the sigmoid).

    Returns:
        `(new model, ConversionReport)`.

    Raises:
        ValueError: `model` is not a Keras model, or a subclassed model
            without `hidden_activation_key`, or a ReLU inside a layer that
            cannot be split takes an activation layer, or per-layer
            activations miss a hidden ReLU or name a layer without one.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
    if activation is not None and not is_per_layer(activation):
        activation = resolve_activation(activation)
    rebuilder = _Rebuilder(activation, keep_weights, seeds, logit_output)
    rebuilt = rebuilder.model(model, "", final=True)
    rebuilder.check_unused_keys(model)
    return rebuilt, rebuilder.report()


def convert_activations(
    model: keras.Model,
    activation: ActivationLike | PerLayerActivations,
    keep_weights: bool = True,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, ConversionReport]:
    """A copy of `model` whose hidden ReLUs are `activation`.

    Replaced: `activation="relu"` in any layer (Dense, Conv, ...), standalone
    `keras.layers.ReLU()` and `keras.layers.Activation("relu")` layers. Left
    as they are: the output layers (their activation is the task's) and
    hidden activations other than ReLU (listed in the report), and Keras
    ops in a functional graph (`h[:, :4]`, `keras.ops.square(h)`). An activation
    with parameters, e.g. `"smelu:0.2"`, is a layer: a `Dense(..., "relu")`
    then becomes a linear `Dense` followed by a new layer named
    `<dense name>_smelu`. A plain name (`"gelu"`, `"smelu"` with its default
    beta) goes into the layer's `activation` instead.

    Examples:
        Switch a trained ReLU model to SmeLU and fine-tune it:

        ```python
        import keras
        import tf_smelu

        inputs = keras.Input(shape=(16,))
        hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="click")(hidden)
        relu_model = keras.Model(inputs, outputs)
        # ... train relu_model ...
        smelu_model, report = tf_smelu.convert_activations(
            relu_model, "smelu:0.2", return_report=True)
        print(report.replaced)  # ('hidden',): now a linear Dense and 'hidden_smelu'
        smelu_model.compile("adam", "binary_crossentropy")  # then fine-tune
        ```

    Args:
        model: A Functional or Sequential model (nested models are converted
            too), or a subclassed model whose class names its hidden
            activation's config entry in `hidden_activation_key` (the
            rankers of `tf_smelu.models`). It is left unchanged.
        activation: The activation under test: a spec such as `"smelu:0.2"`
            or `"rescu:0.3:2"`, an `Activation`, a Keras activation name, a
            callable or a layer instance (cloned per use); or one of these
            per hidden ReLU, keyed by the path of its layer (e.g.
            `{"hidden": "smelu:0.05", "tower/dense_1": "smelu:0.1"}`; see
            `rebuild`).
        keep_weights: Carry `model`'s weights over (the converted model starts
            where the trained one ended); `False`: fresh initial weights.
        return_report: Also return a `ConversionReport` of what was
            replaced, kept and left as output.

    Returns:
        The converted model (uncompiled), or `(model, report)`.

    Raises:
        ValueError: `model` cannot be rebuilt (a subclassed model without
            `hidden_activation_key`), or `activation` is unknown, or
            per-layer activations do not match the model's hidden ReLUs.
    """
    converted, report = rebuild(model, activation, keep_weights=keep_weights)
    if not report.replaced:
        warnings.warn(
            f"Found no hidden ReLU in model {model.name!r}: it is returned unchanged "
            f"(hidden activations kept: {dict(report.kept) or 'none'}).",
            stacklevel=2,
        )
    return (converted, report) if return_report else converted
