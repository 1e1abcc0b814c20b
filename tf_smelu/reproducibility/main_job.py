"""The main job's `keras` row trainer: every replica trained by its model's own `fit`.

With `--trainer=keras` (or `--trainer=auto` and `--remedies`), the main job
(`examples/recsys_reproducibility.py`) trains each row through a
`ReplicaStudy`: R replicas, each one `model.fit` over the in-memory training
split, predicted on the held-out split. What is compiled:

* `--model=mlp|dcn`: Adam at `--learning_rate`, binary cross-entropy on the
  logits, AUC.
* your own `--model=PATH.keras` or `module:function`: the optimizer, loss,
  metrics and learning-rate schedule it was saved (or returned) compiled
  with (`UserModelBuilder.saved_compile_config`); its output is kept as it is.

The main job's sources map onto the study's: `init`, `tower_init` and
`embedding_init` vary the study's initialization seed, from which the
varying one(s) of the model's two seeds (embedding tables, everything else)
are derived while the other stays pinned; `order` gives each replica its own
permutation of the training rows (`make_dataset(order_seed)`);
`op_nondeterminism` leaves TensorFlow's op determinism off. `stale` and
multi-worker update modes exist only in the project's own loops
(`CTRExperimentConfig` refuses them here). Rows carry `trainer: "keras_fit"`,
`steps`, `params`, `train_seconds`, the `optimizer` the replicas trained
with, and the relative PD by item popularity, like the builtin trainer's.
Registered into `tf_smelu.experiment.runner.TRAINERS` when imported.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_smelu.data import LoadedDataset
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment.config import CTRExperimentConfig
from tf_smelu.experiment.harness import summarize_predictions
from tf_smelu.experiment.runner import (
    EVAL_BATCH_SIZE,
    RELU,
    TRAINERS,
    item_popularity_groups,
    load_checked_data,
)
from tf_smelu.experiment.seeds import replica_seeds
from tf_smelu.registry import Activation
from tf_smelu.remedies import Recipe
from tf_smelu.remedies.base import PREVIOUS
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.problem import (
    UserModelBuilder,
    UserModelError,
    feature_inputs,
    model_builder,
)
from tf_smelu.training.replicas import released_custom_gradients
from tf_smelu.reproducibility.study import ReplicaStudy

INIT_SOURCES = ("init", "embedding_init", "tower_init")
"""Main-job sources that vary initial weights: the study's `init`."""

# Per-replica logs of the replicas trained now only: rows that add replicas leave them out.
_PER_REPLICA_FIELDS = ("eval_metrics", "fit_logs", "train_loss")


def builtin_compile_config(training: TrainingConfig) -> dict:
    """The compile arguments of `--model=mlp|dcn` (logit outputs) under the keras trainer."""
    return {
        "optimizer": keras.optimizers.serialize(keras.optimizers.Adam(training.learning_rate)),
        "loss": keras.losses.serialize(keras.losses.BinaryCrossentropy(from_logits=True)),
        "metrics": [keras.metrics.serialize(keras.metrics.AUC(from_logits=True, name="auc"))],
        "jit_compile": training.jit_compile,
    }


def with_learning_rate(config: dict, learning_rate: float, model: str) -> dict:
    """`config` (compile arguments) with its optimizer's learning rate replaced.

    Raises:
        UserModelError: The optimizer has a learning-rate schedule or no
            learning rate of its own (e.g. a wrapper), naming `model`.
    """
    # A copy: keras.optimizers.get rewrites a config dict it is given (its class name).
    optimizer = keras.optimizers.serialize(keras.optimizers.get(copy.deepcopy(config["optimizer"])))
    rate = optimizer["config"].get("learning_rate")
    if not isinstance(rate, (int, float)):
        held = (f"a learning-rate schedule ({rate.get('class_name', rate)})"
                if isinstance(rate, dict) else "no learning rate of its own")
        raise UserModelError(
            f"Cannot set the learning rate of model={model!r} to {learning_rate:g}: its "
            f"optimizer {optimizer['class_name']} has {held}; a tuned rate replaces a constant "
            "one only (compile it with a number, or leave the rate as compiled).")
    optimizer["config"] = {**optimizer["config"], "learning_rate": float(learning_rate)}
    return {**config, "optimizer": optimizer}


def describe_optimizer(optimizer: keras.optimizers.Optimizer) -> dict[str, object]:
    """`{"class_name", "learning_rate"}` of a compiled model's optimizer (a schedule: its class)."""
    rate = optimizer.get_config().get("learning_rate")
    return {"class_name": type(optimizer).__name__,
            "learning_rate": rate.get("class_name") if isinstance(rate, dict) else rate}


def study_sources(sources: Sequence[str]) -> tuple[str, ...]:
    """The `ReplicaStudy` sources of main-job `sources` (all initializations are its `init`).

    Raises:
        ValueError: A source the study cannot vary (`stale`).
    """
    unknown = sorted(set(sources) - {*INIT_SOURCES, "order", "op_nondeterminism"})
    if unknown:
        raise ValueError(f"The keras trainer cannot vary {unknown} (the builtin trainer's own "
                         f"loop only). Received: sources={list(sources)}")
    return tuple(sorted({"init" if source in INIT_SOURCES else source for source in sources}))


def model_seeds(sources: Sequence[str], seed: int, base_seed: int) -> tuple[int, int]:
    """`(embedding_seed, tower_seed)` of a model the study builds with initialization `seed`.

    A seed whose source varies (or both, when no initialization varies: the
    study's `seed` is then one for all replicas, and only an ensemble's
    members differ) is derived from `seed`; the other stays pinned to
    replica 0's under `base_seed`, as in the builtin trainer.
    """
    pinned = replica_seeds((), 1, base_seed)[0]
    varying = replica_seeds(("init",), 1, seed)[0]
    initialized = set(sources) & set(INIT_SOURCES)
    embedding = not initialized or bool(initialized & {"init", "embedding_init"})
    tower = not initialized or bool(initialized & {"init", "tower_init"})
    return (varying.embedding_seed if embedding else pinned.embedding_seed,
            varying.tower_seed if tower else pinned.tower_seed)


class KerasFitTrainer:
    """The `keras` row trainer (`tf_smelu.experiment.runner.RowTrainer`): rows by `model.fit`.

    Loads the data once; every row is one `ReplicaStudy` over it. The
    teacher (`distill`) and the previous model (`anchor`, `warm_start`) train
    once per main job, not once per row: rows that would train the same one
    (the same activation, sources, compile arguments with learning rate, and
    seed) share it (`ReplicaStudy(trained_targets=...)`), bit for bit as if
    each row had trained its own. A row that reuses one records its cost as
    measured when it trained (`setup_seconds`, `setup_steps`) and names it in
    `setup_reused`: costs compare the same whichever row trained it.

    Args:
        config: The main job's configuration (`row_trainer` "keras").
        run: The run's rows (for log lines and the data's details).
        data: The data, loaded already (`load_checked_data`); None: loaded here.

    Raises:
        UserModelError: Your own model is not compiled, its compile
            arguments cannot be loaded or do not compile it (e.g. a custom
            `compile`), or a remedy of `config.remedies` cannot train it (it
            cannot change its loss or optimizer; `distill`, `anchor` or
            `codistill` on a model that cannot train stacked with its pulls,
            `stacking.unstackable_reason`): all before the first training step.
    """

    def __init__(self, config: CTRExperimentConfig, run,
                 data: LoadedDataset | None = None) -> None:
        training = config.training
        data = load_checked_data(training, run) if data is None else data
        self._config = config
        self._run = run
        self._train, self._earlier = _refresh_split(data.train, config.remedies, run)
        self._held_out = (data.test.features, data.test.labels)
        self._eval_groups = item_popularity_groups(data)
        self._feature_spec = data.feature_spec
        self._builder = model_builder(training, data.feature_spec, logit_output=False)
        self._user_model = isinstance(self._builder, UserModelBuilder)
        self._compile_config = (self._builder.saved_compile_config() if self._user_model
                                else builtin_compile_config(training))
        self._fit_kwargs = ({"epochs": training.epochs} if training.steps is None
                            else {"epochs": 1, "steps_per_epoch": training.steps})
        # What determines a row's teacher and previous model -> them, once trained (see row).
        self._trained_targets: dict[tuple[str, ...], dict] = {}
        self._check_compiles()

    @released_custom_gradients()  # building traces the model in a scratch graph
    def _check_compiles(self) -> None:
        """One build compiled as every row will be, and the study's check of every remedy."""
        model = self._builder(RELU.to_keras(), embedding_seed=0, tower_seed=0)
        try:
            model.compile_from_config(copy.deepcopy(self._compile_config))
            if not getattr(model, "compiled", False):  # a custom compile(): Keras only warns
                raise ValueError("its class overrides compile(), so compile_from_config() does "
                                 "not compile it")
        except Exception as error:  # deserializing compile arguments raises many kinds
            raise UserModelError(
                f"Cannot train model={self._config.training.model!r} with its compile "
                f"arguments: {error}") from error
        if self._config.remedies:
            # The rows' own check (compile changes, pulls), for every remedy at once: none
            # waits for the rows before it.
            study = self._study(RELU, (), self._compile_config, self._config.training.seed,
                                replicas=2, first=0, described={})
            try:
                study.check_remedies(self._config.remedies)
            except ValueError as error:
                raise UserModelError(
                    f"Cannot train model={self._config.training.model!r} with --remedies: "
                    f"{error}") from error

    def _make_dataset(self, order_seed: int, examples=None) -> tf.data.Dataset:
        """The training split (or `examples`) in the order of `order_seed` (repeated for `--steps`)."""
        examples = self._train if examples is None else examples
        dataset = batched_dataset(examples.features, examples.labels,
                                  self._config.training.batch_size, order_seed)
        return dataset if self._config.training.steps is None else dataset.repeat()

    def _build(self, activation: Activation, sources: Sequence[str], compile_config: dict,
               base_seed: int, described: dict, seed: int) -> keras.Model:
        """`build_model(seed)` of a row's study: seeded, with the row's activation, compiled."""
        embedding_seed, tower_seed = model_seeds(sources, seed, base_seed)
        model = self._builder(activation.to_keras(), embedding_seed=embedding_seed,
                              tower_seed=tower_seed)
        if not self._user_model:
            # mlp and dcn are subclassed: a Functional model over them has known inputs,
            # so that a row's replicas can train side by side (`stacking`).
            inputs = feature_inputs(self._feature_spec)
            model = keras.Model(inputs, model(inputs), name=model.name)
        model.compile_from_config(copy.deepcopy(compile_config))
        described.update(describe_optimizer(model.optimizer))
        return model

    def _study(self, activation: Activation, sources: Sequence[str], compile_config: dict,
               seed: int, *, replicas: int, first: int, described: dict,
               side_by_side: bool | str = False) -> ReplicaStudy:
        """The `ReplicaStudy` of a row: replicas `first..replicas-1` of `activation`.

        Its teacher and previous model are shared with every earlier row that
        has the same ones (`_targets_key`).
        """
        return ReplicaStudy(
            functools.partial(self._build, activation, sources, compile_config, seed, described),
            self._make_dataset, self._held_out, replicas=replicas - first,
            sources=study_sources(sources), seed=seed, first_replica=first,
            earlier_data=(None if self._earlier is None
                          else functools.partial(self._make_dataset, examples=self._earlier)),
            predict_batch_size=EVAL_BATCH_SIZE, side_by_side=side_by_side,
            trained_targets=self._trained_targets.setdefault(
                _targets_key(activation, sources, compile_config, seed), {}),
            **self._fit_kwargs)

    def row(self, recipe: Recipe, sources: Sequence[str], replicas: int, *,
            seed: int | None = None, learning_rate: float | None = None,
            previous: np.ndarray | None = None,
            on_predictions: Callable[[np.ndarray], None] | None = None) -> dict:
        """Trains one row by `model.fit`; see `tf_smelu.experiment.runner.RowTrainer.row`.

        Raises:
            UserModelError: `learning_rate` is given for an optimizer with a
                schedule (see `with_learning_rate`).
            ValueError: `previous` holds `replicas` or more replicas.
            tf_smelu.training.replicas.DivergedError: A held-out prediction
                is NaN or infinite.
        """
        training = self._config.training
        seed = training.seed if seed is None else seed
        first = 0 if previous is None else len(previous)
        if first >= replicas:
            raise ValueError(f"`previous` holds {first} replicas; nothing left of "
                             f"replicas={replicas}.")
        compile_config = self._compile_config
        if learning_rate is not None:
            compile_config = with_learning_rate(compile_config, learning_rate, training.model)
        activation = recipe.activation or RELU
        described: dict[str, object] = {}
        # Side by side only where every row of the run can be, so train_seconds compare.
        side_by_side = ("auto" if "order" not in sources and not self._config.remedies
                        and replicas - first > 1 else False)
        study = self._study(activation, sources, compile_config, seed, replicas=replicas,
                            first=first, described=described, side_by_side=side_by_side)
        if self._config.progress:
            self._run.log(f"Training {recipe.label(activation.label)} "
                          f"[{'+'.join(sources) or 'none'}]: replicas {first}..{replicas - 1}, "
                          "each by model.fit")
        probabilities, fields = study.train(Recipe(None, recipe.remedies))
        [new] = probabilities.values()  # the main job's models have one output (checked)
        probabilities = new if previous is None else np.concatenate([previous, new])
        row = summarize_predictions(activation, sources, probabilities, self._held_out[1],
                                    seed=seed, eval_groups=self._eval_groups)
        if previous is not None:
            fields = {k: v for k, v in fields.items() if k not in _PER_REPLICA_FIELDS}
        row.update(fields, optimizer=described)
        if recipe.remedies:
            row.update(remedy=recipe.remedy_spec, label=recipe.label(row["label"]))
        if on_predictions is not None:
            on_predictions(probabilities)
        return row


def _targets_key(activation: Activation, sources: Sequence[str], compile_config: dict,
                 seed: int) -> tuple[str, ...]:
    """What, besides the trainer's data and fit arguments, a row's trained targets depend on.

    The study builds them with the row's `build_model` (its activation, and
    the model seeds `model_seeds` derives from the sources), compiled as
    the row's replicas (learning rate included), seeded from the row's
    `seed`; the sources also switch op determinism.
    """
    return (str(activation), "+".join(sorted(sources)),
            json.dumps(compile_config, sort_keys=True, default=repr), str(seed))


def _refresh_split(train, remedies: Sequence[Recipe], run) -> tuple[object, object | None]:
    """`(new, earlier)` training rows: halves when a remedy needs the previous model.

    `anchor` and `warm_start` model a daily retrain: the previous model
    trained on earlier data, the retrain on new data. The first half of the
    training rows (in file order: by time for a log sorted by time) is the
    earlier data, and *every* row of the run trains on the second half, so
    that the remedies are compared with a baseline trained on the same data.
    """
    if not any(PREVIOUS in recipe.targets for recipe in remedies):
        return train, None
    half = len(train) // 2
    run.log(f"anchor/warm_start: the previous model trains on the first {half:,} training "
            f"rows (the earlier data), every row of this run on the other "
            f"{len(train) - half:,} (the new data)")
    return train.take(slice(half, None)), train.take(slice(0, half))


TRAINERS["keras"] = KerasFitTrainer
