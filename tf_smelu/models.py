"""CTR ranking models (Keras 3) with independently seeded parts.

This module stays whole (about 500 lines): both models share the
serialization helpers at its top and the plumbing of `_CTRRanker`; the
seeding and activation helpers live in `tf_smelu.conversion`, which rebuilds
any Keras model the same way.

Two models are provided, both built from a
`tf_smelu.data.FeatureSpec`:

* `DCNRanker` (`"dcn"`): DLRM/DCN-v2 style.  One embedding per
  categorical field, the dense features through a small bottom MLP, a stack of
  `CrossLayer` s on the concatenation, then a top MLP tower and a
  single logit.
* `MLPRanker` (`"mlp"`): embeddings concatenated with the dense
  features, then an MLP tower and a single logit.

Inputs are the features dicts of `tf_smelu.data.make_dataset`
(int64 ids of shape `[batch]` or `[batch, 1]` per field, float32
`"dense"` of shape `[batch, num_dense]`; extra keys are ignored).  The
output is the **click logit** of shape `[batch, 1]`, not a probability: train
with `keras.losses.BinaryCrossentropy(from_logits=True)` and apply a sigmoid
for probabilities.

Randomness of the initial weights comes from two independent seeds:
`embedding_seed` for the embedding tables and `tower_seed` for every other
weight (bottom MLP, cross layers, top MLP, logit layer).  Each layer gets its
own seed derived from the base seed and the layer's role (e.g. the embedding of
field `"user_id"`), so the same seeds give bit-identical initial weights,
and changing `tower_seed` leaves the embeddings untouched (and vice versa).
`None` draws fresh seeds from Keras' global generator (see
`keras.utils.set_random_seed`).

All weights are created in the constructor, so `model.get_weights()` works
before the first call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
from keras import ops

from tf_smelu.activations import TensorLike
from tf_smelu.common import KERAS_PACKAGE
from tf_smelu.conversion import (
    ActivationLike,
    InitializerLike,
    PerLayerActivations,
    activation_for,
    activation_layer,
    derive_seed,
    is_per_layer,
    resolve_activation,
    seeded_initializer,
    serialize_activation,
)
from tf_smelu.data.features import DENSE_FEATURE_NAME, FeatureSpec
from tf_smelu.validation import is_int, require_non_negative_int, require_positive_int

# --------------------------------------------------------------------------
# Serialization helpers.
# --------------------------------------------------------------------------


def _as_feature_spec(feature_spec: FeatureSpec | Mapping) -> FeatureSpec:
    if isinstance(feature_spec, FeatureSpec):
        return feature_spec
    if isinstance(feature_spec, Mapping):
        return FeatureSpec.from_config(feature_spec)
    raise ValueError(
        "`feature_spec` must be a FeatureSpec or its config dict. "
        f"Received: feature_spec={feature_spec!r}"
    )


def _as_units(name: str, units: Sequence[int], allow_empty: bool) -> tuple[int, ...]:
    units = tuple(units)
    if (not units and not allow_empty) or not all(
        is_int(unit) and unit > 0 for unit in units
    ):
        raise ValueError(
            f"`{name}` must be a sequence of positive integers"
            f"{'' if allow_empty else ' (at least one)'}. Received: {name}={units!r}"
        )
    return tuple(int(unit) for unit in units)


def _as_optional_seed(name: str, seed: int | None) -> int | None:
    return None if seed is None else require_non_negative_int(name, seed)


# --------------------------------------------------------------------------
# Layers.
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class CrossLayer(keras.layers.Layer):
    """DCN-v2 cross layer: `x_next = x0 * (x @ W + b) + x`.

    Call as `layer(x0, x)` where `x0` is the input of the cross stack and
    `x` the output of the previous cross layer (`x0` for the first one);
    both have shape `[batch, dim]` and `W` is a full `dim x dim` matrix.

    Args:
        kernel_initializer: Initializer of `W`.
        bias_initializer: Initializer of `b`.
        **kwargs: Base layer arguments (`name`, `dtype`...).
    """

    def __init__(
        self,
        kernel_initializer: InitializerLike = "glorot_uniform",
        bias_initializer: InitializerLike = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, x0_shape: tuple, x_shape: tuple) -> None:
        """Creates `W` (`dim x dim`) and `b` (`dim`).

        Args:
            x0_shape: Shape of the cross stack's input, `[batch, dim]`.
            x_shape: Shape of the previous cross layer's output, `[batch, dim]`.

        Raises:
            ValueError: if the two last dimensions differ.
        """
        dim = x_shape[-1]
        if x0_shape[-1] != dim:
            raise ValueError(
                "`x0` and `x` must have the same last dimension. "
                f"Received: x0_shape={x0_shape}, x_shape={x_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, dim), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(dim,), initializer=self.bias_initializer
        )

    def call(self, x0: TensorLike, x: TensorLike) -> TensorLike:
        """One cross step.

        Args:
            x0: The cross stack's input, `[batch, dim]`.
            x: The previous cross layer's output (`x0` for the first).

        Returns:
            `x0 * (x @ W + b) + x`, shaped as `x`.
        """
        return x0 * (ops.matmul(x, self.kernel) + self.bias) + x

    def compute_output_shape(self, x0_shape: tuple, x_shape: tuple) -> tuple:
        """The output shape: that of `x`.

        Args:
            x0_shape: Shape of the cross stack's input.
            x_shape: Shape of the previous cross layer's output.

        Returns:
            `x_shape`.
        """
        return x_shape

    def get_config(self) -> dict:
        """The layer's configuration, from which `from_config` rebuilds it.

        Returns:
            The base layer's configuration with the serialized initializers.
        """
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


# --------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------


class _CTRRanker(keras.Model):
    """Shared plumbing: embeddings, seeded MLP stacks, activation, config.

    Subclasses create their tower layers in `__init__` (via
    `_mlp_layers` / `_tower_dense`) and implement
    `_build_tower` and `_tower`; this base then builds every weight
    in the constructor.
    """

    hidden_activation_key: ClassVar[str] = "activation"
    """The config entry `tf_smelu.convert_activations` replaces."""

    def __init__(
        self,
        feature_spec: FeatureSpec | Mapping,
        activation: ActivationLike | PerLayerActivations = "relu",
        embedding_dim: int = 8,
        embedding_initializer: InitializerLike = "uniform",
        kernel_initializer: InitializerLike = "glorot_uniform",
        embedding_seed: int | None = None,
        tower_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.feature_spec = _as_feature_spec(feature_spec)
        # Bypasses Keras' attribute tracking: templates are only ever cloned,
        # and tracking them would add unbuilt, unused sublayers. A per-layer
        # mapping is read one hidden layer at a time, as the layers are made.
        object.__setattr__(
            self,
            "_activation_argument",
            activation if is_per_layer(activation) else resolve_activation(activation),
        )
        # Hidden activation layer name -> its template, filled by `_mlp_layers`.
        object.__setattr__(self, "_hidden_activations", {})
        self.embedding_dim = require_positive_int("embedding_dim", embedding_dim)
        self.embedding_initializer = keras.initializers.get(embedding_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.embedding_seed = _as_optional_seed("embedding_seed", embedding_seed)
        self.tower_seed = _as_optional_seed("tower_seed", tower_seed)
        # A list (not a dict) keeps weight order identical to the spec order.
        self.embedding_layers = [
            keras.layers.Embedding(
                feature.vocab_size,
                self.embedding_dim,
                embeddings_initializer=seeded_initializer(
                    self.embedding_initializer,
                    derive_seed(self.embedding_seed, "embedding", feature.name),
                ),
                name=f"embedding_{feature.name}",
            )
            for feature in self.feature_spec.categorical
        ]

    # -- helpers for subclasses ----------------------------------------------

    def _tower_dense(self, units: int, role: str) -> keras.layers.Dense:
        """A linear Dense layer seeded from `tower_seed` and its role."""
        return keras.layers.Dense(
            units,
            kernel_initializer=seeded_initializer(
                self.kernel_initializer, derive_seed(self.tower_seed, role)
            ),
            name=role,
        )

    def _mlp_layers(
        self, prefix: str, units: Sequence[int]
    ) -> list[keras.layers.Layer]:
        """Hidden layers `[dense_0, activation_0, dense_1, ...]` of an MLP.

        A flat list (rather than nested pairs) so that Keras' saving finds
        every sublayer; each hidden layer gets its own activation layer, named
        `{prefix}_activation_{index}` (its key among per-layer activations).
        """
        layers = []
        for index, width in enumerate(units):
            layers.append(self._tower_dense(width, f"{prefix}_dense_{index}"))
            name = f"{prefix}_activation_{index}"
            template = activation_for(self._activation_argument, name)
            self._hidden_activations[name] = template
            layers.append(activation_layer(template, name))
        return layers

    @staticmethod
    def _build_sequential(layers: Sequence[keras.layers.Layer], width: int) -> int:
        """Builds layers applied in turn to `width` features; returns out width."""
        for layer in layers:
            layer.build((None, width))
            width = getattr(layer, "units", width)  # only Dense layers change width
        return width

    @staticmethod
    def _apply_sequential(layers: Sequence[keras.layers.Layer], x):
        for layer in layers:
            x = layer(x)
        return x

    def _finish_init(self) -> None:
        """Checks per-layer activations; creates all weights now, before any call."""
        if is_per_layer(self._activation_argument):
            unknown = sorted(set(self._activation_argument) - set(self._hidden_activations))
            if unknown:
                raise ValueError(
                    f"`activation` names layers this model does not have: {unknown}. Its "
                    f"hidden activation layers: {list(self._hidden_activations)}. "
                    f"Received: activation={dict(self._activation_argument)!r}"
                )
        self.build(self._input_shapes())

    @property
    def hidden_activation_names(self) -> tuple[str, ...]:
        """Names of the hidden activation layers, in the order the data meets them.

        They are the keys of per-layer activations (the `activation`
        argument as a mapping), e.g. `("hidden_activation_0", ...)`.
        """
        return tuple(self._hidden_activations)

    def _input_shapes(self) -> dict[str, tuple]:
        shapes = {name: (None,) for name in self.feature_spec.categorical_names}
        shapes[DENSE_FEATURE_NAME] = (None, self.feature_spec.num_dense)
        return shapes

    def _embedded_width(self) -> int:
        return len(self.feature_spec.categorical) * self.embedding_dim

    def _embed(self, features: Mapping) -> list:
        # Ids may arrive as [batch] or [batch, 1]; both mean one id per row.
        return [
            layer(ops.reshape(features[name], (-1,)))
            for name, layer in zip(
                self.feature_spec.categorical_names, self.embedding_layers, strict=True
            )
        ]

    def _dense_input(self, features: Mapping):
        return ops.cast(features[DENSE_FEATURE_NAME], self.compute_dtype)

    # -- Keras API ----------------------------------------------------------

    def build(self, input_shape=None) -> None:
        # Input shapes are fully determined by the feature spec.
        for layer in self.embedding_layers:
            layer.build()
        self._build_tower()

    def _build_tower(self) -> None:
        raise NotImplementedError

    def call(self, features: Mapping, training: bool | None = None):
        """Click logits of shape `[batch, 1]` for a features dict."""
        return self._tower(self._embed(features), self._dense_input(features))

    def _tower(self, embedded: list, dense):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "feature_spec": self.feature_spec.get_config(),
            "activation": (
                {name: serialize_activation(template)
                 for name, template in self._hidden_activations.items()}
                if is_per_layer(self._activation_argument)
                else serialize_activation(self._activation_argument)
            ),
            "embedding_dim": self.embedding_dim,
            "embedding_initializer": keras.initializers.serialize(
                self.embedding_initializer
            ),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "embedding_seed": self.embedding_seed,
            "tower_seed": self.tower_seed,
        }

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class DCNRanker(_CTRRanker):
    """DLRM/DCN-v2 style ranking model producing click logits `[batch, 1]`.

    ``embeddings ++ bottom_mlp(dense) -> num_cross_layers x CrossLayer ->
    top_mlp -> Dense(1)``.

    Args:
        feature_spec: Input fields, vocabulary sizes and dense width
            (a `FeatureSpec` or its config dict).
        activation: Hidden activation of both MLPs: a Keras activation name
            (`"relu"`, `"gelu"`, `"swish"`, `"softplus"`, and after
            `import tf_smelu` also `"smelu"`, `"generalized_smelu"`,
            `"rescu"`), a spec such as `"smelu:0.2"`, a callable, or a layer
            instance (cloned per layer). Or one of these per hidden layer: a
            mapping from every name of `hidden_activation_names`
            (`"bottom_activation_0"`, ..., `"top_activation_0"`, ...) to
            its activation.
        embedding_dim: Width of every embedding.
        bottom_units: Hidden widths of the dense-feature MLP.
        num_cross_layers: Number of stacked cross layers (may be 0).
        top_units: Hidden widths of the tower after the cross stack.
        embedding_initializer: Initializer of the embedding tables.
        kernel_initializer: Initializer of all other kernels (biases start
            at zero).
        embedding_seed: Seed of the embedding tables.
        tower_seed: Seed of every non-embedding weight.
        **kwargs: Base model arguments (`name`, `dtype`...).

    Raises:
        ValueError: if a width or count is not a positive (for counts,
            non-negative) integer, `activation` maps names that are not
            hidden activation layers of the model (or misses one), or the
            feature spec is invalid.
    """

    def __init__(
        self,
        feature_spec: FeatureSpec | Mapping,
        activation: ActivationLike | PerLayerActivations = "relu",
        embedding_dim: int = 8,
        bottom_units: Sequence[int] = (32, 16),
        num_cross_layers: int = 2,
        top_units: Sequence[int] = (256, 128, 64),
        embedding_initializer: InitializerLike = "uniform",
        kernel_initializer: InitializerLike = "glorot_uniform",
        embedding_seed: int | None = None,
        tower_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature_spec,
            activation=activation,
            embedding_dim=embedding_dim,
            embedding_initializer=embedding_initializer,
            kernel_initializer=kernel_initializer,
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **kwargs,
        )
        self.bottom_units = _as_units("bottom_units", bottom_units, allow_empty=True)
        self.top_units = _as_units("top_units", top_units, allow_empty=True)
        self.num_cross_layers = require_non_negative_int(
            "num_cross_layers", num_cross_layers
        )
        self.bottom_layers = self._mlp_layers("bottom", self.bottom_units)
        self.cross_layers = [
            CrossLayer(
                kernel_initializer=seeded_initializer(
                    self.kernel_initializer,
                    derive_seed(self.tower_seed, f"cross_{index}"),
                ),
                name=f"cross_{index}",
            )
            for index in range(self.num_cross_layers)
        ]
        self.top_layers = self._mlp_layers("top", self.top_units)
        self.logit_layer = self._tower_dense(1, "logit")
        self._finish_init()

    def _build_tower(self) -> None:
        bottom_width = self._build_sequential(
            self.bottom_layers, self.feature_spec.num_dense
        )
        cross_width = self._embedded_width() + bottom_width
        for layer in self.cross_layers:
            layer.build((None, cross_width), (None, cross_width))
        top_width = self._build_sequential(self.top_layers, cross_width)
        self.logit_layer.build((None, top_width))

    def _tower(self, embedded: list, dense):
        x0 = ops.concatenate(
            [*embedded, self._apply_sequential(self.bottom_layers, dense)], axis=-1
        )
        x = x0
        for layer in self.cross_layers:
            x = layer(x0, x)
        return self.logit_layer(self._apply_sequential(self.top_layers, x))

    def get_config(self) -> dict:
        """The model's configuration, from which `from_config` rebuilds it.

        Returns:
            The common ranker fields (feature spec, activation, embedding
            width, initializers, seeds) with `bottom_units`,
            `num_cross_layers` and `top_units`.
        """
        return {
            **super().get_config(),
            "bottom_units": list(self.bottom_units),
            "num_cross_layers": self.num_cross_layers,
            "top_units": list(self.top_units),
        }


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MLPRanker(_CTRRanker):
    """Deep MLP CTR model producing click logits `[batch, 1]`.

    `embeddings ++ dense -> hidden_units MLP -> Dense(1)`.

    Args:
        feature_spec: Input fields, vocabulary sizes and dense width.
        activation: Hidden activation (see `DCNRanker`), or one per hidden
            layer: a mapping from every name of `hidden_activation_names`
            (`"hidden_activation_0"`, ...) to its activation, e.g.
            `{"hidden_activation_0": "smelu:0.05", "hidden_activation_1":
            "smelu:0.1"}`.
        embedding_dim: Width of every embedding.
        hidden_units: Hidden widths of the MLP (at least one).
        embedding_initializer: Initializer of the embedding tables.
        kernel_initializer: Initializer of all other kernels.
        embedding_seed: Seed of the embedding tables.
        tower_seed: Seed of every non-embedding weight.
        **kwargs: Base model arguments (`name`, `dtype`...).

    Raises:
        ValueError: if a width or count is not a positive (for counts,
            non-negative) integer, `activation` maps names that are not
            hidden activation layers of the model (or misses one), or the
            feature spec is invalid.
    """

    def __init__(
        self,
        feature_spec: FeatureSpec | Mapping,
        activation: ActivationLike | PerLayerActivations = "relu",
        embedding_dim: int = 8,
        hidden_units: Sequence[int] = (256, 128, 64),
        embedding_initializer: InitializerLike = "uniform",
        kernel_initializer: InitializerLike = "glorot_uniform",
        embedding_seed: int | None = None,
        tower_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature_spec,
            activation=activation,
            embedding_dim=embedding_dim,
            embedding_initializer=embedding_initializer,
            kernel_initializer=kernel_initializer,
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **kwargs,
        )
        self.hidden_units = _as_units("hidden_units", hidden_units, allow_empty=False)
        self.hidden_layers = self._mlp_layers("hidden", self.hidden_units)
        self.logit_layer = self._tower_dense(1, "logit")
        self._finish_init()

    def _build_tower(self) -> None:
        input_width = self._embedded_width() + self.feature_spec.num_dense
        self.logit_layer.build(
            (None, self._build_sequential(self.hidden_layers, input_width))
        )

    def _tower(self, embedded: list, dense):
        x = ops.concatenate([*embedded, dense], axis=-1)
        return self.logit_layer(self._apply_sequential(self.hidden_layers, x))

    def get_config(self) -> dict:
        """The model's configuration, from which `from_config` rebuilds it.

        Returns:
            The common ranker fields (feature spec, activation, embedding
            width, initializers, seeds) with `hidden_units`.
        """
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}


MODEL_CLASSES: Mapping[str, type[_CTRRanker]] = {"dcn": DCNRanker, "mlp": MLPRanker}
"""Names accepted by `build_model`."""


def build_model(
    name: str,
    feature_spec: FeatureSpec | Mapping,
    activation: ActivationLike | PerLayerActivations = "relu",
    **kwargs: Any,
) -> _CTRRanker:
    """Builds a CTR ranking model by name (`"dcn"` or `"mlp"`).

    Args:
        name: Key of `MODEL_CLASSES`.
        feature_spec: Input description, e.g. `config.feature_spec()`.
        activation: Hidden activation (name, spec, callable or layer
            instance), or a mapping from hidden activation layer name to
            activation (see `MLPRanker` and `DCNRanker`).
        **kwargs: Further constructor arguments of the model class, e.g.
            `embedding_seed`, `tower_seed`, `top_units`.

    Returns:
        An uncompiled model whose output is the click logit `[batch, 1]`.

    Raises:
        ValueError: if `name` is not a key of `MODEL_CLASSES`, or the model
            class refuses an argument.
    """
    if name not in MODEL_CLASSES:
        raise ValueError(
            f"Unknown model name. Expected one of {sorted(MODEL_CLASSES)}. "
            f"Received: name={name!r}"
        )
    return MODEL_CLASSES[name](feature_spec, activation=activation, **kwargs)
