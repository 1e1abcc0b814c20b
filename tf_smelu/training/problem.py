"""What is trained: the data and the ranking model a `TrainingConfig` names.

The in-process harness, the worker program and the experiment's checks of
the workers' outputs all load data and build models here, so that they train
the same thing for the same configuration.

`TrainingConfig.model` is `mlp` or `dcn` (`tf_smelu.models`), or your own
Keras model (`UserModelBuilder`):

* `PATH.keras`: a saved Functional or Sequential model (nested models
  included). Every replica is a fresh copy of its architecture
  (`tf_smelu.conversion.rebuild`): embedding tables (`embeddings_initializer`)
  seeded from the replica's embedding seed, every other initializer (and
  layer `seed`, e.g. Dropout) from its tower seed, so the `embedding_init`
  and `tower_init` sources keep their meaning; hidden ReLUs replaced by the
  activation under test; a sigmoid on the output removed (the trainers apply
  the sigmoid in the loss). Custom layers must be registered Keras
  serializables importable before loading; use the function form otherwise.
* `package.module:function`, importable (installed or on `PYTHONPATH`):
  `function(feature_spec)` returns a model used like a saved one, or
  `function(feature_spec, activation, embedding_seed, tower_seed)` builds
  each replica itself: it must put `activation` (a Keras activation name or a
  layer instance; `tf_smelu.conversion.activation_layer` makes one layer per
  use) in its hidden layers and seed its initializers from the two seeds.

With the main job's `--trainer=keras` (`tf_smelu.reproducibility.main_job`)
your model is trained by its own `fit` with the compile arguments it was
saved with (a `.keras` file) or returned with (a function):
`UserModelBuilder.saved_compile_config`; its output is then kept as it is
(a sigmoid stays, for a loss on probabilities).

The model takes the data's features dict: one int64 id tensor of shape
`[batch]` per categorical field (`FeatureSpec.categorical_names`, ids in
`[0, vocab_size)`) and the float32 `"dense"` tensor `[batch, num_dense]`.
Its inputs must be named so (a column whose name is no identifier has a
derived key, `user name` -> `user_name`, printed with the data's schema; ids
may be declared `[batch, 1]` or as float32, which Keras converts). It may
take only some of the features (e.g. only the id columns): the others are
listed in one logged line and never given to it. It returns one click logit
per example, `[batch, 1]` or `[batch]`. Everything is checked when the
builder is made, before any training.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from collections.abc import Callable

import keras
import numpy as np

from tf_smelu.conversion import ConversionReport, rebuild
from tf_smelu.data import DENSE_FEATURE_NAME, FeatureSpec, LoadedDataset, load_dataset
from tf_smelu.models import ActivationLike, build_model
from tf_smelu.training.config import MODELS, TrainingConfig

ModelBuilder = Callable[..., keras.Model]
"""`builder(activation, embedding_seed=..., tower_seed=...)` -> a built model."""

_logger = logging.getLogger(__name__)

_REPLICA_ARGUMENTS = ("activation", "embedding_seed", "tower_seed")
# Largest vocabulary whose ids a float input of that dtype holds exactly.
_EXACT_FLOAT_IDS = {"float16": 2**11, "bfloat16": 2**8, "float32": 2**24, "float64": 2**53}


class UserModelError(ValueError):
    """Your own model (`--model`) cannot be loaded or does not fit the data.

    Command lines report it in one line, without a traceback.
    """


def load_training_data(config: TrainingConfig) -> LoadedDataset:
    """The train and test splits and feature spec of `config`'s data.

    With `config.eval_dataset` the test split comes from those files,
    encoded with what the training rows fitted (`load_dataset`).
    """
    return load_dataset(
        config.dataset,
        eval_dataset=config.eval_dataset,
        train_examples=config.train_examples,
        eval_examples=config.eval_examples,
        seed=config.seed,
        max_vocab_size=config.max_vocab_size,
        label_column=config.label_column,
        categorical_columns=config.categorical_columns,
        dense_columns=config.dense_columns,
        label_threshold=config.label_threshold,
        data_dir=config.data_dir,
        on_error=config.on_error,
    )


def model_builder(config: TrainingConfig, feature_spec: FeatureSpec,
                  logit_output: bool = True) -> ModelBuilder:
    """Builds `config.model` for `feature_spec` with any activation and seeds.

    The tower widths `config.hidden_units` are the MLP's hidden layers, or
    the top MLP of DCN (both output logits). Any other `config.model` is your
    own model (`UserModelBuilder`), checked here against the data.

    Args:
        config: Names the model.
        feature_spec: The data's features.
        logit_output: Whether your own saved model's output sigmoid is
            removed (the project's trainers apply it in the loss); False
            keeps the output for its own compiled loss.

    Raises:
        UserModelError: Your own model cannot be used (see `UserModelBuilder`).
    """
    if config.model not in MODELS:
        return UserModelBuilder(config.model, feature_spec, logit_output=logit_output)
    units_argument = "hidden_units" if config.model == "mlp" else "top_units"

    def build(
        activation: ActivationLike, embedding_seed: int | None, tower_seed: int | None
    ) -> keras.Model:
        return build_model(
            config.model,
            feature_spec,
            activation=activation,
            embedding_dim=config.embedding_dim,
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **{units_argument: config.hidden_units},
        )

    return build


class UserModelBuilder:
    """Replicas of your own Keras model, checked against the data when made.

    Call it as `builder(activation, embedding_seed=..., tower_seed=...)`,
    like every model builder of the replica harness.

    Args:
        model: `PATH.keras` or `package.module:function` (see the module
            docstring for what each must provide).
        feature_spec: The data's features.
        logit_output: Whether a saved model's output sigmoid is removed
            (default; the project's trainers apply it in the loss) or kept.

    Attributes:
        report: What a build replaces (a `ConversionReport`: hidden ReLUs
            replaced, other activations kept, output layers); `None` for a
            function that applies the activation itself.
        ignored_features: The data's features the model does not take
            (never given to it; logged once).

    Raises:
        UserModelError: The file or function cannot be loaded; the model
            takes an input that is not a feature of the data; it fails on a
            batch shaped like the data; its output is not one logit per
            example; its initial weights do not follow the seeds; or it has
            no hidden ReLU for the activation under test to replace.
    """

    def __init__(self, model: str, feature_spec: FeatureSpec, logit_output: bool = True) -> None:
        self.model = model
        self.feature_spec = feature_spec
        self.logit_output = logit_output
        self.ignored_features: tuple[str, ...] = ()
        self._function: Callable | None = None
        self._template: keras.Model | None = None
        try:
            if model.endswith(".keras"):
                self._template = _load_keras_file(model)
            else:
                function = _import_function(model)
                if _takes_replica_arguments(function):
                    self._function = function
                else:
                    self._template = function(feature_spec)
            self.report = self._check()
        except ValueError as error:
            raise UserModelError(f"Cannot use model={model!r}: {error}") from error
        if self.ignored_features:
            described = {feature.name: feature.describe() for feature in feature_spec.categorical}
            _logger.warning(
                "Your model %s takes %d of the data's %d features; it ignores %s.", model,
                len(self._feature_names()) - len(self.ignored_features),
                len(self._feature_names()),
                ", ".join(described.get(name, name) for name in self.ignored_features))

    def __call__(
        self,
        activation: ActivationLike,
        embedding_seed: int | None = None,
        tower_seed: int | None = None,
    ) -> keras.Model:
        if self._function is not None:
            model = self._function(self.feature_spec, activation=activation,
                                   embedding_seed=embedding_seed, tower_seed=tower_seed)
        else:
            model = self._rebuild(activation, embedding_seed, tower_seed)[0]
        return self._taking_every_feature(model)

    def _rebuild(self, activation, embedding_seed, tower_seed
                 ) -> tuple[keras.Model, ConversionReport]:
        return rebuild(self._template, activation, seeds=(embedding_seed, tower_seed),
                       logit_output=self.logit_output)

    def saved_compile_config(self) -> dict:
        """The compile arguments your model comes with (`model.get_compile_config()`).

        A `.keras` file's are those it was saved with; a function's those of
        the model it returns. Builds compile with them (`compile_from_config`)
        to train with your own optimizer, loss, metrics and schedule.

        Raises:
            UserModelError: The file or function gives no compiled model, or
                its compile arguments cannot be loaded (e.g. an unregistered
                custom loss).
        """
        try:
            if self.model.endswith(".keras"):
                with warnings.catch_warnings():  # only the arguments matter, not its state
                    warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
                    model = keras.saving.load_model(self.model)  # compiled, if saved so
            elif self._function is not None:
                model = self._function(self.feature_spec, activation="relu", embedding_seed=0,
                                       tower_seed=0)
            else:
                model = self._template
        except Exception as error:  # an unknown loss or optimizer: Keras raises many kinds
            raise UserModelError(f"Cannot use model={self.model!r}: its compile arguments "
                                 f"cannot be loaded: {error}") from error
        config = model.get_compile_config() if getattr(model, "compiled", False) else None
        if not config or config.get("optimizer") is None or config.get("loss") is None:
            made = "file was saved" if self.model.endswith(".keras") else "function returns a model"
            raise UserModelError(
                f"model={self.model!r} is not compiled with an optimizer and a loss, but "
                "--trainer=keras trains it with its own compile arguments: the "
                f"{made} without model.compile(optimizer, loss, ...); compile it first, or use "
                "--trainer=builtin (Adam at --learning_rate, binary cross-entropy).")
        return config

    def _taking_every_feature(self, model: keras.Model) -> keras.Model:
        """`model`, or if it ignores features, a model of every feature that calls it.

        Keras would match a features dict with extra keys to a dict of inputs
        by position, feeding features to the wrong inputs: the wrapper hands
        the model exactly the inputs it declares.
        """
        if not self.ignored_features:
            return model
        inputs = feature_inputs(self.feature_spec)
        structure = model.input
        if isinstance(structure, dict):
            taken = {key: inputs[key] for key in structure}
        else:
            taken = keras.tree.map_structure(lambda tensor: inputs[tensor.name], structure)
        return keras.Model(inputs, model(taken), name=f"{model.name}_of_the_data")

    # -- checks -------------------------------------------------------------

    def _check(self) -> ConversionReport | None:
        if self._template is None:
            first, report = self._function(self.feature_spec, activation="relu",
                                           embedding_seed=0, tower_seed=0), None
            if not isinstance(first, keras.Model):
                raise ValueError(f"the function must return a Keras model. Received: {first!r}")
        else:
            first, report = self._rebuild("relu", 0, 0)
            if not report.replaced:
                raise ValueError(
                    "it has no hidden ReLU for the activation under test to replace, so every "
                    f"activation would train the same model (hidden activations: "
                    f"{dict(report.kept) or 'none'}; output layers: {list(report.outputs)})."
                )
        self._check_inputs(first)
        first = self._taking_every_feature(first)
        self._check_output(first)
        self._check_seeds(first)
        return report

    def _feature_names(self) -> list[str]:
        return [*self.feature_spec.categorical_names, DENSE_FEATURE_NAME]

    def _check_inputs(self, model: keras.Model) -> None:
        """Checks the inputs' names and id dtypes; sets `ignored_features`."""
        try:
            structure = model.input
        except (AttributeError, ValueError):  # subclassed: the probe batch checks it
            return
        if isinstance(structure, dict):
            inputs = dict(structure)
        else:
            inputs = {tensor.name: tensor for tensor in keras.tree.flatten(structure)}
        expected = self._feature_names()
        unknown = sorted(set(inputs) - set(expected))
        if unknown:
            renamed = {column: key for column, key in self.feature_spec.columns.items()
                       if column != key}
            raise ValueError(
                "the model's inputs do not match the data's features. "
                f"Model inputs: {sorted(inputs)}; data features: {expected}"
                + (f" (from the columns {renamed})" if renamed else "")
                + f"; missing from the data: {unknown}; not taken by the model: "
                f"{sorted(set(expected) - set(inputs))}. Name every keras.Input after a feature "
                "(a model may leave features out)."
            )
        self.ignored_features = tuple(name for name in expected if name not in inputs)
        for name, vocab_size in self.feature_spec.vocab_sizes.items():
            if name not in inputs:
                continue
            dtype = keras.backend.standardize_dtype(inputs[name].dtype)
            exact = _EXACT_FLOAT_IDS.get(dtype)
            if not ("int" in dtype or (exact is not None and vocab_size <= exact)):
                raise ValueError(
                    f"input {name!r} takes ids in [0, {vocab_size}), which {dtype} cannot hold "
                    f"exactly. Declare it keras.Input(shape=(), dtype='int64', name={name!r})."
                )

    def _check_output(self, model: keras.Model) -> None:
        batch = {name: np.array([0, size - 1], np.int64)
                 for name, size in self.feature_spec.vocab_sizes.items()}
        batch[DENSE_FEATURE_NAME] = np.zeros((2, self.feature_spec.num_dense), np.float32)
        try:
            output = model(batch, training=False)
        except Exception as error:  # Keras and TF raise many kinds; all mean a misfit
            layout = ", ".join(
                [f"{name}: int64 [batch] in [0, {size})"
                 for name, size in self.feature_spec.vocab_sizes.items()]
                + [f"{DENSE_FEATURE_NAME}: float32 [batch, {self.feature_spec.num_dense}]"])
            raise ValueError(
                f"the model fails on a batch shaped like the data ({layout}): {error}"
            ) from error
        if not keras.tree.is_nested(output) and tuple(output.shape) in ((2,), (2, 1)):
            if np.all(np.isfinite(keras.ops.convert_to_numpy(output))):
                return
            raise ValueError("the model's output on a batch of the data is not finite.")
        shapes = keras.tree.map_structure(lambda t: tuple(t.shape), output)
        raise ValueError(
            "the model must return one click logit per example, of shape [batch, 1] or "
            f"[batch]. Received: output shape(s) {shapes} for a batch of 2"
        )

    def _check_seeds(self, first: keras.Model) -> None:
        same = _differing_weights(first, self("relu", 0, 0))
        if same:
            raise ValueError(
                "two builds with the same seeds differ in weights "
                f"{same}: their initializers do not follow embedding_seed and tower_seed "
                "(e.g. a custom layer whose get_config() lacks its initializer)."
            )
        if self._function is not None and not _differing_weights(first, self("relu", 1, 1)):
            raise ValueError(
                "the function's models do not depend on embedding_seed or tower_seed: "
                "replicas would not differ by their initial weights."
            )


def feature_inputs(spec: FeatureSpec) -> dict[str, keras.KerasTensor]:
    """Symbolic inputs of every feature of the data, keyed and named as its features dict."""
    inputs = {name: keras.Input(shape=(), dtype="int64", name=name)
              for name in spec.categorical_names}
    inputs[DENSE_FEATURE_NAME] = keras.Input(shape=(spec.num_dense,), dtype="float32",
                                             name=DENSE_FEATURE_NAME)
    return inputs


def _load_keras_file(path: str) -> keras.Model:
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a damaged file or unknown layer: Keras raises many kinds
        raise ValueError(f"cannot load the Keras file: {error}") from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"the file holds a {type(model).__name__}, not a Keras model.")
    return model


def _import_function(reference: str) -> Callable:
    module_name, _, function_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import module {module_name!r} (is it installed or on PYTHONPATH?): {error}"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"module {module_name!r} has no function {function_name!r}.")
    return function


def _takes_replica_arguments(function: Callable) -> bool:
    """Whether `function` builds replicas itself: `(feature_spec, activation, seeds...)`."""
    parameters = inspect.signature(function).parameters
    named = [name for name in _REPLICA_ARGUMENTS if name in parameters]
    if named and len(named) < len(_REPLICA_ARGUMENTS):
        raise ValueError(
            "a model function takes either (feature_spec) or (feature_spec, activation, "
            f"embedding_seed, tower_seed). Received parameters: {list(parameters)}"
        )
    return bool(named)


def _differing_weights(first: keras.Model, second: keras.Model) -> list[str]:
    """Paths of weights that differ between two builds of one architecture."""
    return [a.path for a, b in zip(first.weights, second.weights, strict=True)
            if not np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))]
