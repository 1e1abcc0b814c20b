"""Each hidden layer's pre-activation spread, and a β relative to it.

SmeLU's β (the half-width of its quadratic band) means something only next to
the spread of the values it acts on: β = 0.1 is nearly ReLU for a layer whose
pre-activations spread over ±1 and nearly linear (the middle of the quadratic
band) for one whose spread over ±0.05. So a sweep over β transfers from one model and data set to another only
as a multiple of that spread. Here, with `k` the spec's scale parameter
(`"smelu:1.2"` means k = 1.2), hidden layer `l` gets

    β_l = k σ_l,   σ_l = the standard deviation of layer l's pre-activation

and every other parameter in the units of the pre-activation follows
(`LENGTH_PARAMETERS`: generalized SmeLU's α, β, t and minimum width), so that
layer `l` computes `x -> σ_l f(x / σ_l)`, the same shape on a σ_l times wider
axis.

What σ_l is: the population standard deviation of the input of layer `l`'s
activation over *all* its units and held-out rows, one number per layer. One
β acts on every unit of the layer, so what matters is the spread of all the
values its band sees, including how far units' means lie apart; the mean of
per-unit standard deviations leaves that out (after one epoch on the default
data it was 13%, 42% and 52% smaller than σ_l in the three layers).

When: by default after one seeded ReLU model's whole training schedule
(`warmup_steps=None`), not at initialization and not after a short warm-up.
On the default synthetic data (500k rows, MLP 256-128-64, batch 512; σ over
10,000 held-out rows; σ of the three hidden layers):

    Adam 1e-3   steps  0 (init)          100               200               977 (1 epoch)
    seed 0             0.160/0.130/0.111 0.163/0.249/0.310 0.165/0.257/0.322 0.174/0.310/0.365
    seed 1             0.163/0.130/0.117 0.169/0.282/0.403 0.171/0.290/0.418 0.184/0.330/0.458
    Adam 1e-2   seed 0                                     0.354/1.108/0.967 1.012/2.462/1.623

At the learning rate the replica experiment runs at (1e-2, where every
activation reached its best AUC) the spread keeps growing all epoch: after 200
steps it is 1.7-2.9x below its end-of-epoch value (at 1e-3 the same warm-up
came within 5-17%, about the spread between two seeds). At initialization it
is 6-19x too small. So σ is measured where training spends its last and
decisive steps, at the cost of one replica's training, once per data set and
model. 10,000 held-out rows give σ within 0.5% of 100,000 rows.

`measure_preactivation_std` does the measurement once per data set and model;
`relative_model_fn` wraps the harness's `model_fn` so that every replica of
every row gets the same per-layer β. The model must take one activation per
hidden layer: the built-in rankers and `.keras` models do (through
`tf_smelu.conversion`), a `package.module:function` model does when it makes
its activation layers with `tf_smelu.conversion.activation_layer`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from tf_smelu import layers
from tf_smelu.common import KERAS_PACKAGE
from tf_smelu.conversion import ActivationLike, PerLayerActivations, resolve_activation
from tf_smelu.registry import ACTIVATIONS, Activation
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.replicas import ReplicaTrainer
from tf_smelu.validation import (
    require_in_range,
    require_non_negative_int,
    require_positive_int,
)

ModelFn = Callable[..., keras.Model]

LENGTH_PARAMETERS: Mapping[type[keras.layers.Layer], tuple[str, ...]] = {
    layers.SmeLU: ("beta",),
    layers.RESCU: ("beta",),
    layers.GeneralizedSmeLU: ("alpha", "beta", "t", "min_width"),
}
"""Config entries in the units of the pre-activation, per activation layer class.

Multiplying all of them by σ turns `f` into `x -> σ f(x / σ)`; slopes and
RESCU's order have no units and stay as they are.
"""


# --------------------------------------------------------------------------
# Measuring.
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE, name="PreactivationProbe")
class _PreactivationProbe(keras.layers.Layer):
    """A ReLU that, while `recording`, keeps the moments of its inputs.

    Recording happens in eager calls only: training steps are traced with
    `recording` off, so they compute a plain ReLU.

    Args:
        key: The hidden layer's key among per-layer activations.
        **kwargs: Base layer arguments (`name`...).
    """

    def __init__(self, key: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.recording = False
        # Per batch: (count, mean, sum of squared deviations from that mean).
        self.batches: list[tuple[int, float, float]] = []

    def call(self, inputs):
        if self.recording:
            values = np.asarray(keras.ops.convert_to_numpy(inputs), np.float64).ravel()
            mean = values.mean()
            self.batches.append((values.size, mean, float(np.sum((values - mean) ** 2))))
        return keras.ops.relu(inputs)

    def std(self) -> float:
        """Population std of every recorded value (batch moments combined exactly)."""
        counts, means, squares = (np.array(column) for column in zip(*self.batches))
        mean = np.sum(counts * means) / np.sum(counts)
        return float(np.sqrt((np.sum(squares) + np.sum(counts * (means - mean) ** 2))
                             / np.sum(counts)))

    def get_config(self) -> dict:
        return {**super().get_config(), "key": self.key}


class _Probes(Mapping):
    """Per-layer activations that give every hidden layer asked for a probe.

    The model builders read per-layer activations one layer at a time and
    check that every key they got names one of their layers, so asking is
    how the hidden layers' keys are found, in the order the builder makes them.
    """

    def __init__(self) -> None:
        self._keys: list[str] = []

    def __getitem__(self, key: str) -> _PreactivationProbe:
        if key not in self._keys:
            self._keys.append(key)
        return _PreactivationProbe(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _feature_batches(data: tf.data.Dataset, max_rows: int) -> Iterator[object]:
    """Features of the first `max_rows` rows of batched `(features, labels)` or features."""
    left = max_rows
    for element in data:
        features = element[0] if isinstance(element, (tuple, list)) else element
        rows = int(tf.shape(tf.nest.flatten(features)[0])[0])
        if rows > left:
            features = tf.nest.map_structure(lambda tensor, n=left: tensor[:n], features)
        yield features
        left -= min(rows, left)
        if not left:
            return


@dataclasses.dataclass(frozen=True)
class PreactivationStd:
    """σ of every hidden layer's pre-activation, and how it was measured.

    Attributes:
        std: Hidden layer key -> σ_l, in the order the model builder made the
            layers (the keys of per-layer activations: `hidden_activation_0`
            ... for the rankers, layer paths for `.keras` models).
        warmup_steps: ReLU training steps before measuring (0: at init).
        rows: Held-out rows measured.
    """

    std: Mapping[str, float]
    warmup_steps: int
    rows: int

    def to_json(self) -> dict[str, object]:
        """Fields for a result row (flat, so their names say what they are)."""
        return {"preactivation_std": dict(self.std),
                "preactivation_warmup_steps": self.warmup_steps,
                "preactivation_rows": self.rows}


def _known_length(dataset: tf.data.Dataset) -> int:
    batches = int(dataset.cardinality())
    if batches < 0:
        raise ValueError("Cannot train a whole schedule before measuring: `train_data`'s length "
                         "is unknown and `train_config.steps` is unset; give `warmup_steps`.")
    return batches


def measure_preactivation_std(
    model_fn: ModelFn,
    train_data: tf.data.Dataset,
    eval_data: tf.data.Dataset,
    train_config: TrainingConfig | None = None,
    *,
    warmup_steps: int | None = None,
    seed: int = 0,
    max_rows: int = 10_000,
) -> PreactivationStd:
    """σ of each hidden layer's pre-activation, after ReLU training.

    One ReLU model (`embedding_seed = tower_seed = seed`) trains
    `warmup_steps` steps of `train_config` (synchronous updates) on
    `train_data`, then σ_l is the population standard deviation of hidden
    layer l's pre-activation over all its units and the first `max_rows`
    rows of `eval_data`. The same seeds, data order and steps give the same
    numbers (bit-identical on CPU; run it with TensorFlow's op determinism on
    where ops may not be deterministic).

    Args:
        model_fn: `model_fn(activation, embedding_seed=..., tower_seed=...)`,
            as in the replica harness; it must take one activation per
            hidden layer (see the module docstring).
        train_data: Batched `(features, labels)` in a fixed order; repeated
            as needed.
        eval_data: Batched held-out `(features, labels)` (or features).
        train_config: Learning rate and `jit_compile` of the warm-up
            (default: `TrainingConfig()`'s).
        warmup_steps: Training steps before measuring; 0 measures at init;
            `None`: the whole schedule of `train_config` (its `steps`, or
            `epochs` passes over `train_data`), so that σ is the spread at
            the end of training.
        seed: Seed of the model's initial weights.
        max_rows: Held-out rows to measure on.

    Returns:
        A `PreactivationStd`.

    Raises:
        ValueError: `model_fn` cannot take per-layer activations or uses none,
            `eval_data` is empty, `warmup_steps` is `None` but neither
            `train_config.steps` nor `train_data`'s length is known, or a layer's pre-activations are not
            finite or all equal (σ = 0).
    """
    train_config = train_config or TrainingConfig()
    if warmup_steps is None:
        warmup_steps = train_config.steps or train_config.epochs * _known_length(train_data)
    warmup_steps = require_non_negative_int("warmup_steps", warmup_steps)
    max_rows = require_positive_int("max_rows", max_rows)
    probes = _Probes()
    try:
        model = model_fn(probes, embedding_seed=seed, tower_seed=seed)
    except Exception as error:  # a model_fn may fail in many ways on a mapping
        raise ValueError(
            "Cannot measure pre-activations: `model_fn` failed on one activation per hidden "
            "layer (a package.module:function model must make its activation layers with "
            f"tf_smelu.conversion.activation_layer(activation, name)): {error}"
        ) from error
    found = {layer.key: layer for layer in _all_layers(model)
             if isinstance(layer, _PreactivationProbe)}
    if not probes or set(found) != set(probes):
        raise ValueError(
            "Cannot measure pre-activations: the model of `model_fn` does not apply the "
            f"activation it is given in its hidden layers (asked for {list(probes)}, "
            f"found {sorted(found)})."
        )
    if warmup_steps:
        config = dataclasses.replace(train_config, steps=warmup_steps,
                                     epochs=1, update_mode="sync")
        ReplicaTrainer([model], config).fit(  # (the description names it if it diverges)
            train_data, progress=False, description="relu warm-up before measuring sigma")
    for probe in found.values():
        probe.recording = True
    rows = 0
    for features in _feature_batches(eval_data, max_rows):
        model(features, training=False)
        rows += int(tf.shape(tf.nest.flatten(features)[0])[0])
    if not rows:
        raise ValueError("Cannot measure pre-activations: `eval_data` holds no rows.")
    std = {}
    for key in probes:
        found[key].recording = False
        if not found[key].batches:
            raise ValueError(f"Hidden layer {key!r} saw none of the held-out rows.")
        std[key] = found[key].std()
        if not (np.isfinite(std[key]) and std[key] > 0):
            raise ValueError(
                f"The pre-activations of hidden layer {key!r} are not finite or all equal, so "
                f"no β can be relative to their spread. Received: std={std[key]}"
            )
    return PreactivationStd(std, warmup_steps, rows)


# --------------------------------------------------------------------------
# β relative to σ.
# --------------------------------------------------------------------------


def length_parameters(activation: keras.layers.Layer) -> tuple[str, ...]:
    """The config entries of `activation` in the units of its input (may be empty).

    Raises:
        ValueError: An activation layer of an unknown class has a `beta`.
    """
    for cls in type(activation).__mro__:
        if cls in LENGTH_PARAMETERS:
            return LENGTH_PARAMETERS[cls]
    if "beta" in activation.get_config():
        raise ValueError(
            f"Cannot make the `beta` of {type(activation).__name__} relative to the "
            "pre-activation spread: which of its parameters are in the units of its input "
            f"is unknown; add its class to {__name__}.LENGTH_PARAMETERS."
        )
    return ()


def _template(activation: ActivationLike) -> str | Callable | keras.layers.Layer:
    """`activation` resolved; a package name or function alone means its layer with k = 1.

    `"smelu"` (or `tf_smelu.smelu`) alone is SmeLU with β = 1, which here
    means k = 1, not a β fixed on the absolute scale.
    """
    for entry in ACTIVATIONS.values():
        if entry.parameters and activation in (entry.name, entry.function):
            return Activation(entry.name).to_keras()
    return resolve_activation(activation)


def relative_label(activation: Activation) -> str:
    """A row label saying that β is a multiple of σ: `smelu(β=1.2σ)`, `rescu(β=0.5σ, n=2)`."""
    if "beta" not in activation.entry.parameters:
        return activation.label
    absolute = f"β={activation.beta:g}"
    return activation.label.replace(absolute, f"{absolute}σ", 1)


class RelativeModelFn:
    """A `model_fn` whose activation's β means k: layer l gets β_l = k σ_l.

    Call it as the harness calls a model_fn:
    `fn(activation, embedding_seed=..., tower_seed=...)`. An activation with
    a scale (SmeLU, RESCU, generalized SmeLU: a spec such as `"smelu:1.2"` or
    its layer) reaches `model_fn` as one layer per hidden layer with every
    `LENGTH_PARAMETERS` entry multiplied by that layer's σ; activations
    without one (`"relu"`, `"gelu"`, callables...) pass through unchanged.
    Every replica gets the same per-layer β.

    Args:
        model_fn: The harness's model function; it must take one activation
            per hidden layer, keyed as `std`.
        std: The per-layer σ (`measure_preactivation_std`), or a mapping
            from hidden layer key to σ.

    Raises:
        ValueError: A σ is not a finite number > 0, or there is none.
    """

    def __init__(self, model_fn: ModelFn, std: PreactivationStd | Mapping[str, float]) -> None:
        self.model_fn = model_fn
        self.measurement = std if isinstance(std, PreactivationStd) else None
        values = std.std if isinstance(std, PreactivationStd) else std
        if not values:
            raise ValueError("`std` must give the σ of at least one hidden layer.")
        for key, value in values.items():
            require_in_range(f"std[{key!r}]", value, low=0, low_inclusive=False)
        self.std = {key: float(value) for key, value in values.items()}

    def activations(
        self, activation: ActivationLike
    ) -> ActivationLike | dict[str, keras.layers.Layer]:
        """What `model_fn` receives: one scaled layer per hidden layer, or `activation`."""
        template = _template(activation)
        names = length_parameters(template) if isinstance(template, keras.layers.Layer) else ()
        if not names:
            return activation
        base = template.get_config()
        return {key: template.__class__.from_config(
                    {**base, **{name: base[name] * sigma for name in names}})
                for key, sigma in self.std.items()}

    def betas(self, activation: ActivationLike) -> dict[str, float] | None:
        """Hidden layer key -> the β it gets (JSON-ready); `None` without a β."""
        per_layer = self.activations(activation)
        if not isinstance(per_layer, dict):
            return None
        return {key: float(layer.get_config()["beta"]) for key, layer in per_layer.items()}

    def describe(self, activation: ActivationLike) -> dict[str, object]:
        """JSON-ready fields for a result row: k, the per-layer β and the σ behind them."""
        betas = self.betas(activation)
        template = _template(activation)
        description = {
            "beta_scale": "relative",
            "k": None if betas is None else float(template.get_config()["beta"]),
            "beta_per_layer": betas,
        }
        if self.measurement is not None:
            description.update(self.measurement.to_json())
        else:
            description["preactivation_std"] = dict(self.std)
        return description

    def __call__(
        self,
        activation: ActivationLike,
        embedding_seed: int | None = None,
        tower_seed: int | None = None,
    ) -> keras.Model:
        per_layer = self.activations(activation)
        model = self.model_fn(per_layer, embedding_seed=embedding_seed, tower_seed=tower_seed)
        if isinstance(per_layer, dict):
            _check_scaled(model, per_layer)
        return model


def _check_scaled(model: keras.Model, per_layer: PerLayerActivations) -> None:
    """Every planned β must be in the built model: nothing falls back silently."""
    kind = type(next(iter(per_layer.values())))
    built = collections.Counter(layer.get_config()["beta"] for layer in _all_layers(model)
                                if type(layer) is kind)
    lacking = collections.Counter(layer.get_config()["beta"] for layer in per_layer.values())
    lacking -= built
    if lacking:
        missing = [key for key, layer in per_layer.items()
                   if layer.get_config()["beta"] in lacking]
        raise ValueError(
            f"The model of `model_fn` lacks the relative β of hidden layers {missing}: it "
            "must put each hidden layer's entry of its per-layer `activation` in that layer."
        )


def relative_model_fn(
    model_fn: ModelFn, std: PreactivationStd | Mapping[str, float]
) -> RelativeModelFn:
    """`model_fn` with β relative to each hidden layer's σ (see `RelativeModelFn`).

    How the harness uses it (its model function for the default data):

    ```python
    std = measure_preactivation_std(model_fn, train_data_fn(None), eval_data)
    relative = relative_model_fn(model_fn, std)
    model = relative("smelu:1.2", embedding_seed=0, tower_seed=0)
    relative.betas("smelu:1.2")  # {"hidden_activation_0": 0.198, ...}
    ```
    """
    return RelativeModelFn(model_fn, std)
