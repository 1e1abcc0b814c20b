"""The replica experiment's configuration: what to compare, and how to train.

`CTRExperimentConfig` holds what the experiment compares (activations,
source sets, update modes, replicas) and one `TrainingConfig` that every
replica trains with. The main job's flags are generated from both
(`tf_smelu.cli`), so a default is written once, in the dataclass field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tf_smelu.experiment.costs import BUDGETS, check_budget, require_candidates, ruled_out
from tf_smelu.experiment.seeds import IN_PROCESS_ONLY_SOURCES, SOURCES, parse_sources
from tf_smelu.registry import Activation, activation_help
from tf_smelu.remedies import REMEDIES, Recipe
from tf_smelu.training.config import TrainingConfig, as_flag_dict, check_fields, option
from tf_smelu.training.updates import UPDATE_MODES

BASELINE = Activation("relu")
"""What the `max_auc_loss` search compares every candidate with; a remedy without an
activation applies to it."""

TRAINING_FIELDS_SET_BY_THE_EXPERIMENT = ("update_mode", "schedule_seed")
"""`TrainingConfig` fields the experiment sets per row (no flag of their own):
the update mode comes from the row, the schedule seed from each replica."""


def _parse_activations(texts) -> tuple[Activation, ...]:
    if not texts:
        raise ValueError("`activations` must name at least one activation.")
    return tuple(t if isinstance(t, Activation) else Activation.parse(t) for t in texts)


def _parse_remedies(texts) -> tuple[Recipe, ...]:
    """Remedy specs (`ensemble:2`, `smelu:1+ema:0.999`) as `Recipe`s, each naming a remedy."""
    recipes = tuple(Recipe.parse(text) for text in texts)
    for text, recipe in zip(texts, recipes):
        if not recipe.remedies:
            raise ValueError(f"`remedies` entry {str(text)!r} names no remedy ({', '.join(REMEDIES)}"
                             f"); compare activations with `activations`. Received: "
                             f"remedies={[str(t) for t in texts]}")
    return tuple(dict.fromkeys(recipes))  # one row per recipe, however often it is given


def recipe_spec(recipe: Recipe) -> str:
    """The spec text a recipe was parsed from, e.g. `smelu:1.0+ema:0.999` (parses back)."""
    return str(recipe)


TRAINERS_HELP = (
    "How every replica is trained: builtin (the project's own loop over the in-memory data, "
    "replicas side by side, Adam at --learning_rate and binary cross-entropy, also for "
    "--model=PATH.keras / module:function, whose compile arguments it ignores), keras (each "
    "replica by model.fit through tf_smelu.reproducibility.ReplicaStudy: mlp/dcn compiled "
    "with Adam at --learning_rate, binary cross-entropy and AUC; your own model with the "
    "optimizer, loss, metrics and schedule it was saved or returned compiled with; in process, "
    "no stale source; runs --remedies), or auto (default: keras when --remedies is given, "
    "else builtin).")


def _parse_source_sets(texts) -> tuple[tuple[str, ...], ...]:
    if not texts:
        raise ValueError("`sources` must name at least one source set ('none' for the control).")
    return tuple(parse_sources(text) for text in texts)


@dataclasses.dataclass(frozen=True)
class CTRExperimentConfig:
    """The main job's experiment: activations, sources, replicas and training.

    Rows: one per (source set, activation) in process; with multi-worker jobs
    (`workers > 1` or any `update_mode`) one per (source set, update mode,
    activation), each replica a job of `workers` processes on localhost.

    Build one from flat keyword values with `CTRExperimentConfig.from_dict`
    (training fields go to `training`).

    Attributes:
        activations: Specs to compare (parsed into `Activation`s).
        sources: Source sets, one row each; within a set sources are joined
            with `+`; `"none"` varies nothing (the control).
        replicas: Replicas R per row, `>= 2`.
        update_mode: Update modes of multi-worker rows (empty: in process).
        workers: Processes per replica job (`> 1`: multi-worker jobs).
        job_timeout: Seconds before a replica job is killed.
        max_auc_loss: AUC the user will give up against relu (e.g. 0.002),
            `>= 0`; given, the job searches each family's beta for the largest
            relative-PD reduction within it and ends with a recommendation
            (`tf_smelu.experiment.advisor`); None: the rows as listed.
        time_budget: With `max_auc_loss`: seconds the search may spend
            training, `> 0`; None: until the search is decided.
        max_replicas: With `max_auc_loss`: most replicas the search gives
            one row, `>= 4`.
        beta_scale: `"absolute"` (a spec's number is beta) or `"relative"`
            (it is k, and each hidden layer gets `k` times its measured
            pre-activation std).
        preactivation_warmup_steps: With `beta_scale="relative"`: ReLU
            training steps before the std is measured, `>= 0`; None: one
            replica's whole schedule.
        tune_learning_rate: Train the rows at the baseline's best learning
            rate on this data, found by a sweep around `training.learning_rate`
            (`tf_smelu.experiment.learning_rate`). Unset (None) means on
            with `max_auc_loss`; without it, it is None (nothing to tune).
        progress: Show progress bars.
        work_dir: Where replica jobs write weights, predictions and logs
            (`None`: a new temporary directory, kept and logged).
        trainer: `"builtin"`, `"keras"` or `"auto"` (see `row_trainer`).
        remedies: Remedy recipes (`tf_smelu.remedies.Recipe`), one row each
            after the activations' per source set; a recipe without an
            activation applies to relu (whose row is then added if
            `activations` lacks it). Needs the keras trainer.
        max_train_cost: With `max_auc_loss`: most training cost (steps
            relative to one relu model) a recommendation may have, >= 1; None: no limit.
        max_serve_cost: With `max_auc_loss`: most serving cost (FLOPs per
            example, else parameters, relative to one relu model), >= 1; None: no limit.
        training: How every replica is trained.

    Raises:
        ValueError: naming the field, if a value is invalid (out of range,
            an unknown activation, source or remedy) or the fields do not
            fit together (e.g. fewer training examples than a batch,
            multi-worker jobs with the keras trainer, `max_auc_loss` with
            multi-worker jobs).
    """

    activations: tuple[Activation, ...] = option(
        # β spans the tradeoff at the default learning rate (1e-2), where hidden
        # pre-activations spread over σ ≈ 1-2.5: smaller β hardly changes ReLU.
        ("relu", "smelu:0.5", "smelu:1", "smelu:2", "gelu", "swish", "softplus"),
        lambda: f"Activations to compare, comma-separated: {activation_help()}.",
        check=_parse_activations)
    sources: tuple[str, ...] = option(
        ("tower_init",),
        f"Sets of irreproducibility sources ({', '.join(SOURCES)}), one result row per "
        "activation and set. Within a set join sources with '+', e.g. init+order; 'none' "
        "varies nothing (the control).", check=_parse_source_sets)
    replicas: int = option(8, "Replicas R per row (>= 2).", minimum=2)
    update_mode: tuple[str, ...] = option(
        (), f"Update modes, one row each ({', '.join(UPDATE_MODES)}); given, every replica runs "
        "as a multi-worker job (see --workers) whose schedule comes from OS entropy. Empty: "
        "the in-process harness (sync with --workers=1).", choices=UPDATE_MODES)
    workers: int = option(
        1, "Worker processes per replica: > 1 trains every replica as its own "
        "MultiWorkerMirroredStrategy job on localhost.", minimum=1)
    job_timeout: int = option(
        3600, "Seconds before a multi-worker replica job is killed.", minimum=1)
    max_auc_loss: float | None = option(
        None, "AUC you are willing to give up against relu, e.g. 0.002. Given, the job "
        "searches beta for each family in --activations with a beta (smelu:0.2 stands for "
        "the smelu family) for the largest relative-PD reduction within that budget, trains "
        "the others as reference points, adds replicas where intervals leave the answer "
        "open, and ends with a recommendation and its 95% intervals (in process only).",
        minimum=0)
    time_budget: float | None = option(
        None, "Seconds the --max_auc_loss search may spend training (shared by the source "
        "sets); unset: until the search is decided.", positive=True)
    max_replicas: int = option(
        32, "--max_auc_loss: most replicas the search gives one row.", minimum=4)
    max_train_cost: float | None = option(
        None, "--max_auc_loss: most training cost a recommendation may have, in training "
        "steps relative to one relu model (ensemble:2 costs 2); >= 1; unset: no limit.",
        check=lambda value: check_budget("max_train_cost", value))
    max_serve_cost: float | None = option(
        None, "--max_auc_loss: most serving cost a recommendation may have, in FLOPs per "
        "example (or parameters, where FLOPs are not measured) relative to one relu model "
        "(ensemble:2 costs 2); >= 1; unset: no limit.",
        check=lambda value: check_budget("max_serve_cost", value))
    beta_scale: str = option(
        "absolute", "absolute: the number in a spec (smelu:0.2) is beta itself; relative: it "
        "is k, and each hidden layer l gets beta_l = k x sigma_l, its pre-activation std "
        "measured once on a ReLU copy of the model (see --preactivation_warmup_steps); with "
        "--max_auc_loss the search's grid is in k (in process only).",
        choices=("absolute", "relative"))
    preactivation_warmup_steps: int | None = option(
        None, "--beta_scale=relative: seeded ReLU training steps before sigma is measured; "
        "unset: one replica's whole schedule (--epochs or --steps), so sigma is the spread at "
        "the end of training, which keeps growing all epoch at learning rate 1e-2; 0: at init, "
        "where it is up to 19x smaller.", minimum=0)
    # Resolved on construction (None without max_auc_loss, else True or False), so that
    # results.json records, and a resume compares, what ran; the flag's default stays unset.
    tune_learning_rate: bool | None = option(
        None, "--max_auc_loss: first find relu's best Adam learning rate on this data with a "
        "short sweep (a few replicas at half-decade steps around --learning_rate, extended "
        "while the best mean held-out AUC is at an edge), then train every row at it; cached "
        "in --output_dir/learning_rate.json and reused on resume (delete it to sweep again). "
        "Unset: on with --max_auc_loss, off otherwise; --notune_learning_rate keeps "
        "--learning_rate (in process only).")
    trainer: str = option("auto", TRAINERS_HELP, choices=("auto", "builtin", "keras"))
    remedies: tuple[Recipe, ...] = option(
        (), "Remedies for prediction difference, comma-separated, one result row each per "
        "source set after the activations' rows (--trainer=keras): ensemble:K (each replica "
        "the mean of K seeded models), ema:DECAY (evaluation with the optimizer's moving "
        "average of the weights), label_smoothing:EPS, distill:LAMBDA (also pulled towards a "
        "teacher trained once), codistill:LAMBDA[:K[:STALE]] (K peers, default 2, each "
        "pulled towards the others, their weights copied every STALE steps, default 1), "
        "anchor:LAMBDA (pulled towards the previous model) and warm_start (starts from it): "
        "the previous model trains on the first half of the training rows and every row of "
        "the run on the second; alone or with an activation by '+', e.g. "
        "ensemble:2,ema:0.999,smelu:1+ema:0.999. Without an activation a remedy applies to "
        "relu (its row is added if --activations lacks it).", check=_parse_remedies)
    progress: bool = option(True, "Show progress bars.")
    work_dir: str | None = option(None, "Replica jobs' directory.", flag=False)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def __post_init__(self):
        for name in ("activations", "sources", "update_mode", "remedies"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (tuple, list)):
                raise ValueError(f"`{name}` must be a sequence. Received: {name}={value!r}")
            object.__setattr__(self, name, tuple(value))
        check_fields(self)
        object.__setattr__(self, "activations", _parse_activations(self.activations))
        object.__setattr__(self, "remedies", _parse_remedies(self.remedies))
        if not isinstance(self.training, TrainingConfig):
            raise ValueError(f"`training` must be a TrainingConfig. Received: {self.training!r}")
        if self.training.train_examples < self.training.batch_size:
            # Fewer would train on one partial batch per epoch: nothing to compare.
            raise ValueError(
                "`train_examples` must hold at least one batch (batch_size="
                f"{self.training.batch_size}). Received: train_examples="
                f"{self.training.train_examples}")
        if self.tune_learning_rate:
            self._check_tuning()
        object.__setattr__(self, "tune_learning_rate", None if self.max_auc_loss is None else (
            self.tune_learning_rate is not False))
        if self.max_auc_loss is not None:
            self._check_search()
        else:
            for name in ("time_budget", *BUDGETS):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"`{name}` limits the `max_auc_loss` search only: set `max_auc_loss` "
                        f"too, or unset `{name}`. Received: {name}={getattr(self, name)}, "
                        "max_auc_loss=None")
        if self.beta_scale == "relative" and self.multi_worker:
            raise ValueError(
                "`beta_scale=relative` runs in process only: workers build their models from "
                f"spec strings. Received: workers={self.workers}, "
                f"update_mode={list(self.update_mode)}")
        if self.row_trainer == "keras":
            self._check_keras_trainer()
        if self.multi_worker:
            self._check_multi_worker()
        elif self.training.update_mode == "local_sgd":
            raise ValueError("update_mode=local_sgd needs multi-worker jobs (`update_mode`).")

    def _check_tuning(self) -> None:
        where = ("runs in process only: unset `workers` and `update_mode`" if self.multi_worker
                 else "tunes the `max_auc_loss` search's operating point: set `max_auc_loss` too")
        if self.multi_worker or self.max_auc_loss is None:
            raise ValueError(
                f"`tune_learning_rate` {where}, or unset `tune_learning_rate`. Received: "
                f"max_auc_loss={self.max_auc_loss}, workers={self.workers}, "
                f"update_mode={list(self.update_mode)}")

    def _check_search(self) -> None:
        if self.multi_worker:
            raise ValueError("`max_auc_loss` (the search) runs in process only: unset "
                             "`workers` and `update_mode`.")
        if self.replicas < 4 or self.max_replicas < self.replicas:
            raise ValueError(
                "The search needs 4 <= replicas <= max_replicas. Received: "
                f"replicas={self.replicas}, max_replicas={self.max_replicas}")
        self._check_cost_budgets()

    def _check_cost_budgets(self) -> None:
        """Refuses budgets under which relu would be compared with nothing (before training).

        Activations cost 1 (`check_budget` keeps budgets >= 1), so only
        remedies can be ruled out: the search is pointless when they all are
        and no activation besides relu is asked for. A teacher or previous
        model counts amortized over `max_replicas`, as the search's
        `SearchSettings.ruled_out` counts it (the runner gives it this
        `max_replicas`).
        """
        budgets = {name: getattr(self, name) for name in BUDGETS}
        excluded = ruled_out(self.remedies, budgets, BASELINE, self.max_replicas)
        left = len(self.remedies) - len(excluded) + sum(a != BASELINE for a in self.activations)
        require_candidates(excluded, left, budgets)

    def _check_keras_trainer(self) -> None:
        why = "(model.fit in this process" + (
            f"; chosen by trainer=auto for remedies={[recipe_spec(r) for r in self.remedies]})"
            if self.trainer == "auto" else ")")
        stale = [text for text, sources in zip(self.sources, self.source_sets)
                 if "stale" in sources]
        if stale:
            raise ValueError(f"Source `stale` exists only in the builtin trainer's own loop, not "
                             f"with trainer=keras {why}. Received: sources={stale}")
        if self.multi_worker:
            raise ValueError(f"Multi-worker jobs (`workers` > 1, `update_mode`) use the builtin "
                             f"trainer, not trainer=keras {why}. Received: workers={self.workers}, "
                             f"update_mode={list(self.update_mode)}")
        if self.beta_scale == "relative":
            raise ValueError(f"`beta_scale=relative` needs the builtin trainer, not trainer=keras "
                             f"{why}. Received: beta_scale=relative")

    def _check_multi_worker(self) -> None:
        # Any set that names one: every row must be runnable.
        in_process_only = sorted(set(IN_PROCESS_ONLY_SOURCES) & set().union(*self.source_sets))
        if in_process_only:
            raise ValueError(
                f"Source(s) {in_process_only} exist only in the in-process harness; with "
                "multi-worker jobs use update_mode=stale, and op determinism is not set "
                f"there. Received: sources={list(self.sources)}"
            )
        self.training.per_worker_batch_size(self.workers)
        if self.training.jit_compile:
            raise ValueError("`jit_compile` is not supported with multi-worker jobs.")

    @property
    def source_sets(self) -> tuple[tuple[str, ...], ...]:
        """`sources`, parsed: e.g. `(("tower_init",), ("order", "init"))`."""
        return _parse_source_sets(self.sources)

    @property
    def row_trainer(self) -> str:
        """The trainer of the rows (`tf_smelu.experiment.runner.TRAINERS`): `trainer`, or
        for `"auto"` `"keras"` when there are `remedies`, else `"builtin"`.

        Raises:
            ValueError: `trainer="builtin"` with `remedies` (it trains none).
        """
        if self.trainer == "builtin" and self.remedies:
            raise ValueError(
                "Remedies are trained by trainer=keras (model.fit); the builtin trainer trains "
                "activations only: drop trainer=builtin or the remedies. Received: "
                f"trainer=builtin, remedies={[recipe_spec(r) for r in self.remedies]}")
        if self.trainer == "auto":
            return "keras" if self.remedies else "builtin"
        return self.trainer

    @property
    def multi_worker(self) -> bool:
        """Whether each replica runs as its own multi-worker job.

        True with `workers > 1` or any `update_mode` (then every row is also
        per update mode; `workers > 1` alone means `sync`).
        """
        return self.workers > 1 or bool(self.update_mode)

    @property
    def update_modes(self) -> tuple[str, ...]:
        """The update modes of the rows: `update_mode`, or `("sync",)`."""
        return self.update_mode or ("sync",)

    def to_dict(self) -> dict[str, object]:
        """Flat, JSON-ready values of every flag field (the inverse of `from_dict`).

        Also `row_trainer`, the trainer `trainer` resolves to (which
        `from_dict` ignores).

        Returns:
            Field name -> value (specs as strings, tuples as lists), the
            training's fields included, as results.json records them.
        """
        return {**as_flag_dict(self), "activations": [str(a) for a in self.activations],
                "remedies": [recipe_spec(recipe) for recipe in self.remedies],
                # What trains ("auto" resolved): a resumed run must not mix trainers' rows.
                "row_trainer": self.row_trainer,
                **as_flag_dict(self.training, exclude=TRAINING_FIELDS_SET_BY_THE_EXPERIMENT)}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> CTRExperimentConfig:
        """Takes the fields it knows from flat `values` (e.g. all of a program's flags).

        Names of `TrainingConfig` fields go to `training`, except those the
        experiment sets per row; other unknown names (e.g. `output_dir`) are
        ignored.

        Args:
            values: Field name -> value (lists are taken as tuples); a
                `"training"` entry, if given, is the `TrainingConfig` itself.

        Returns:
            The checked configuration.

        Raises:
            ValueError: if a value is invalid (as for the constructor).
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"training"}
        trained = {f.name for f in dataclasses.fields(TrainingConfig)} - set(
            TRAINING_FIELDS_SET_BY_THE_EXPERIMENT)
        training = values.get("training") or TrainingConfig(
            **{k: _as_field_value(v) for k, v in values.items() if k in trained})
        return cls(**{k: _as_field_value(v) for k, v in values.items() if k in own},
                   training=training)


def _as_field_value(value):
    """Lists (as flags give them) become tuples (as frozen fields hold them)."""
    return tuple(value) if isinstance(value, list) else value
