"""`ReplicaStudy`: R replicas of a user's own compiled model, trained by its own `fit`.

The in-process harness (`tf_smelu.experiment.run_replicas`) trains the
project's ranking models side by side in one loop of its own. A study trains
*your* model the way you train it: `build_model(seed)` returns the model
compiled as in production (optimizer, loss, metrics, learning-rate
schedule), and each replica is one ordinary `model.fit(...)` with your fit
arguments (epochs, callbacks, class weights, ...), one after another; or,
when the data order is pinned and the model allows it, all R side by side in
one `fit` of a model holding R copies (`side_by_side`, see
`tf_smelu.reproducibility.stacking`: same predictions, less time). The
replicas' held-out predictions then become rows of `results.json`
(`tf_smelu.experiment.summarize_predictions`), which
`tf_smelu.experiment.report` prints and plots as it does the main job's.

What varies between replicas (`sources`), everything else being pinned:

* `"init"`: before `build_model(seed)` the study calls
  `keras.utils.set_random_seed(seed)`, which seeds Python's `random`, NumPy
  and TensorFlow's global seed, so every *unseeded* initializer, Dropout
  mask and other random layer gets its seed from it; the same `seed` is
  passed to `build_model` for anything you seed by hand. Layers or
  initializers you gave a fixed seed of your own stay fixed (use the
  argument to vary them). With `"init"` off, every replica gets the same
  seed, so Dropout masks are pinned too: they follow the same seed.
* `"order"`: each replica reads the training data in its own order. A
  `tf.data.Dataset` is wrapped in `dataset.shuffle(buffer,
  seed=order_seed, reshuffle_each_iteration=True)` (its elements, i.e. its
  batches if it is batched, are shuffled; `buffer` defaults to the
  dataset's cardinality, and data of unknown or infinite cardinality need
  `shuffle_buffer=` or a function); or pass `make_dataset(order_seed)`, a
  function returning the dataset for a seed, to shuffle examples your own
  way. With `"order"` off the dataset is read as given (a function gets the
  same seed for every replica: seed your shuffles with it); a dataset whose
  first batch differs when it is read again (it reshuffles itself, or can
  be read only once) is refused then, since its order would not be pinned.
* `"op_nondeterminism"`: TensorFlow's op determinism stays off. Without it,
  `tf.config.experimental.enable_op_determinism()` is on while the study
  trains and predicts, and the previous setting is restored afterwards, so
  that with no source on (`sources=()`) replicas are bit-identical (PD
  exactly 0) on the TensorFlow backend: the control of the study.

`compare` also runs remedies (`tf_smelu.remedies`) through their one
interface, without knowing which it runs: the seeds of a replica's members
(ensembles) and of the peers trained with each member in one `fit`
(co-distillation), compile-argument changes (EMA, label smoothing), loss
terms pulling a member towards another model's predictions (distillation
towards a teacher, anchoring to the previous model; added by `stacking`),
and the weights every member starts from (warm start). The models remedies
learn from are trained once per study, each with a seed of its own
(`derived_seed(seed, 5, 0)`: the teacher, on the training data;
`derived_seed(seed, 6, 0)`: the previous model, on `earlier_data`), and
reused by every spec.

The global seeds (Python, NumPy, TensorFlow) are left as the last replica
set them. A seeded tf.data shuffle also depends on TensorFlow's global seed,
so the study sets that to the replica's `order_seed` just before it makes
the training data: varying `"init"` never varies the order. `fit` never shuffles a `tf.data.Dataset` itself (its `shuffle`
argument applies to arrays only), so data order comes only from the
dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_smelu import metrics
from tf_smelu.common import derived_seed
from tf_smelu.conversion import rebuild
from tf_smelu.experiment.costs import with_costs
from tf_smelu.experiment.harness import summarize_predictions
from tf_smelu.experiment.seeds import op_determinism, parse_sources, replica_seeds
from tf_smelu.registry import Activation
from tf_smelu.remedies import Recipe
from tf_smelu.remedies.base import PEERS, PREVIOUS, TEACHER
from tf_smelu.training.replicas import (
    DivergedError,
    expected_retracing,
    released_custom_gradients,
)
from tf_smelu.validation import is_int, require_positive_int
from tf_smelu.reproducibility import outputs as outputs_lib
from tf_smelu.reproducibility import stacking

_logger = logging.getLogger(__name__)

STUDY_SOURCES = ("init", "order", "op_nondeterminism")
"""What a `ReplicaStudy` can vary between replicas (see the module docstring)."""

BuildModel = Callable[[int], keras.Model]
MakeDataset = Callable[[int], tf.data.Dataset]

# fit arguments the study sets itself: the data, per replica.
_STUDY_FIT_ARGUMENTS = ("x", "y", "sample_weight", "validation_split", "shuffle")


@dataclasses.dataclass(frozen=True)
class _AsBuilt:
    """Stands for the activation of rows of the model as `build_model` returns it."""

    name: str = "model"
    beta: None = None
    label: str = "model"

    def __str__(self) -> str:
        return self.name


@dataclasses.dataclass
class _Replicas:
    """What R trained replicas leave: held-out predictions and their logs."""

    predictions: dict[str, list[np.ndarray]]
    evaluations: list[dict[str, float]]
    histories: list[dict[str, float]]
    steps: list[int]
    seconds: float
    labels: dict[str, np.ndarray] | None = None
    side_by_side: bool = False
    params: list[int] = dataclasses.field(default_factory=list)  # per replica
    setup_seconds: float = 0.0  # training the models the remedies learn from (once per study)
    setup_steps: int = 0  # their optimizer steps
    setup_reused: list[str] = dataclasses.field(default_factory=list)  # targets trained earlier
    flops: int | None = None  # forward FLOPs per example of one replica (None: not measured)


@dataclasses.dataclass(frozen=True)
class _Target:
    """A trained model remedies learn from (`tf_smelu.remedies.base.TARGETS`), and its cost."""

    model: keras.Model
    seconds: float
    steps: int


# derived_seed kinds of the trained targets' seeds: never a replica's (kinds 1-4) or a member's.
_TARGET_SEED_KINDS = {TEACHER: 5, PREVIOUS: 6}


class ReplicaStudy:
    """Trains R replicas of your compiled model with its own `fit`; PD rows.

    Examples:
        ```python
        import keras
        import numpy as np
        import tensorflow as tf
        from tf_smelu.reproducibility import ReplicaStudy

        rng = np.random.default_rng(0)
        x = rng.normal(size=(2000, 8)).astype("float32")
        y = (x[:, 0] + rng.normal(size=2000) > 0).astype("float32")
        train = tf.data.Dataset.from_tensor_slices((x[:1500], y[:1500])).batch(64)
        held_out = (x[1500:], y[1500:])

        def build_model(seed):
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu"),
                                      keras.layers.Dense(1, "sigmoid")])
            model.compile("adam", "binary_crossentropy", metrics=["auc"])
            return model

        study = ReplicaStudy(build_model, train, held_out, replicas=3,
                             sources=("init",), epochs=1)
        rows = study.run()                        # the model as built
        rows += study.compare(["relu", "smelu:1"])  # its hidden ReLUs swapped
        print(rows[0]["rel_pd"], rows[0]["rel_pd_ci"])
        ```

    Args:
        build_model: `build_model(seed)` returns a new *compiled*
            `keras.Model` (a Functional, Sequential or subclassed model; for
            `compare`, one that `tf_smelu.convert_activations` can rebuild).
        train_data: The training data: a batched `tf.data.Dataset` that can
            be iterated again for every replica, or `make_dataset(order_seed)`
            returning one.
        held_out: Held-out data, the same for all replicas: a batched
            `tf.data.Dataset` of `(features, labels)` or a tuple
            `(features, labels)` of arrays (dicts/lists per input or output
            as the model takes them). It is read into memory once.
        replicas: R >= 2.
        sources: What varies between replicas, some of `STUDY_SOURCES`
            (`()`: nothing; replicas are then bit-identical).
        seed: Base seed of the replicas' seeds (replica seeds depend only on
            it and on the replica's index).
        shuffle_buffer: With `"order"` and a dataset: the shuffle buffer in
            elements (default: the dataset's cardinality).
        from_logits: Whether the model outputs logits (one bool, or one per
            output name); `None` reads it from the compiled loss.
        predict_batch_size: Batch size of the held-out predictions.
        side_by_side: Whether the R replicas train side by side in one `fit`
            (one model holding R copies over shared inputs,
            `tf_smelu.reproducibility.stacking`), which needs the data order
            pinned (no `"order"` source). `"auto"` (default): where the model
            and fit arguments allow it, else one replica after another, with
            one logged line saying why. `True`: a `ValueError` where they do
            not. `False`: always one after another.
        first_replica: Index of the first replica trained: the study
            trains replicas `first_replica .. first_replica + replicas - 1`
            (a replica's seeds depend only on its index and `seed`), to add
            replicas to ones trained earlier (see `train`); `replicas` may
            then be 1.
        strategy: A `tf.distribute` strategy (TensorFlow backend) whose
            `scope()` every replica is built, converted and compiled in, so
            that its `fit` runs under it: `MirroredStrategy` (devices of one
            machine) or `MultiWorkerMirroredStrategy` on one worker. `None`:
            the default strategy.
        earlier_data: The data *before* the training data (as `train_data`
            takes it), for the model-refresh remedies of `compare`
            (`anchor:LAMBDA`, `warm_start`): one model of the baseline, the
            "previous model", trains on it once (seeded, in a pinned order).
            None: those remedies are refused.
        trained_targets: Where the study keeps the teacher and the previous
            model once trained (it adds to it): pass one dict to several
            studies of the same `build_model`, data, `earlier_data`,
            `seed`, sources and fit arguments, and each such model trains
            once for all of them, as it would for one study (a later
            study's rows say so: `setup_reused`). None: the study's own.
        **fit_kwargs: Passed to every replica's `model.fit` unchanged
            (`epochs`, `steps_per_epoch`, `callbacks`, `class_weight`,
            `validation_data`, ...; `verbose` defaults to 0). Callbacks are
            shared by the replicas: one that writes files (e.g.
            `ModelCheckpoint`) overwrites them replica after replica.

    Raises:
        ValueError: `replicas < 2`, an unknown source, a fit argument `fit`
            does not take (or one the study sets: `x`, `y`, ...), training
            data that is neither a dataset nor a function, `"order"` on a
            dataset of unknown or infinite cardinality without
            `shuffle_buffer`, held-out data that is not batched
            `(features, labels)`, or a `strategy` that is no
            `tf.distribute.Strategy`, under another backend than TensorFlow,
            or a `MultiWorkerMirroredStrategy` of several workers;
            `earlier_data` that is neither a dataset nor a function, or an
            empty one.
    """

    def __init__(
        self,
        build_model: BuildModel,
        train_data: tf.data.Dataset | MakeDataset,
        held_out: tf.data.Dataset | tuple[object, object],
        *,
        replicas: int = 4,
        sources: Sequence[str] = ("init",),
        seed: int = 0,
        shuffle_buffer: int | None = None,
        from_logits: bool | Mapping[str, bool] | None = None,
        predict_batch_size: int = 1024,
        side_by_side: bool | str = "auto",
        strategy: tf.distribute.Strategy | None = None,
        first_replica: int = 0,
        earlier_data: tf.data.Dataset | MakeDataset | None = None,
        trained_targets: MutableMapping[tuple[str, str], _Target] | None = None,
        **fit_kwargs: object,
    ):
        if not callable(build_model):
            raise ValueError(f"`build_model` must be a function `build_model(seed)` returning a "
                             f"compiled keras.Model. Received: build_model={build_model!r}")
        if not is_int(first_replica) or first_replica < 0:
            raise ValueError(f"`first_replica` must be an integer >= 0. "
                             f"Received: first_replica={first_replica!r}")
        least = 1 if first_replica else 2  # added to earlier replicas, one is a comparison
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < least:
            raise ValueError(f"`replicas` must be an integer >= {least}. "
                             f"Received: replicas={replicas!r}")
        self.build_model = build_model
        self.replicas = replicas
        self.first_replica = int(first_replica)
        self.sources = _check_sources(sources)
        if not is_int(seed):
            raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}")
        self.seed = int(seed)
        self.from_logits = from_logits
        self.predict_batch_size = require_positive_int("predict_batch_size", predict_batch_size)
        if side_by_side not in ("auto", True, False):
            raise ValueError(f"`side_by_side` must be 'auto', True or False. "
                             f"Received: side_by_side={side_by_side!r}")
        self.side_by_side = side_by_side
        self.fit_kwargs = _check_fit_kwargs(fit_kwargs)
        self.strategy = _check_strategy(strategy)
        self._make_dataset = _dataset_factory(train_data, self.sources, shuffle_buffer)
        self._features, self._labels = _read_held_out(held_out)
        # The data before the training data, read in its own pinned order (one model trains on it).
        self._make_earlier = None if earlier_data is None else _dataset_factory(
            earlier_data, (), None, "earlier_data")
        # (target, baseline) -> trained once
        self._targets = {} if trained_targets is None else trained_targets

    @property
    def config(self) -> dict[str, object]:
        """The study's settings, for `tf_smelu.experiment.report(rows, study.config, ...)`."""
        fit = {k: v if isinstance(v, (int, float, str, bool, type(None)))
               else [type(c).__name__ for c in v] if k == "callbacks" else repr(v)
               for k, v in self.fit_kwargs.items()}
        return {"trainer": "keras_fit", "replicas": self.replicas,
                "sources": ["+".join(self.sources) or "none"], "seed": self.seed, **fit}

    def run(self) -> list[dict[str, object]]:
        """Trains R replicas of the model as `build_model` returns it.

        Returns:
            One row per model output, with `activation` `"model"` (the
            model's own activations). Rows have the fields of
            `tf_smelu/experiment/results.schema.json` (per-replica `aucs`, `abs_pd`,
            `rel_pd` with its replica-bootstrap `rel_pd_ci`, `rel_pd_pairs`,
            `train_loss`, `steps`, `train_seconds` of all fits) and also
            `output` (its name), `trainer` (`"keras_fit"`), `side_by_side`
            (whether the replicas trained in one `fit`), `eval_metrics`
            (the compiled metrics on the held-out data, per replica) and
            `fit_logs` (each replica's last-epoch `fit` logs). A multi-class
            output's AUC, log loss and PD are over its N x K one-vs-rest
            probabilities, and it adds `classes`, `top1_pd`, `top1_pd_ci`,
            `l1_pd` and `l1_pd_ci`.

        Raises:
            ValueError: See `ReplicaStudy`; also a `build_model` that returns
                no compiled `keras.Model`, or training data that does not give
                every replica the same number of steps (a dataset that can be
                iterated only once); before training, held-out features the
                model cannot predict, or a binary output's held-out labels
                that are not 0/1 of both classes.
            tf_smelu.training.replicas.DivergedError: A replica's held-out
                predictions are NaN or infinite (training diverged).
        """
        return self._rows(_AsBuilt(), self._train(convert=None))

    def compare(self, specs: Sequence[str | Activation | Recipe],
                baseline: str | Activation | None = "relu", *,
                on_rows: Callable[[list[dict[str, object]]], None] | None = None,
                ) -> list[dict[str, object]]:
        """Trains R replicas per activation and remedy, each in place of the model's hidden ReLUs.

        Every replica of every spec is `build_model(seed)` converted by
        `tf_smelu.convert_activations` with fresh weights and compiled again
        with the model's own compile arguments (`model.get_compile_config()`),
        so replica r of every spec starts from the same seed and sees the
        same data order. Remedies (`tf_smelu.remedies`) then change what
        they change: `ensemble:K` trains K members per replica (seeds
        derived from the replica's) and averages their probabilities;
        `ema:DECAY` and `label_smoothing:EPS` compile the model again with
        the optimizer's `use_ema` or the loss's `label_smoothing`;
        `distill:LAMBDA` and `anchor:LAMBDA` add LAMBDA × the cross-entropy
        towards the teacher's or the previous model's probabilities to the
        loss (each such model of the baseline recipe trained once per study,
        seeded, and cached; the previous model on `earlier_data`);
        `warm_start` sets every replica's weights to the previous model's
        before its `fit`; `codistill:LAMBDA[:K[:STALE]]` trains each replica
        with K − 1 peers (K = 2 by default) in one `fit`, each pulled towards
        the mean of the others' predictions (with STALE > 1, of a copy of
        their weights taken every STALE steps), and serves peer 0. A spec
        with remedies and no activation (`"ema:0.999"`) keeps the baseline
        activation. With the data order pinned, every replica,
        member and peer of a spec trains side by side in one `fit` where the
        model allows it (`side_by_side`), bit for bit as one after another.

        Args:
            specs: Activation and remedy specs and their `+`-combinations,
                e.g. `["smelu:1", "ensemble:2", "ema:0.999",
                "smelu:1+label_smoothing:0.1"]`.
            baseline: An activation, put first (and added if missing), as the
                rows' `vs relu` column and the advisor expect; `None` keeps
                the order (and remedies without an activation then apply to
                the model as built).
            on_rows: Called with the rows so far after every spec's replicas
                finish, e.g. to write them (`tf_smelu.experiment.write_results`
                with `complete=False`): a later spec that diverges or a Ctrl-C
                then loses none of the finished specs.

        Returns:
            Rows labelled per spec as the main job's (`relu`, `smelu(β=1)`,
            `relu+ema(0.999)`, `relu+ensemble(K=2)`, ...), spec-major, one per
            model output. Rows with remedies carry `remedy` (their remedies'
            spec); every row carries its costs relative to the first row:
            `train_steps_ratio` and `train_seconds_ratio` (training steps per
            replica, all members and peers included, and measured time of
            all fits, including the training of a teacher or previous model
            the row used, whose steps and time `setup_steps` and
            `setup_seconds` also hold: trained once per study, it is
            amortized over the row's replicas),
            `serve_params_ratio` (parameters served per replica; `params`
            holds the count) and, on the TensorFlow backend,
            `serve_flops_ratio` (`flops`: forward FLOPs per example of one
            served replica, from TensorFlow's profiler).

        Raises:
            ValueError: An unknown activation or remedy spec or a value out
                of range, a model without hidden ReLUs or one
                `convert_activations` cannot rebuild, a loss or optimizer a
                remedy cannot change, or compile arguments that cannot be
                serialized; `anchor` or `warm_start` without `earlier_data`;
                `distill`, `anchor` or `codistill` on a model or fit
                arguments that cannot be stacked (`stacking.unstackable_reason`)
                or under a `strategy`.
        """
        if isinstance(specs, (str, Activation, Recipe)):
            raise ValueError(f"`specs` must be a list of specs, e.g. ['smelu:1']. "
                             f"Received: specs={specs!r}")
        recipes = [Recipe.parse(spec) for spec in specs]
        first = baseline if baseline is None or isinstance(baseline, Activation) else (
            Activation.parse(baseline))
        recipes = [recipe.with_activation(first) for recipe in recipes]
        if first is not None:
            recipes = [Recipe(first), *recipes]
        recipes = list(dict.fromkeys(recipes))  # a spec given twice ("smelu:1", "smelu:1.0") once
        if any(recipe.remedies for recipe in recipes):
            self.check_remedies(recipes)
        targets_of = Recipe(first)  # teacher and previous model: the baseline recipe
        rows = []
        for recipe in recipes:
            rows += self._rows(recipe.activation or _AsBuilt(),
                               self._train(_converter(recipe), recipe, targets_of), recipe)
            if on_rows is not None:
                on_rows(list(with_costs([dict(row) for row in rows], rows[0])))
        return list(with_costs(rows, rows[0]))

    def train(self, recipe: Recipe = Recipe()) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """Trains the replicas of the model as built, with `recipe`'s remedies; no row.

        For callers that make rows themselves, e.g. the main job's `keras`
        trainer (`tf_smelu.reproducibility.main_job`), which adds replicas to
        earlier ones (`first_replica`) and groups held-out examples.

        Args:
            recipe: Remedies (`tf_smelu.remedies.Recipe`) without an
                activation: `build_model` puts in the activation.

        Returns:
            `(probabilities, fields)`: per output name the trained replicas'
            held-out probabilities `[replicas, N]` (`[replicas, N, K]` for K
            classes), and the rows' training fields (`trainer`, `steps`,
            `params`, `train_seconds`, `side_by_side`, `eval_metrics`,
            `fit_logs`, `train_loss`).

        Raises:
            ValueError: `recipe` names an activation; see also `run`.
        """
        if recipe.activation is not None:
            raise ValueError(f"train() trains the model as `build_model` returns it; swap "
                             f"activations with compare(). Received: a recipe with activation "
                             f"{str(recipe.activation)!r}")
        if recipe.remedies:
            self.check_remedies([recipe])
        result = self._train(None, recipe)
        return ({name: np.stack(runs) for name, runs in result.predictions.items()},
                _training_fields(result))

    @released_custom_gradients()  # building traces the model in a scratch graph
    def check_remedies(self, recipes: Sequence[Recipe]) -> None:
        """What a remedy cannot do with this model or study shows before the first training step.

        `compare` and `train` call it; a caller that trains its rows one
        study at a time (the main job's keras trainer) calls it with every
        recipe of the run before the first row, so a remedy that cannot run
        never waits for the rows before it. Builds one model; trains none.

        Args:
            recipes: The recipes (their activations are not used).

        Raises:
            ValueError: A loss or optimizer a remedy cannot change, a
                model-refresh remedy without `earlier_data`, or a remedy that
                trains in one `fit` with other models (distill, anchor,
                codistill) on a model or fit arguments that do not allow it.
        """
        model = self._build(self.seed)
        config = model.get_compile_config()
        for recipe in recipes:
            recipe.compile_config(config)
            if PREVIOUS in recipe.targets and self._make_earlier is None:
                raise ValueError(
                    f"Remedy {recipe.remedy_spec} needs the previous model, trained on the data "
                    "before the training data, but this ReplicaStudy has none: pass "
                    "ReplicaStudy(..., earlier_data=<dataset or make_dataset(order_seed)>). "
                    "Received: earlier_data=None")
            if recipe.trains_together:
                reason = ("a tf.distribute strategy was given"
                          if self.strategy is not tf.distribute.get_strategy()
                          else stacking.unstackable_reason(model, self.fit_kwargs))
                if reason is not None:
                    raise ValueError(
                        f"Remedy {recipe.remedy_spec} trains each replica in one fit with loss "
                        f"terms towards other models' predictions (tf_smelu.reproducibility."
                        f"stacking), which this study cannot: {reason}. Received: "
                        f"specs containing {recipe.remedy_spec!r}")

    def _train(self, convert: Callable[[keras.Model], keras.Model] | None,
               recipe: Recipe = Recipe(), targets_of: Recipe = Recipe()) -> _Replicas:
        """Trains the replicas of `recipe` (models converted by `convert`).

        Args:
            convert: Swaps the built model's activation, or None.
            recipe: Its remedies.
            targets_of: The recipe of the trained models its remedies learn
                from (the study's baseline).
        """
        first = self.first_replica
        seeds = replica_seeds(self.sources, first + self.replicas, self.seed)[first:]
        pinned_order = replica_seeds(("order",), 1, self.seed)[0].order_seed
        result = _Replicas({}, [], [], [], 0.0)
        # One run per member of every replica (a replica is one model unless it is an ensemble).
        runs = [(index, member) for index, replica in enumerate(seeds)
                for member in recipe.member_seeds(replica.tower_seed)]

        def build_seeded(seed: int) -> keras.Model:
            with self.strategy.scope():  # variables and compile under the strategy
                model = self._build(seed)
                return recipe.compile(model if convert is None else convert(model))

        # Every replica is a new model whose fit/predict functions trace once, by design, and
        # are not differentiated again once they are trained: their graphs can go.
        with (op_determinism("op_nondeterminism" not in self.sources), expected_retracing(),
              released_custom_gradients()):
            first = build_seeded(runs[0][1])
            self._check_before_training(first, result)
            trained_before = {name for name in recipe.targets
                              if self._target_key(name, targets_of) in self._targets}
            targets = {name: self._target(name, targets_of) for name in recipe.targets}
            # One trained for an earlier row still costs what it cost then (`_training_fields`).
            result.setup_seconds = sum(target.seconds for target in targets.values())
            result.setup_steps = sum(target.steps for target in targets.values())
            result.setup_reused = sorted(trained_before)
            # Every copy of every run, peers together: side by side where they can be.
            copies = [peer for _, member in runs for peer in recipe.peer_seeds(member)]
            models = self._side_by_side(first, copies, build_seeded)
            if models:
                self._train_side_by_side(models, pinned_order, result, recipe, targets)
            else:
                for index, (replica, member) in enumerate(runs):
                    # Peer 0 is the member, what the replica serves; other peers train with it.
                    peers = [first if index == 0 else build_seeded(member),
                             *(build_seeded(peer) for peer in recipe.peer_seeds(member)[1:])]
                    order_seed = (seeds[replica].order_seed if "order" in self.sources
                                  else pinned_order)
                    self._train_member(peers, order_seed, recipe, targets, result)
            result.flops = _forward_flops(first)
        return _combine_members(result, len(runs) // len(seeds), recipe)

    def _train_member(self, peers: list[keras.Model], order_seed: int, recipe: Recipe,
                      targets: Mapping[str, _Target], result: _Replicas) -> None:
        """Trains one member (one run: a replica, or a member of an ensemble) and predicts it."""
        index = len(result.steps)
        if recipe.start_from() is not None:
            for peer in peers:
                _start_from(peer, targets[recipe.start_from()].model, recipe.remedy_spec)
        steps, trained, logs, seconds = self._fit(peers, order_seed, recipe, targets)
        result.seconds += seconds
        result.steps.append(steps)
        _check_steps(result.steps, index, trained)
        result.histories.append(logs)
        self._predict(peers[0], result, index)

    def _fit(self, peers: list[keras.Model], order_seed: int, recipe: Recipe,
             targets: Mapping[str, _Target]) -> tuple[int, bool, dict[str, float], float]:
        """Trains one member (with its peers, towards its targets) on the data of `order_seed`.

        Returns:
            Model steps (optimizer steps times peers), whether an epoch
            finished, the member's last-epoch logs and the wall time.
        """
        data = self._training_data(order_seed)
        if not recipe.trains_together:
            start = time.perf_counter()
            # shuffle=False: fit ignores it for datasets, only warning that it does.
            history = peers[0].fit(data, **{"verbose": 0, **self.fit_kwargs, "shuffle": False})
            seconds = time.perf_counter() - start
            logs = {k: float(v[-1]) for k, v in history.history.items()}
            return int(peers[0].optimizer.iterations.numpy()), bool(logs), logs, seconds
        trained = stacking.fit_side_by_side(peers, data, self.fit_kwargs,
                                            self._pulls(recipe, targets))
        logs = trained.histories[0]
        return trained.steps * len(peers), trained.steps > 0 and bool(logs), logs, trained.seconds

    def _pulls(self, recipe: Recipe, targets: Mapping[str, _Target]) -> stacking.Pulls:
        """`recipe`'s loss terms towards other predictions, for a stacked fit of its copies."""
        pulls = recipe.pulls()
        return stacking.Pulls(
            self.from_logits,
            fixed=tuple((p.weight, targets[p.target].model) for p in pulls if p.target != PEERS),
            peer_weight=sum(p.weight for p in pulls if p.target == PEERS),
            group=len(recipe.peer_seeds(0)),
            peer_stale=next((p.stale for p in pulls if p.target == PEERS), None))

    def _target(self, name: str, recipe: Recipe) -> _Target:
        """The trained model `name` (teacher, previous model) of `recipe`: trained once, then cached.

        The teacher trains on the training data, the previous model on
        `earlier_data`; each with its own seed, `derived_seed(seed, 5 or 6,
        0)`, in the pinned data order, as `recipe`'s replicas train.
        """
        key = self._target_key(name, recipe)
        if key not in self._targets:
            seed = derived_seed(self.seed, _TARGET_SEED_KINDS[name], 0)
            with self.strategy.scope():
                model = self._build(seed)
                if recipe.activation is not None:
                    model = _converted(model, recipe.activation)
            make = self._make_dataset if name == TEACHER else self._make_earlier
            order_seed = replica_seeds(("order",), 1, self.seed)[0].order_seed
            tf.random.set_seed(order_seed)
            start = time.perf_counter()
            model.fit(make(order_seed), **{"verbose": 0, **self.fit_kwargs, "shuffle": False})
            seconds = time.perf_counter() - start
            steps = int(model.optimizer.iterations.numpy())
            if steps == 0:
                raise ValueError(f"The {name} model trained no step: "
                                 f"`{'train_data' if name == TEACHER else 'earlier_data'}` "
                                 "gave no batch.")
            self._finite_probabilities(model, f"the {name} model", steps)
            self._targets[key] = _Target(model, seconds, steps)
        return self._targets[key]

    @staticmethod
    def _target_key(name: str, recipe: Recipe) -> tuple[str, str]:
        """The key of the trained model `name` of `recipe` in the study's `trained_targets`."""
        return name, str(recipe.activation)

    def _side_by_side(self, first: keras.Model, seeds: Sequence[int],
                      build: Callable[[int], keras.Model]) -> list[keras.Model] | None:
        """Every copy (`first`, then one built per other seed) if they can train in one `fit`.

        Args:
            first: The copy of `seeds[0]`, built.
            seeds: The seeds of all copies: of every replica, of its members
                (ensembles) and their peers (co-distillation), in run order.
            build: Builds the copy of a seed.

        Returns:
            The copies, or None: they train one run after another (see `stacking`).
        """
        if self.side_by_side is False:
            return None
        if "order" in self.sources:
            reason = "the data order varies between replicas"
        elif self.strategy is not tf.distribute.get_strategy():
            reason = "a tf.distribute strategy was given (stacking does not build under one)"
        else:
            reason = stacking.unstackable_reason(first, self.fit_kwargs)
        models = [first]
        if reason is None:
            models += [build(seed) for seed in seeds[1:]]
            reason = stacking.check_same_optimizer(models)
        if reason is None:
            return models
        if self.side_by_side is True:
            raise ValueError(f"side_by_side=True, but the replicas cannot train in one fit: "
                             f"{reason}. Pass side_by_side='auto' to train them one after another.")
        _logger.warning("ReplicaStudy trains the %d replicas one after another, not side by "
                        "side: %s.", self.replicas, reason)
        return None

    def _train_side_by_side(self, models: list[keras.Model], order_seed: int, result: _Replicas,
                            recipe: Recipe, targets: Mapping[str, _Target]) -> None:
        """Trains every copy in one `fit`; each run's first peer is what it serves."""
        if recipe.start_from() is not None:
            for model in models:
                _start_from(model, targets[recipe.start_from()].model, recipe.remedy_spec)
        trained = stacking.fit_side_by_side(models, self._training_data(order_seed),
                                            self.fit_kwargs, self._pulls(recipe, targets))
        if trained.steps == 0 or not trained.histories[0]:
            raise ValueError("Replica 0 trained no step: the training data gave no batch.")
        peers = len(recipe.peer_seeds(0))
        served = models[::peers]
        result.seconds, result.steps, result.histories = (
            trained.seconds, [trained.steps * peers] * len(served), trained.histories[::peers])
        result.side_by_side = True
        for index, model in enumerate(served):
            self._predict(model, result, index)

    def _training_data(self, order_seed: int) -> tf.data.Dataset:
        """The training data in the order of `order_seed`, whatever the global seed.

        A seeded tf.data shuffle also takes TensorFlow's global seed, which
        `_build` set to the replica's initialization seed: without pinning it
        here, varying `init` would vary the order as well.
        """
        tf.random.set_seed(order_seed)
        return self._make_dataset(order_seed)

    def _build(self, seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        model = self.build_model(seed)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`build_model(seed)` must return a keras.Model. "
                             f"Received: {type(model).__name__} for seed={seed}")
        if not getattr(model, "compiled", False) or model.optimizer is None:
            raise ValueError(
                "`build_model(seed)` must return a compiled model (call `model.compile(...)` "
                f"with your optimizer, loss and metrics in it). Received: model {model.name!r} "
                "that is not compiled"
            )
        return model

    def _probabilities(self, model: keras.Model) -> outputs_lib.Outputs:
        return outputs_lib.model_probabilities(model, self._features, self.from_logits,
                                               self.predict_batch_size, "The model")

    def _check_before_training(self, model: keras.Model, result: _Replicas) -> None:
        """Predicts the held-out data with the untrained first replica: mistakes show now."""
        result.labels = outputs_lib.named_outputs(model, self._labels)
        probabilities = self._probabilities(model)
        missing = sorted(set(probabilities) - set(result.labels))
        if missing:
            raise ValueError(f"The held-out labels have no output(s) {missing}. "
                             f"Received: labels for {sorted(result.labels)}")
        for name, predicted in probabilities.items():
            if not outputs_lib.is_multiclass(predicted):
                _check_binary_labels(name, result.labels[name])

    def _predict(self, model: keras.Model, result: _Replicas, run: int) -> None:
        """Adds the trained `model`'s held-out predictions and evaluation to `result`.

        Raises:
            DivergedError: A prediction is NaN or infinite (training diverged),
                naming the replica `run` (a member of an ensemble counts).
        """
        predicted = self._finite_probabilities(model, f"replica run {run}", result.steps[run])
        if result.predictions and set(predicted) != set(result.predictions):
            # Auto-named output layers differ between replicas (dense_2, dense_5): the
            # outputs match by position, under the first replica's names.
            predicted = dict(zip(result.predictions, predicted.values()))
        for name, probabilities in predicted.items():
            result.predictions.setdefault(name, []).append(probabilities)
        batches = outputs_lib.in_memory_batches((self._features, self._labels),
                                                self.predict_batch_size)
        held_out = ({"x": self._features, "y": self._labels,
                     "batch_size": self.predict_batch_size} if batches is None else {"x": batches})
        evaluation = model.evaluate(**held_out, verbose=0, return_dict=True)
        result.evaluations.append({k: float(v) for k, v in evaluation.items()})
        result.params.append(model.count_params())

    def _finite_probabilities(self, model: keras.Model, what: str,
                              steps: int) -> outputs_lib.Outputs:
        """The trained `model`'s held-out probabilities.

        Raises:
            DivergedError: One is NaN or infinite (training diverged), naming `what`.
        """
        predicted = self._probabilities(model)
        for name, probabilities in predicted.items():
            if not np.isfinite(probabilities).all():
                bad = int(np.sum(~np.isfinite(probabilities)))
                raise DivergedError(
                    f"training diverged: {what}'s held-out predictions (output {name!r}) are "
                    f"NaN or infinite after {steps} steps; lower the optimizer's learning rate. "
                    f"Received: {bad} of {probabilities.size} predictions not finite")
        return predicted

    def _rows(self, activation, result: _Replicas,
              recipe: Recipe = Recipe()) -> list[dict[str, object]]:
        labels = result.labels
        rows = []
        for name, replicas in result.predictions.items():
            row = _output_row(activation, self.sources, np.stack(replicas), labels[name], self.seed)
            if recipe.remedies:
                row.update(remedy=recipe.remedy_spec, label=recipe.label(row["label"]))
            if len(result.predictions) > 1:
                row["label"] = f"{row['label']} [{name}]"
            if isinstance(activation, _AsBuilt):
                del row["spec"]  # "model" is no activation spec
            row.update(_training_fields(result), output=name)
            rows.append(row)
        return rows


def _output_row(activation, sources, probabilities: np.ndarray, labels: np.ndarray,
                seed: int) -> dict[str, object]:
    """One output's row; a multi-class output's AUC, log loss and PD are one-vs-rest."""
    if not outputs_lib.is_multiclass(probabilities[0]):
        return summarize_predictions(activation, sources, probabilities,
                                     np.reshape(labels, [-1]).astype(np.float64), seed=seed)
    classes = probabilities.shape[-1]
    one_hot = _one_hot(labels, classes)
    row = summarize_predictions(activation, sources, probabilities.reshape(len(probabilities), -1),
                                one_hot.reshape(-1), seed=seed)
    row["classes"] = classes
    for metric in ("top1", "l1"):
        summary = metrics.pairwise_pd(probabilities, metric, seed=seed)
        row[f"{metric}_pd"] = summary.mean
        row[f"{metric}_pd_ci"] = list(summary.ci)
    return row


def _check_binary_labels(name: str, labels: object) -> None:
    """A binary output's AUC needs labels 0 or 1 of both classes: checked before training."""
    values = np.reshape(np.asarray(labels, np.float64), [-1])
    positives = int(np.sum(values == 1.0))
    if not np.isin(values, (0.0, 1.0)).all() or positives in (0, values.size):
        raise ValueError(
            f"The held-out labels of output {name!r} must be 0 or 1, with both classes present "
            f"(the AUC compares them). Received: {positives} positive and "
            f"{int(np.sum(values == 0.0))} negative labels of {values.size} "
            f"(values {np.unique(values)[:5].tolist()})")


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == classes:
        return labels.astype(np.float64)
    indices = labels.reshape(-1).astype(np.int64)
    if indices.min() < 0 or indices.max() >= classes:
        raise ValueError(f"Held-out class labels must lie in [0, {classes}). "
                         f"Received: labels in [{indices.min()}, {indices.max()}]")
    return np.eye(classes)[indices]


def _training_fields(result: _Replicas) -> dict[str, object]:
    """The rows' fields saying how `result`'s replicas trained and what that cost.

    `train_seconds` is the replicas' fits plus `setup_seconds`, the training
    of the teacher or previous model the row learns from at what it cost
    when it trained (`setup_steps`: its optimizer steps, which
    `tf_smelu.experiment.costs` amortizes over the row's replicas), also
    when it was trained for an earlier row (of this study, or of another
    sharing `trained_targets`) and reused: `setup_reused` then names it.
    So a row's cost is the same whichever row came first (the cost of
    adopting its remedy), and adding up rows' `train_seconds` counts a
    shared model once per row that uses it.
    """
    fields = {
        "trainer": "keras_fit",
        "side_by_side": result.side_by_side,
        # The models remedies learn from train once per study: amortized over its R replicas.
        "train_seconds": result.seconds + result.setup_seconds,
        "steps": result.steps[0],
        "params": result.params[0],
        "eval_metrics": _per_replica(result.evaluations),
        "fit_logs": _per_replica(result.histories),
    }
    if result.setup_steps:
        fields.update(setup_seconds=result.setup_seconds, setup_steps=result.setup_steps)
    if result.setup_reused:
        fields["setup_reused"] = result.setup_reused
    if result.flops is not None:
        fields["flops"] = result.flops
    losses = fields["fit_logs"].get("loss", [])
    if losses and all(np.isfinite(losses)) and min(losses) >= 0:
        fields["train_loss"] = losses
    return fields


def _combine_members(result: _Replicas, members: int, recipe: Recipe) -> _Replicas:
    """Each replica's `members` consecutive runs made one: predictions as the recipe combines them.

    Steps and parameters add up over the members; evaluations and fit logs
    are the members' means.
    """
    if members == 1:
        return result

    def grouped(values: list) -> list[list]:
        return [values[start:start + members] for start in range(0, len(values), members)]

    result.predictions = {name: [recipe.predict(group) for group in grouped(replicas)]
                          for name, replicas in result.predictions.items()}
    result.evaluations, result.histories = (
        [{name: float(np.mean([one[name] for one in group])) for name in group[0]}
         for group in grouped(logs)] for logs in (result.evaluations, result.histories))
    result.steps, result.params = ([sum(group) for group in grouped(counts)]
                                   for counts in (result.steps, result.params))
    result.flops = None if result.flops is None else result.flops * members
    return result


def _per_replica(logs: list[dict[str, float]]) -> dict[str, list[float]]:
    """`[{name: value}]` per replica -> `{name: [value per replica]}`."""
    return {name: [one.get(name, float("nan")) for one in logs] for name in logs[0]}


def _converter(recipe: Recipe) -> Callable[[keras.Model], keras.Model] | None:
    """What makes a built model one of `recipe`'s: its activation swapped, or None (as built)."""
    return recipe.activation and functools.partial(_converted, activation=recipe.activation)


def _start_from(model: keras.Model, checkpoint: keras.Model, spec: str) -> None:
    """Sets every weight of `model` to `checkpoint`'s (the optimizer, not built yet, starts fresh).

    Raises:
        ValueError: The two models' weights differ in number or shape.
    """
    shapes = [tuple(w.shape) for w in model.weights]
    given = [tuple(w.shape) for w in checkpoint.weights]
    if shapes != given:
        raise ValueError(
            f"Remedy {spec} sets each replica's weights to the previous model's, but their "
            f"weights differ (the replica's activation adds or drops weights?). Received: "
            f"{len(shapes)} weights {shapes[:3]}... for {len(given)} {given[:3]}...")
    model.set_weights(checkpoint.get_weights())


def _forward_flops(model: keras.Model) -> int | None:
    """Floating-point operations of `model`'s forward pass on one example, or None.

    TensorFlow's profiler counts the float operations of the traced
    inference graph for a batch of 1 (as keras-flops does; TensorFlow holds
    the profiler, so no package is needed): a MatMul counts 2 per
    multiply-add. None under another backend or for inputs of unknown shape.
    """
    structure = stacking.input_structure(model)
    if keras.backend.backend() != "tensorflow" or structure is None:
        return None
    signature = keras.tree.map_structure(
        lambda t: tf.TensorSpec((1, *t.shape[1:]), t.dtype), structure)
    if any(None in spec.shape for spec in keras.tree.flatten(signature)):
        return None
    forward = tf.function(lambda inputs: model(inputs, training=False))
    try:
        graph = forward.get_concrete_function(signature).graph
    except (TypeError, ValueError) as error:  # e.g. sparse or ragged inputs
        _logger.warning("FLOPs not measured: the model's forward pass does not trace on dense "
                        "inputs of one example (%s).", outputs_lib.error_summary(error))
        return None
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the v1 profiler's own deprecation notices say nothing to the user
    try:
        profile = tf.compat.v1.profiler.profile(graph, options=options)
    finally:
        logger.setLevel(level)
    return int(profile.total_float_ops)


def _converted(model: keras.Model, activation: Activation) -> keras.Model:
    converted, report = rebuild(model, activation)
    if not report.replaced:
        raise ValueError(
            f"compare() swaps the model's hidden ReLUs, but model {model.name!r} has none "
            f"(hidden activations: {dict(report.kept) or 'none'}). Received: "
            f"activation={str(activation)!r}"
        )
    converted.compile(**stacking.compile_arguments(
        model, "compare() compiles each converted model with the model's own compile arguments"))
    return converted


def _check_steps(steps: list[int], index: int, trained: bool) -> None:
    """Every replica must have trained on as many batches as the first.

    Args:
        steps: The optimizer's iterations after each replica's `fit` so far.
        index: The replica just trained.
        trained: Whether its `fit` finished an epoch (Keras logs nothing,
            yet counts iterations, when the data gives no batch).
    """
    if index == 0 and not trained:
        raise ValueError("Replica 0 trained no step: the training data gave no batch.")
    if not trained or steps[index] != steps[0]:
        raise ValueError(
            f"The training data gave replica 0 {steps[0]} steps but replica {index} "
            f"{steps[index] if trained else 0}: it must give the same number of batches every "
            "time it is iterated (e.g. `Dataset.from_generator` over an already-created "
            "generator can be iterated only once; pass a function that creates the generator, "
            "or `make_dataset(order_seed)`)."
        )


def _check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sources, str):
        raise ValueError(f"`sources` must be a tuple of source names, e.g. ('init', 'order'). "
                         f"Received: sources={sources!r}")
    unknown = [s for s in sources if s not in STUDY_SOURCES]
    if unknown:
        raise ValueError(f"Unknown source(s) {unknown}; a study varies some of {STUDY_SOURCES}. "
                         f"Received: sources={tuple(sources)!r}")
    return parse_sources("+".join(sources))


def _check_strategy(strategy: tf.distribute.Strategy | None) -> tf.distribute.Strategy:
    """The strategy replicas are built in; `None`: the default (no distribution)."""
    if strategy is None:
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError("`strategy` must be a tf.distribute.Strategy. "
                         f"Received: strategy={strategy!r}")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "`strategy` is a tf.distribute strategy, which only the TensorFlow backend of "
            f"Keras uses. Received: strategy={type(strategy).__name__} under the "
            f"{keras.backend.backend()!r} backend (KERAS_BACKEND)")
    workers = _worker_count(strategy)
    if workers > 1:
        # Keras 3's fit fails under a multi-worker MWMS (keras-team/keras#20585); on one
        # worker it trains (tests/test_backends.py).
        raise ValueError(
            "Keras 3's model.fit does not run under a MultiWorkerMirroredStrategy of several "
            "workers (keras-team/keras#20585), so a study cannot either: run it on one worker, "
            "or measure multi-worker training with tf_smelu.training.distributed. "
            f"Received: a cluster of {workers} workers")
    return strategy


def _worker_count(strategy: tf.distribute.Strategy) -> int:
    """Workers (and chief) of a multi-worker strategy's cluster; 1 for one machine."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, sum(len(spec.get(job, ())) for job in ("chief", "worker")))


def _check_fit_kwargs(fit_kwargs: dict[str, object]) -> dict[str, object]:
    accepted = set(inspect.signature(keras.Model.fit).parameters) - {"self", *_STUDY_FIT_ARGUMENTS}
    wrong = sorted(set(fit_kwargs) - accepted)
    if wrong:
        raise ValueError(
            f"ReplicaStudy passes its extra keyword arguments to model.fit, which does not take "
            f"{wrong} here (the study gives each replica its training data). "
            f"Received: {', '.join(f'{k}={fit_kwargs[k]!r}' for k in wrong)}"
        )
    return dict(fit_kwargs)


def _dataset_factory(train_data, sources: tuple[str, ...], buffer: int | None,
                     argument: str = "train_data") -> MakeDataset:
    """`make_dataset(order_seed)` for the training data, shuffling a dataset if asked.

    Args:
        train_data: A dataset or a function of the order seed.
        sources: The study's sources (with "order": shuffled per seed).
        buffer: The shuffle buffer (None: the dataset's cardinality).
        argument: Its argument's name, for error messages.
    """
    if callable(train_data) and not isinstance(train_data, tf.data.Dataset):
        return train_data
    if not isinstance(train_data, tf.data.Dataset):
        raise ValueError(
            f"`{argument}` must be a tf.data.Dataset or a function `make_dataset(order_seed)` "
            f"returning one. Received: {type(train_data).__name__}"
        )
    if "order" not in sources:
        _check_same_first_batch(train_data, sources, argument)
        return lambda order_seed: train_data
    if buffer is None:
        cardinality = int(train_data.cardinality())
        if cardinality < 0:
            kind = "infinite" if cardinality == tf.data.INFINITE_CARDINALITY else "unknown"
            raise ValueError(
                f"To vary the data order the study shuffles `train_data`, whose cardinality is "
                f"{kind}: pass `shuffle_buffer=<elements>` or `train_data=make_dataset` (a "
                f"function of order_seed). Received: sources containing 'order', "
                f"shuffle_buffer=None"
            )
        buffer = cardinality
    elif not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
        raise ValueError(f"`shuffle_buffer` must be a positive integer. "
                         f"Received: shuffle_buffer={buffer!r}")
    return lambda order_seed: train_data.shuffle(
        buffer, seed=order_seed, reshuffle_each_iteration=True)


def _check_same_first_batch(dataset: tf.data.Dataset, sources: tuple[str, ...],
                            argument: str) -> None:
    """With the order pinned, the data must start with the same batch every time it is read."""
    # Two reads of one batch each: cheap, and a reshuffling or one-shot dataset shows at once.
    first, again = (next(iter(dataset.take(1).as_numpy_iterator()), None) for _ in range(2))
    if first is None:
        raise ValueError(f"`{argument}` is empty. Received: a dataset that gave no element")
    if again is None or not all(
            np.array_equal(a, b) for a, b in zip(keras.tree.flatten(first), keras.tree.flatten(again))):
        raise ValueError(
            f"`{argument}` gave another first batch when it was read again, so the data order "
            "is not pinned although `sources` does not contain 'order': it reshuffles itself "
            "(a shuffle with reshuffle_each_iteration=True in your pipeline) or can be read only "
            "once (e.g. `Dataset.from_generator` over an existing generator). Pass "
            "`make_dataset(order_seed)` (seed your shuffles with order_seed), a dataset that "
            "reads the same way every time, or add 'order' to `sources`. "
            f"Received: sources={sources!r}"
        )


def _read_held_out(held_out) -> tuple[object, object]:
    """`(features, labels)` in memory, from a batched dataset or a tuple of arrays."""
    if isinstance(held_out, tf.data.Dataset):
        batches = list(held_out.as_numpy_iterator())
        if not batches:
            raise ValueError("`held_out` is empty. Received: a dataset that gave no element")
        if not all(isinstance(b, tuple) and len(b) == 2 for b in batches[:1]):
            raise ValueError("`held_out` must give `(features, labels)` pairs. Received: "
                             f"elements of type {type(batches[0]).__name__}")
        if any(np.ndim(leaf) == 0 for leaf in keras.tree.flatten(batches[0])):
            raise ValueError("`held_out` must be batched (call `.batch(...)` on it). Received: "
                             "a dataset of single examples")
        held_out = keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)
    if not (isinstance(held_out, (tuple, list)) and len(held_out) == 2):
        raise ValueError("`held_out` must be a dataset of `(features, labels)` or a tuple "
                         f"`(features, labels)`. Received: {type(held_out).__name__}")
    return held_out[0], held_out[1]
