"""R replicas of a compiled model trained side by side in one `fit`.

When only initialization varies (the data order is pinned), the R replicas
of a `ReplicaStudy` see the same batches in the same order, so they can be
trained at once: one Keras model holding the R copies, each built from its
own seed, over shared inputs, with the user's loss on every output of every
copy and one optimizer of the user's configuration. One `fit` then pays the
per-step overhead (the input pipeline, Python, the `tf.function` call) once
instead of R times. Tracing is not saved: the stacked graph holds R
copies and takes about as long to trace as R separate models, so the gain
grows with the number of steps (`benchmarks/replica_study.py`).

Why the copies stay independent:

* **Loss.** The stacked loss is the sum over copies of each copy's own
  compiled loss (with its loss weights); a copy's regularization losses are
  added once. The derivative of a sum with respect to one term is exactly 1,
  and a copy's variables appear in no other copy's term, so every copy's
  gradients are the same math as in its own `fit`.
* **Optimizer.** Keras' built-in optimizers update each variable from its
  own gradient and its own slots (Adam's moments, SGD's momentum), and
  `clipnorm` / `clipvalue` clip each variable's gradient alone: independent.
  `global_clipnorm` clips by the norm over *all* variables, which would
  couple the copies, so such a model trains one replica after another. So do
  a `LossScaleOptimizer` (one loss scale, and a skipped step, for all
  copies) and optimizers outside Keras (their update cannot be checked).
* **Metrics** are compiled per output of every copy, so each copy's are its
  own.

Remedies that couple a model to other predictions use the same machinery
(`Pulls`): the stacked loss then adds, per copy, λ × the cross-entropy towards
a trained model's probabilities (distillation, anchoring) or towards the
mean of its peers' (co-distillation: the K copies of one replica's group),
taken stop-gradient; with every λ = 0 nothing is added. Stale peers
(`Pulls.peer_stale`) predict with a snapshot of the copies' weights, taken
in `train_step` before every n-th step and read through `stateless_call`.

With op determinism on (the study's default) the replicas' predictions are
bit-identical to those of R sequential `fit` runs with the same seeds
(`tests/test_replica_study.py`); XLA (`jit_compile=True`) may fuse the copies
differently and change the last bits.

What cannot be stacked falls back to one `fit` per replica (the reason is
logged in one line): a model that trains its own way (`train_step`,
`compute_loss`, `compute_metrics` overridden), one whose inputs are unknown
(a subclassed model never called), the optimizers above, optimizers that
differ between replicas, callbacks other than `LearningRateScheduler`,
`TerminateOnNaN` and `ProgbarLogger` (they would see the stacked model and
its summed logs), `validation_data`, and `class_weight`
on a model with several outputs (Keras itself takes it for one output only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from tf_smelu.reproducibility import outputs as outputs_lib

# Callbacks that act on the optimizer or stop on NaN only: the same for one copy or R.
_STACKABLE_CALLBACKS = (keras.callbacks.LearningRateScheduler, keras.callbacks.TerminateOnNaN,
                        keras.callbacks.ProgbarLogger, keras.callbacks.History)
# Optimizer settings that act on all variables at once, coupling the copies.
_GLOBAL_OPTIMIZER_SETTINGS = ("global_clipnorm",)
# fit arguments that would evaluate the stacked model rather than each replica.
_UNSTACKABLE_FIT_ARGUMENTS = ("validation_data",)
# Model methods that, overridden, mean a model trains its own way.
_TRAINING_METHODS = ("train_step", "compute_loss", "compute_metrics")


@dataclasses.dataclass(frozen=True)
class Pulls:
    """Loss terms added to the stacked loss: each copy pulled towards other predictions.

    A term is `weight` × the cross-entropy from a target's probabilities
    (taken stop-gradient) to the copy's, per output, averaged over the
    batch: binary outputs a binary cross-entropy, multi-class ones a
    categorical one, computed from the copy's logits where it outputs logits.
    Sample and class weights weigh the copies' own losses only.

    Attributes:
        from_logits: Whether the outputs are logits, as
            `outputs.logits_by_output` takes it (the targets, models of the
            same `build_model`, are read the same way).
        fixed: `(weight, model)`: every copy towards a trained model's
            predictions (a teacher, the previous model), which the step runs
            in inference mode and never trains.
        peer_weight: Every copy towards the mean of the other copies of its
            group (co-distillation); 0 for none.
        group: How many consecutive copies are peers of each other.
        peer_stale: None: the peers' predictions are those of the step's
            own forward pass. A number n: they are those of a copy of the
            copies' weights taken before every n-th step (steps 0, n, 2n,
            ...), in inference mode, as a teacher's are: stale peers.
    """

    from_logits: bool | Mapping[str, bool] | None
    fixed: tuple[tuple[float, keras.Model], ...] = ()
    peer_weight: float = 0.0
    group: int = 1
    peer_stale: int | None = None

    @property
    def peers_active(self) -> bool:
        """Whether each copy is pulled towards its peers."""
        return self.peer_weight > 0 and self.group > 1

    @property
    def active(self) -> bool:
        """Whether any term is added (a weight of 0 adds none: the copies train as without)."""
        return any(w > 0 for w, _ in self.fixed) or self.peers_active


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """Non-trainable copies of a model's variables, refreshed every `every` steps.

    Held in a dataclass so that Keras does not track them as the stacked
    model's own variables (they would then be in the lists `stateless_call`
    takes).

    Attributes:
        trainable: Copies of the model's trainable variables, in order.
        non_trainable: Copies of its non-trainable variables, in order.
        every: Steps between refreshes.
    """

    trainable: tuple[tf.Variable, ...]
    non_trainable: tuple[tf.Variable, ...]
    every: int

    @classmethod
    def of(cls, model: keras.Model, every: int) -> _Snapshot:
        if keras.backend.backend() != "tensorflow":
            # The snapshot is refreshed by assignments inside the step, which JAX's
            # stateless train_step(state, data) would drop.
            raise ValueError(
                f"codistill with STALE > 1 needs the TensorFlow backend; Keras runs "
                f"{keras.backend.backend()!r}. Use codistill:LAMBDA:K (fresh peers) there.")

        def copy(variable):
            return tf.Variable(variable.value, trainable=False)

        return cls(tuple(copy(v) for v in model.trainable_variables),
                   tuple(copy(v) for v in model.non_trainable_variables), every)

    def refresh_if_due(self, model: keras.Model, step) -> None:
        """Copies `model`'s variables into the snapshot when `step` is a multiple of `every`."""
        def refresh():
            for snapshot, variables in ((self.trainable, model.trainable_variables),
                                        (self.non_trainable, model.non_trainable_variables)):
                for copy, variable in zip(snapshot, variables):
                    copy.assign(variable.value)

        tf.cond(tf.equal(step % self.every, 0), refresh, lambda: None)

    def predict(self, model: keras.Model, x) -> object:
        """`model`'s outputs of `x` with the snapshot's weights, in inference mode."""
        outputs, _ = model.stateless_call([v.value() for v in self.trainable],
                                          [v.value() for v in self.non_trainable], x,
                                          training=False)
        return outputs


class _Stacked(keras.Model):
    """The stacked Functional model, whose loss adds `Pulls` terms to the copies' own."""

    def __init__(self, inputs, outputs, pulls: Pulls | None, copies: int,
                 logits: Mapping[str, bool], **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        self._pulls = pulls if pulls is not None and pulls.active else None
        self._logits, names = logits, list(logits)
        # The trained target models stay untracked (inside `Pulls`): their variables are
        # none of the stacked model's, so the optimizer never sees them and they stay as trained.
        self._copies, self._names = copies, names
        stale = self._pulls is not None and self._pulls.peers_active and (
            self._pulls.peer_stale is not None)
        self._snapshot = _Snapshot.of(self, self._pulls.peer_stale) if stale else None

    def train_step(self, *args):
        # *args: TensorFlow's and torch's train_step take (data), JAX's (state, data).
        if self._snapshot is not None:  # before the step's loss reads it
            self._snapshot.refresh_if_due(self, self.optimizer.iterations)
        return super().train_step(*args)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if self._pulls is None:
            return loss
        return loss + self._pull_loss(x, y_pred)

    def _pull_loss(self, x, y_pred) -> object:
        pulls, ops = self._pulls, keras.ops
        fixed = [(weight, self._probabilities(model(x, training=False)))
                 for weight, model in pulls.fixed if weight > 0]
        copies = self._by_copy(y_pred)
        # Stale peers: their predictions by the snapshot of the weights (`Pulls.peer_stale`).
        peer_copies = copies if self._snapshot is None else self._by_copy(
            self._snapshot.predict(self, x))
        total = 0.0
        for copy, own in enumerate(copies):
            group = copy - copy % pulls.group
            peers = [self._probabilities(peer_copies[p])
                     for p in range(group, group + pulls.group) if p != copy]
            targets = list(fixed)
            if pulls.peer_weight > 0 and peers:
                targets.append((pulls.peer_weight, {
                    name: ops.mean(ops.stack([p[name] for p in peers]), axis=0)
                    for name in self._names}))
            for weight, target in targets:
                for name in self._names:
                    total = total + weight * self._cross_entropy(
                        ops.stop_gradient(target[name]), own[name], self._logits[name])
        return total

    def _by_copy(self, predictions) -> list[dict[str, object]]:
        """The stacked model's outputs as one `{output name: value}` per copy."""
        return [{name: predictions[_prefix(c) + name] for name in self._names}
                for c in range(self._copies)]

    def _probabilities(self, predictions) -> dict[str, object]:
        """A model's (or a copy's) outputs by output name, as probabilities."""
        if not isinstance(predictions, Mapping) or set(predictions) != set(self._names):
            named = outputs_lib.named_outputs(self, predictions, convert=lambda t: t)
            predictions = dict(zip(self._names, named.values()))  # by position
        return {name: _as_probabilities(value, self._logits[name])
                for name, value in predictions.items()}

    @staticmethod
    def _cross_entropy(target, output, from_logits: bool):
        ops = keras.ops
        if _is_classes(output):
            return ops.mean(ops.categorical_crossentropy(target, output, from_logits=from_logits))
        return ops.mean(ops.binary_crossentropy(target, output, from_logits=from_logits))


def _is_classes(output) -> bool:
    """Whether a batch of outputs holds class scores `[N, K]`, K >= 2 (else binary: `[N]`, `[N, 1]`)."""
    return len(output.shape) >= 2 and output.shape[-1] is not None and output.shape[-1] >= 2


def _as_probabilities(output, from_logits: bool):
    if not from_logits:
        return output
    return keras.ops.softmax(output, axis=-1) if _is_classes(output) else keras.ops.sigmoid(output)


@dataclasses.dataclass
class SideBySide:
    """What one side-by-side `fit` of R copies leaves, per replica.

    Attributes:
        histories: Each replica's last-epoch `fit` logs, under the names its
            own `fit` would log (`loss`, `auc`, `click_loss`, ...); `loss` is
            the sum of its (weighted) output losses, left out when the model
            has regularization losses (Keras logs them for the whole stack).
        steps: Optimizer steps taken (the same for every replica).
        seconds: Wall time of the one `fit`.
    """

    histories: list[dict[str, float]]
    steps: int
    seconds: float


def unstackable_reason(model: keras.Model, fit_kwargs: Mapping[str, object]) -> str | None:
    """Why the replicas of `model` cannot train side by side, or None if they can.

    Args:
        model: Replica 0 as `build_model` returned it (compiled, untrained).
        fit_kwargs: The `fit` arguments every replica gets.

    Returns:
        One sentence naming what prevents stacking, or None.
    """
    for method in _TRAINING_METHODS:
        if getattr(type(model), method) is not getattr(keras.Model, method):
            return f"model {model.name!r} overrides `{method}` (it trains its own way)"
    if input_structure(model) is None:
        return (f"the inputs of model {model.name!r} are unknown (a subclassed model never "
                "called, or a Sequential model without keras.Input)")
    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return "a LossScaleOptimizer scales the loss, and skips steps, for all copies at once"
    if not type(optimizer).__module__.startswith("keras."):
        return (f"optimizer {type(optimizer).__name__} is not one of Keras' own, so it is "
                "unknown whether it updates every variable independently")
    config = optimizer.get_config()
    for setting in _GLOBAL_OPTIMIZER_SETTINGS:
        if config.get(setting) is not None:
            return (f"the optimizer's {setting}={config[setting]} clips by the norm over all "
                    "copies' gradients together, coupling the replicas (clipnorm per variable "
                    "would not)")
    try:  # the stacked model is compiled from the copies' compile configurations
        compile_arguments(model, "Training replicas side by side compiles them")
    except ValueError as error:
        return f"its compile arguments cannot be recreated ({error})"
    return _fit_kwargs_reason(model, fit_kwargs)


def compile_arguments(model: keras.Model, doing: str) -> dict[str, object]:
    """`model`'s compile arguments, new objects made from `model.get_compile_config()`.

    The one place the study re-creates a user's loss, metrics and optimizer
    (converted models, stacked copies, co-distilled peers).

    Args:
        model: A compiled model.
        doing: What needs them, starting the error message, e.g. "compare()
            compiles each converted model".

    Raises:
        ValueError: They cannot be re-created (custom objects not registered).
    """
    try:
        return keras.saving.deserialize_keras_object(model.get_compile_config())
    except Exception as error:  # Keras raises many types for unserializable objects.
        raise ValueError(
            f"{doing} from model.get_compile_config(), which failed: {error}. Register custom "
            "losses, metrics and optimizers with keras.saving.register_keras_serializable."
        ) from error


def _fit_kwargs_reason(model: keras.Model, fit_kwargs: Mapping[str, object]) -> str | None:
    given = [k for k in _UNSTACKABLE_FIT_ARGUMENTS if fit_kwargs.get(k) is not None]
    if given:
        return f"fit argument(s) {given} would evaluate the stacked model, not each replica"
    for callback in fit_kwargs.get("callbacks") or ():
        if not isinstance(callback, _STACKABLE_CALLBACKS):
            return (f"callback {type(callback).__name__} would see the stacked model and its "
                    "summed logs instead of one replica")
    if fit_kwargs.get("class_weight") is not None and len(model.outputs or ()) > 1:
        return "class_weight is given for a model with several outputs"
    return None


def check_same_optimizer(models: Sequence[keras.Model]) -> str | None:
    """Why the replicas' optimizers cannot be one, or None: they must be configured alike."""
    first = _optimizer_config(models[0])
    for index, model in enumerate(models[1:], start=1):
        if _optimizer_config(model) != first:
            return (f"replica {index}'s optimizer is configured differently from replica 0's "
                    f"({type(model.optimizer).__name__})")
    return None


def _optimizer_config(model: keras.Model) -> dict[str, object]:
    config = keras.optimizers.serialize(model.optimizer)
    config["config"] = {k: v for k, v in config["config"].items() if k != "name"}
    return config


def fit_side_by_side(models: Sequence[keras.Model], dataset: tf.data.Dataset,
                     fit_kwargs: Mapping[str, object], pulls: Pulls | None = None) -> SideBySide:
    """Trains the R `models` (copies of one compiled model) in one `fit`.

    The copies' variables are trained in place: afterwards each model
    predicts and evaluates as if it had been trained by its own `fit`.

    Args:
        models: The replicas, each `build_model(seed)` for its own seed,
            compiled, untrained; `unstackable_reason(models[0], ...)` is None.
        dataset: The training data every replica would read.
        fit_kwargs: `fit` arguments (as `unstackable_reason` accepted them).
        pulls: Loss terms coupling the copies to other models' predictions
            (remedies such as `distill`, `codistill`); None: independent copies.

    Returns:
        The replicas' logs (each copy's own losses, without the pulls),
        steps and the wall time.

    Raises:
        ValueError: The copies' compile arguments cannot be serialized (the
            stacked model is compiled from `get_compile_config()`).
    """
    stacked, weights = _stack(models, pulls)
    fit_kwargs = dict(fit_kwargs)
    class_weight = fit_kwargs.pop("class_weight", None)
    data = dataset.map(_replicate_labels(models[0], list(weights), len(models), class_weight))
    start = time.perf_counter()
    history = stacked.fit(data, **{"verbose": 0, **fit_kwargs, "shuffle": False})
    seconds = time.perf_counter() - start
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    regularized = bool(models[0].losses)
    return SideBySide([_replica_logs(logs, r, weights, regularized) for r in range(len(models))],
                      int(stacked.optimizer.iterations.numpy()), seconds)


def _prefix(replica: int) -> str:
    return f"replica{replica}_"


def input_structure(model: keras.Model) -> object | None:
    """The structure of symbolic inputs `model` is called on, or None if unknown."""
    if isinstance(model, keras.Sequential):
        inputs = model.inputs
        return inputs[0] if inputs and len(inputs) == 1 else None
    try:
        return model.input
    except (AttributeError, ValueError):
        return None


def _stack(models: Sequence[keras.Model],
           pulls: Pulls | None = None) -> tuple[keras.Model, dict[str, float]]:
    """One model over shared inputs with every output of every copy; compiled.

    Returns:
        The compiled stacked model and one copy's loss weight per output
        name (its outputs, in order).
    """
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, sparse=t.sparse, name=t.name),
        input_structure(models[0]))
    outputs, compiled = {}, {"loss": {}, "loss_weights": {}, "metrics": {}, "weighted_metrics": {}}
    names, weights = [], {}
    for replica, model in enumerate(models):
        named = outputs_lib.named_outputs(model, model(inputs), convert=lambda t: t)
        arguments = _compile_arguments(model, list(named))
        if replica == 0:
            names, weights = list(named), arguments["loss_weights"]
        # Auto-named output layers differ between copies (dense_2, dense_5): match by position.
        for name, own in zip(names, named):
            key = _prefix(replica) + name
            outputs[key] = named[own]
            for argument, per_output in arguments.items():
                if per_output.get(own) is not None:
                    compiled[argument][key] = per_output[own]
    logits = (outputs_lib.logits_by_output(models[0], names, pulls.from_logits)
              if pulls is not None and pulls.active else dict.fromkeys(names, False))
    stacked = _functional(inputs, outputs, models, pulls, logits)
    first = models[0]
    stacked.compile(
        optimizer=keras.optimizers.deserialize(keras.optimizers.serialize(first.optimizer)),
        **{k: v or None for k, v in compiled.items()},
        run_eagerly=first.run_eagerly, jit_compile=first.jit_compile,
        steps_per_execution=first.steps_per_execution)
    return stacked, {name: float(weights.get(name, 1.0)) for name in names}


def _functional(inputs, outputs, models: Sequence[keras.Model], pulls: Pulls | None,
                logits: Mapping[str, bool]) -> keras.Model:
    """The stacked model; copies that share a name (`name="ctr"`) get unique ones meanwhile."""
    names = [model.name for model in models]
    try:
        if len(set(names)) < len(names):  # Keras wants unique operation names in a model
            for replica, model in enumerate(models):
                model.name = _prefix(replica) + model.name
        return _Stacked(inputs, outputs, pulls, len(models), logits,
                        name="side_by_side_replicas")
    finally:
        for model, name in zip(models, names):
            model.name = name


def _compile_arguments(model: keras.Model, names: list[str]) -> dict[str, dict[str, object]]:
    """A copy's own loss, loss weights and metrics, per output name (fresh objects)."""
    config = compile_arguments(model, "Training replicas side by side compiles them")
    return {argument: _per_output(config.get(argument), names, argument)
            for argument in ("loss", "loss_weights", "metrics", "weighted_metrics")}


def _per_output(value: object, names: list[str], argument: str) -> dict[str, object]:
    """A compile argument (one value, one per output in a list, or a dict) by output name."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if len(names) == 1:
        is_list = isinstance(value, Sequence) and not isinstance(value, str)
        # A single output's list of metrics is its metrics; a list of losses has one entry.
        return {names[0]: value[0] if is_list and argument.startswith("loss") else value}
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != len(names):
            raise ValueError(f"compile's `{argument}` is a list of {len(value)} for a model with "
                             f"{len(names)} outputs {names}; pass side_by_side=False or a "
                             f"dict per output. Received: {argument}={value!r}")
        return dict(zip(names, value))
    return dict.fromkeys(names, value)  # one loss for every output, as Keras applies it


def _replicate_labels(model: keras.Model, names: list[str], replicas: int,
                      class_weight: Mapping | None):
    """A `dataset.map` function giving every copy's outputs the labels (and weights)."""
    table = None if class_weight is None else tf.constant(
        [float(class_weight.get(c, 1.0)) for c in range(max(class_weight) + 1)])

    def replicate(x, y, sample_weight=None):
        labels = outputs_lib.named_outputs(model, y, convert=lambda t: t)
        if table is not None:
            if sample_weight is not None:  # as Keras refuses it
                raise ValueError("You cannot use `class_weight` and `sample_weight` at the same "
                                 "time: the training data gives sample weights.")
            sample_weight = tf.gather(table, _classes(labels[names[0]]))
        labels = {_prefix(r) + n: labels[n] for r in range(replicas) for n in names if n in labels}
        if sample_weight is None:
            return x, labels
        if isinstance(sample_weight, Mapping) or isinstance(sample_weight, (list, tuple)):
            weights = outputs_lib.named_outputs(model, sample_weight, convert=lambda t: t)
            return x, labels, {k: weights[k.split("_", 1)[1]] for k in labels}
        return x, labels, dict.fromkeys(labels, sample_weight)

    return replicate


def _classes(labels: tf.Tensor) -> tf.Tensor:
    """Class indices of labels, as Keras derives them for `class_weight`."""
    if labels.shape.rank >= 2 and labels.shape[-1] != 1:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    if labels.shape.rank >= 2:
        labels = tf.squeeze(labels, axis=-1)
    return tf.cast(tf.round(labels), tf.int32)


def _replica_logs(logs: Mapping[str, float], replica: int, weights: Mapping[str, float],
                  regularized: bool) -> dict[str, float]:
    """One replica's logs, under the names its own `fit` would use.

    Args:
        logs: The stacked model's logs.
        replica: Which copy.
        weights: Loss weight per output name (Keras logs unweighted losses per output).
        regularized: Whether the model has regularization losses, which
            Keras logs for the stack only (the replica's `loss` is then left out).
    """
    names = list(weights)
    prefix = _prefix(replica)
    own = {k[len(prefix):]: v for k, v in logs.items() if k.startswith(prefix)}
    if len(names) == 1:
        # A one-output model logs `<metric>`, not `<output>_<metric>`.
        single = names[0] + "_"
        own = {k[len(single):] if k.startswith(single) else k: v for k, v in own.items()}
        if regularized:
            own.pop("loss", None)
    elif not regularized:
        own["loss"] = sum(weights[name] * own[f"{name}_loss"]
                          for name in names if f"{name}_loss" in own)
    shared = {k: v for k, v in logs.items() if k != "loss" and not k.startswith("replica")}
    return {**shared, **own}
