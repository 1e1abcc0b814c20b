"""Runs a `CTRExperimentConfig`: in this process, or one cluster per replica.

`run_ctr_experiment` loads the data once and trains every row in this process
with a row trainer (`TRAINERS`, chosen by `CTRExperimentConfig.row_trainer`):
`builtin` trains a row's replicas side by side in the project's own loop
(`tf_smelu.experiment.harness`); `keras`, registered by
`tf_smelu.reproducibility.main_job`, trains every replica by `model.fit`
and also trains remedies. With multi-worker jobs it runs every replica as its
own job of `workers` processes (`tf_smelu.training.replica_jobs`) and
compares the chiefs' predictions. Every row gets its cost ratios to the relu
row of its sources (`tf_smelu.experiment.costs`).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import NoReturn, Protocol

import numpy as np

from tf_smelu.common import UserError
from tf_smelu.data import LoadedDataset, describe_schema, popularity_buckets
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment import advisor, learning_rate
from tf_smelu.experiment.config import CTRExperimentConfig
from tf_smelu.experiment.costs import with_costs
from tf_smelu.experiment.harness import run_replicas, summarize_predictions
from tf_smelu.experiment.report import format_table
from tf_smelu.experiment.results import row_key
from tf_smelu.experiment.seeds import op_determinism, replica_seeds
from tf_smelu.registry import Activation
from tf_smelu.remedies import Recipe
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.preactivation import (
    RelativeModelFn,
    measure_preactivation_std,
    relative_label,
    relative_model_fn,
)
from tf_smelu.training.problem import load_training_data, model_builder
from tf_smelu.training.launcher import WorkerFailedError
from tf_smelu.training.replica_jobs import ReplicaJob, ReplicaJobError, run_replica_jobs
from tf_smelu.training.replicas import check_finite

EVAL_BATCH_SIZE = 4096


def item_popularity_groups(data: LoadedDataset) -> dict[str, np.ndarray] | None:
    """Masks of the held-out rows whose item is in the head, torso or tail.

    Head: the most popular items carrying 50% of the training traffic, torso
    the next 40%, tail the rest. `None` when the data names no item field.

    Args:
        data: The loaded data (its item field's ids, train and held out).

    Returns:
        `{"item_head", "item_torso", "item_tail"}` boolean masks over the
        held-out rows, or `None`.
    """
    if data.item_field is None:
        return None
    bucket = popularity_buckets(
        data.train.features[data.item_field], data.test.features[data.item_field]
    )
    return {f"item_{name}": bucket == index
            for index, name in enumerate(("head", "torso", "tail"))}


class TooLittleDataError(UserError, ValueError):
    """The loaded data cannot give the numbers a row needs (e.g. AUC of one class)."""


def check_evaluation_labels(labels: np.ndarray, training: TrainingConfig) -> None:
    """Checked right after loading, before any training: AUC needs both classes.

    Raises:
        TooLittleDataError: The held-out labels are all positive or all
            negative (naming both counts and `--eval_examples`).
    """
    positives = int(np.count_nonzero(np.asarray(labels) > 0.5))
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise TooLittleDataError(
            f"the held-out examples of {training.dataset} hold {positives} positive and "
            f"{negatives} negative label(s); AUC needs both: raise --eval_examples (now "
            f"{training.eval_examples})")


class ReplicaJobUserError(UserError, RuntimeError):
    """A worker of a replica job stopped with a user's mistake (e.g. diverged training)."""


def _raise_workers_user_error(error: ReplicaJobError, row: str) -> NoReturn:
    """Re-raises a failed job as the one `error:` line its failing worker printed, if any.

    Workers print that line only for a user's mistake (`run_program`); any
    other failure keeps its traceback and the worker's last lines.
    """
    cause = error.__cause__
    if isinstance(cause, WorkerFailedError):
        tail = cause.log_tails[cause.worker_index]
        line = next((line for line in reversed(tail) if line.startswith("error: ")), None)
        if line is not None:
            raise ReplicaJobUserError(
                f"{row}, worker {cause.worker_index}: {line[len('error: '):]}") from error
    raise error


RowsCallback = Callable[[list[dict]], None]
DataCallback = Callable[[dict], None]


def data_details(data: LoadedDataset) -> dict[str, object]:
    """JSON-ready: the schema the data was read with and the malformed rows skipped."""
    skipped = data.skipped_rows
    return {
        "schema": data.schema,
        "skipped_rows": 0 if skipped is None else skipped.count,
        "skipped_examples": [] if skipped is None else [
            {"line": line, "problem": problem} for line, problem in skipped.first],
    }


class _RunRows:
    """The rows of one run: earlier finished rows reused, new rows reported as they finish."""

    def __init__(self, finished: Sequence[dict], on_row: RowsCallback | None,
                 log: Callable[[str], None], on_data: DataCallback | None = None):
        self._finished = {row_key(row): row for row in finished}
        self._on_row = on_row
        self._on_data = on_data
        self._log = log
        self.rows: list[dict] = []

    def log(self, message: str) -> None:
        self._log(message)

    def loaded(self, data: LoadedDataset) -> None:
        """Says which schema the data was read with, and what was skipped."""
        details = data_details(data)
        if data.schema:  # (skipped rows are logged by the loader)
            self._log(describe_schema(data.schema))
        if self._on_data is not None:
            self._on_data(details)

    def reuse(self, key: tuple[str, str]) -> bool:
        """Takes the earlier row of `key`, if there is one."""
        row = self._finished.get(key)
        if row is not None:
            self.rows.append(row)
            self._log(format_table([row]).splitlines()[-1] + "  (finished earlier)")
        return row is not None

    def finished_all(self, keys: Sequence[tuple[str, str]]) -> bool:
        return all(key in self._finished for key in keys)

    def add(self, row: dict) -> None:
        """A finished row; it replaces this run's row of the same key (more replicas)."""
        keys = [row_key(r) for r in self.rows]
        if row_key(row) in keys:
            self.rows[keys.index(row_key(row))] = row
        else:
            self.rows.append(row)
        if self._on_row is not None:  # saved first: the line tells the user it is safe
            self._on_row(self.all())
        self._log(format_table([row]).splitlines()[-1])

    def all(self) -> list[dict]:
        """This run's rows, then earlier rows it did not (or not yet) reach: none is lost.

        Each row holds its cost ratios to the relu row of its sources, once that exists.
        """
        keys = {row_key(row) for row in self.rows}
        rows = self.rows + [row for key, row in self._finished.items() if key not in keys]
        return with_baseline_costs(rows)


def with_baseline_costs(rows: Sequence[MutableMapping[str, object]]
                        ) -> Sequence[MutableMapping[str, object]]:
    """Adds to every row its cost ratios (`with_costs`) to the relu row of the same sources.

    The baseline is the row of activation relu without a remedy; rows of
    sources without one get no ratios. In place; returns `rows`.
    """
    baselines = {tuple(row["sources"]): row for row in rows
                 if row["activation"] == "relu" and not row.get("remedy")}
    for sources, baseline in baselines.items():
        with_costs([row for row in rows if tuple(row["sources"]) == sources], baseline)
    return rows


class RowTrainer(Protocol):
    """The main job's loaded data and model: trains rows (`TRAINERS` makes one per run)."""

    def row(self, recipe: Recipe, sources: Sequence[str], replicas: int, *,
            seed: int | None = None, learning_rate: float | None = None,
            previous: np.ndarray | None = None,
            on_predictions: Callable[[np.ndarray], None] | None = None) -> dict:
        """Trains one row: `replicas` replicas of `recipe`, differing in `sources`.

        Args:
            recipe: The activation (None: relu) and remedies.
            sources: What varies between the replicas (`SOURCES`).
            replicas: The row's R.
            seed: Base seed of the replica seeds; None: the configuration's.
            learning_rate: Replaces the configured learning rate (your own
                model's optimizer's, with the keras trainer); None keeps it.
            previous: `[R0, N]` held-out probabilities of this row's replicas
                `0..R0-1`, trained earlier with the same arguments: only
                replicas `R0..replicas-1` are trained, the row summarizes all.
            on_predictions: Called with all `[replicas, N]` probabilities.

        Returns:
            One results row (`summarize_predictions`' fields and
            `train_seconds`, `steps`; the keras trainer's also `params`,
            `trainer` and `remedy` for a recipe with remedies).
        """


TRAINERS: dict[str, Callable[..., RowTrainer]] = {}
"""Row trainer name (`CTRExperimentConfig.row_trainer`) -> its maker, called once per run
as `maker(config, run, data=None)`: the configuration, the run's rows (for its log lines
and the data it loads) and the data when it is loaded already (`load_checked_data`).
`builtin` is defined below; `keras` is registered by `tf_smelu.reproducibility.main_job`
when it is imported (the command line imports it), as it sits above this package."""


def row_trainer(config: CTRExperimentConfig, run: _RunRows,
                data: LoadedDataset | None = None) -> RowTrainer:
    """The trainer of `config`'s rows.

    Args:
        config: The run's configuration.
        run: The run's rows (log lines, the data's details).
        data: The data, loaded by `load_checked_data`; None: the trainer loads it.

    Raises:
        ValueError: The trainer is not registered (its module not imported).
    """
    name = config.row_trainer
    if name not in TRAINERS:
        raise ValueError(f"No row trainer {name!r} is registered: `import "
                         f"tf_smelu.reproducibility` registers 'keras'. Registered: "
                         f"{sorted(TRAINERS)}")
    return TRAINERS[name](config, run, data)


def row_label(config: CTRExperimentConfig, activation: Activation) -> str:
    """A row's label: `smelu(β=0.2)`, or with relative β `smelu(β=1.2σ)`."""
    return relative_label(activation) if config.beta_scale == "relative" else activation.label


RELU = Activation.parse("relu")


def planned_recipes(config: CTRExperimentConfig) -> list[Recipe]:
    """What each source set's rows train, in order: every activation, then every remedy.

    A remedy without an activation applies to relu, the baseline of every
    row's costs and PD change: its row comes first if `activations` lacks it.
    """
    recipes = [Recipe(activation) for activation in config.activations]
    if config.remedies and RELU not in config.activations:
        recipes.insert(0, Recipe(RELU))
    recipes += [recipe.with_activation(RELU) for recipe in config.remedies]
    return list(dict.fromkeys(recipes))  # "ema:0.9" and "relu+ema:0.9" are one row


def recipe_label(config: CTRExperimentConfig, recipe: Recipe) -> str:
    """A row's label: `row_label` of its activation, then its remedies', e.g. `relu+ema(0.999)`."""
    return recipe.label(row_label(config, recipe.activation))


def planned_rows(config: CTRExperimentConfig) -> list[tuple[str, str]]:
    """The `row_key` of every row `config` runs, in order."""
    return [
        ("+".join(sources), recipe_label(config, recipe))
        for sources in config.source_sets for recipe in planned_recipes(config)
    ] if not config.multi_worker else [
        ("+".join([*sources, f"update:{mode}"]), activation.label)
        for sources in config.source_sets for mode in config.update_modes
        for activation in config.activations
    ]


def run_ctr_experiment(
    config: CTRExperimentConfig,
    log: Callable[[str], None] = print,
    finished: Sequence[dict] = (),
    on_row: RowsCallback | None = None,
    on_data: DataCallback | None = None,
) -> list[dict]:
    """Loads the data, then runs every row of `config`.

    Args:
        config: What to run.
        log: Where progress lines go.
        finished: Rows of an earlier run of the same configuration (see
            `tf_smelu.experiment.finished_rows`): rows with the same
            `row_key` are reused, not trained again.
        on_row: Called with all rows so far (finished earlier ones
            included) whenever a row finishes, e.g. to write results.json.
        on_data: Called once the data is loaded, with `data_details`.

    Returns:
        The result rows, in order (sources outer, then activations and
        remedies, see `planned_recipes`; with multi-worker jobs: sources,
        update modes, activations), then any rows of `finished` that
        `config` does not plan; each with its cost ratios to the relu row
        of its sources.
    """
    run = _RunRows(finished, on_row, log, on_data)
    if run.finished_all(planned_rows(config)):
        for key in planned_rows(config):
            run.reuse(key)
        return run.all()  # nothing left to train: do not even load the data
    if config.multi_worker:
        return run_multiworker_experiment(config, log, run)
    trainer = row_trainer(config, run)
    for sources in config.source_sets:
        for recipe in planned_recipes(config):
            if run.reuse(("+".join(sources), recipe_label(config, recipe))):
                continue
            run.add(trainer.row(recipe, sources, config.replicas))
    return run.all()


def load_checked_data(training: TrainingConfig, run: _RunRows) -> LoadedDataset:
    """The data of an in-process run, loaded, its held-out labels checked, and logged.

    Raises:
        TooLittleDataError: The held-out labels are of one class.
    """
    start = time.perf_counter()
    data = load_training_data(training)
    train, test = data.train, data.test
    check_evaluation_labels(test.labels, training)
    run.log(f"Loaded {training.dataset}: {len(train):,} train and {len(test):,} test examples "
            f"in {time.perf_counter() - start:.0f}s (positive rate {train.labels.mean():.3f}).")
    run.loaded(data)
    return data


class _InProcessProblem:
    """The `builtin` row trainer: the loaded data and model builder of an in-process run.

    Every row's replicas train side by side in the project's own loop
    (`run_replicas`): Adam at the configured learning rate, binary
    cross-entropy on logits. It trains activations, not remedies.
    """

    def __init__(self, config: CTRExperimentConfig, run: _RunRows,
                 data: LoadedDataset | None = None):
        training = config.training
        data = load_checked_data(training, run) if data is None else data
        train, test = data.train, data.test
        self._config = config
        self._train = train
        self._eval_data = batched_dataset(test.features, test.labels, EVAL_BATCH_SIZE)
        self._eval_groups = item_popularity_groups(data)
        self._model_fn = model_builder(training, data.feature_spec)
        self._steps_per_epoch = -(-len(train) // training.batch_size)
        self._relative: RelativeModelFn | None = None
        if config.beta_scale == "relative":
            with op_determinism(True):  # the same sigma, so the same betas, on every run
                std = measure_preactivation_std(
                    self._model_fn, self._train_data(None), self._eval_data, training,
                    warmup_steps=config.preactivation_warmup_steps, seed=training.seed)
            run.log(f"Pre-activation std per hidden layer after {std.warmup_steps} ReLU steps "
                    f"({std.rows:,} held-out rows): "
                    + ", ".join(f"{key} {value:.3f}" for key, value in std.std.items()))
            self._model_fn = self._relative = relative_model_fn(self._model_fn, std)

    def _train_data(self, order_seed: int | None):
        return batched_dataset(self._train.features, self._train.labels,
                               self._config.training.batch_size, order_seed)

    def row(self, recipe: Recipe | Activation, sources: Sequence[str], replicas: int, *,
            seed: int | None = None, learning_rate: float | None = None,
            previous: np.ndarray | None = None,
            on_predictions: Callable[[np.ndarray], None] | None = None) -> dict:
        """Trains one row (replicas after `previous`'s, if given); see `RowTrainer.row`.

        `seed` is the base seed of the replica seeds (None: the configured
        one); `learning_rate` replaces the configured one; the row records
        the rate it was trained at (`learning_rate`).

        Raises:
            ValueError: `recipe` has remedies (the keras trainer trains them).
        """
        recipe = Recipe.parse(recipe)  # an Activation too
        if recipe.remedies:
            raise ValueError(f"The builtin trainer trains activations only; remedies "
                             f"({recipe.remedy_spec}) need the keras trainer (trainer=keras).")
        activation = recipe.activation or RELU
        training = self._config.training
        if learning_rate is not None:
            training = dataclasses.replace(training, learning_rate=learning_rate)
        seed = training.seed if seed is None else seed
        row = run_replicas(
            self._model_fn, self._train_data, self._eval_data, activation, sources,
            replicas, training, seed=seed, steps_per_epoch=self._steps_per_epoch,
            progress=self._config.progress, eval_groups=self._eval_groups, previous=previous,
            on_predictions=on_predictions,
        )
        if self._relative is not None:
            row.update(label=relative_label(activation),
                       **self._relative.describe(activation.to_keras()))
        row["learning_rate"] = training.learning_rate
        return row


TRAINERS["builtin"] = _InProcessProblem


def advise_ctr_experiment(
    config: CTRExperimentConfig,
    log: Callable[[str], None] = print,
    finished: Sequence[dict] = (),
    on_row: RowsCallback | None = None,
    on_data: DataCallback | None = None,
    output_dir: str | None = None,
) -> tuple[list[dict], dict[str, dict]]:
    """Searches, per source set, the activation, β or remedy to use within the budgets.

    The advisor (`tf_smelu.experiment.advisor`) decides which rows to train
    and with how many replicas: each smooth family among `config.activations`
    (an activation with β stands for its family) is searched over β, the
    others and `config.remedies` are candidates with fixed parameters, ReLU
    is the baseline; remedies over `config.max_train_cost` or
    `config.max_serve_cost` are not trained. A row that gets more replicas
    trains only the new ones. The search stops when it is decided or when
    `config.time_budget` seconds are spent (shared equally by the source sets
    still to search; the confirmation comes on top). A choice is then
    measured again with the baseline on fresh replica seeds (`advisor.confirm`;
    rows marked `confirmation`). `finished` rows continue the search and the
    confirmation. `log`, `on_row` and `on_data` as in `run_ctr_experiment`.
    First, with `config.tune_learning_rate`, the baseline's learning rate is
    tuned (`tf_smelu.experiment.learning_rate.tune`; the sweep cached in
    `output_dir`) and every row trains at it. The data is loaded once, when
    the first row must train: the sweep's trainer and the search's share it.

    Args:
        config: What to compare; `config.max_auc_loss` is the AUC budget.
        log: Where progress lines go.
        finished: Rows of an earlier run of the same configuration, reused.
        on_row: Called with all rows so far whenever a row finishes.
        on_data: Called once the data is loaded, with its details.
        output_dir: Where the learning-rate sweep is cached (None: not
            cached).

    Returns:
        `(rows, advice)`: every row trained (and reused), and per source set
        (`"+".join(sources)`) the search's result (`SearchResult.to_json()`:
        the recommendation and its text, the frontiers, the trials, the
        confirmation).
    """
    loaded: list[LoadedDataset] = []

    def make_trainer(trainer_config: CTRExperimentConfig, trainer_run: _RunRows) -> RowTrainer:
        # The sweep's trainer (β as given) and the search's (at the tuned rate) differ in
        # their configuration, not in their data: it is loaded (and encoded) once.
        if not loaded:
            loaded.append(load_checked_data(trainer_config.training, trainer_run))
        return row_trainer(trainer_config, trainer_run, loaded[0])

    config, sweep, finished = learning_rate.tune(
        config, lambda c: make_trainer(c, _RunRows((), None, log, on_data)), output_dir,
        finished, log)
    run = _RunRows(finished, on_row, log, on_data)
    problem: RowTrainer | None = None
    advice: dict[str, dict] = {}
    start = time.monotonic()
    for index, sources in enumerate(config.source_sets):
        tag = "+".join(sources)
        budget = None
        if config.time_budget is not None:
            left = config.time_budget - (time.monotonic() - start)
            budget = max(left, 1e-3) / (len(config.source_sets) - index)
        settings = advisor.SearchSettings.from_activations(
            config.activations, config.max_auc_loss, replicas=config.replicas,
            max_replicas=config.max_replicas, time_budget=budget, seed=config.training.seed,
            relative=config.beta_scale == "relative", remedies=config.remedies,
            max_train_cost=config.max_train_cost, max_serve_cost=config.max_serve_cost)
        earlier = [r for r in finished if "+".join(r["sources"]) == tag]
        for row in earlier:  # in the file's order; a row given more replicas is replaced
            run.reuse(row_key(row))
        predictions: dict[tuple[str, int | None], np.ndarray] = {}

        def run_trial(trial: advisor.Trial, existing: dict | None, sources=sources,
                      predictions=predictions) -> dict:
            nonlocal problem
            if problem is None:
                problem = make_trainer(config, run)
            key = (trial.label, trial.seed)  # search and confirmation rows share labels
            previous = predictions.get(key) if existing is not None else None
            # The swept rate explicitly: a user's model compiled with its own rate trains at
            # the sweep's choice too.
            row = problem.row(
                trial.recipe, sources, trial.replicas, seed=trial.seed, previous=previous,
                learning_rate=None if sweep is None else config.training.learning_rate,
                on_predictions=lambda p, key=key: predictions.__setitem__(key, p))
            row.update(trial.row_fields)
            run.add(row)
            return row

        result = advisor.search(
            run_trial, settings, [r for r in earlier if not advisor.is_confirmation(r)], log=log)
        result = advisor.confirm(run_trial, result, settings,
                                 [r for r in earlier if advisor.is_confirmation(r)], log=log)
        advice[tag] = result.to_json()
        if sweep is not None:
            advice[tag]["learning_rate"] = sweep.to_json()
    return run.all(), advice


def run_multiworker_experiment(
    config: CTRExperimentConfig, log: Callable[[str], None] = print,
    run: _RunRows | None = None,
) -> list[dict]:
    """Runs every replica of `config` as a job of `config.workers` processes.

    One row per (source set, update mode, activation), with
    `"update:<mode>"` appended to the row's sources. Each job's chief
    predicts the held-out split; this process loads the same data once more
    to check the labels and to compute PD by item popularity.

    Args:
        config: What to run (`config.multi_worker` is true).
        log: Where progress lines go.
        run: The rows so far, when `run_ctr_experiment` calls it (finished
            rows are reused); `None` starts without any.

    Returns:
        The result rows, in order: sources, update modes, activations.

    Raises:
        ReplicaJobUserError: a worker stopped at a user's mistake (its
            `error:` line).
        ReplicaJobError: a job failed otherwise (its last lines).
        RuntimeError: the workers' held-out labels differ from this
            process's.
        TooLittleDataError: the held-out labels are all of one class.
        tf_smelu.training.replicas.DivergedError: held-out predictions are
            not finite.
    """
    run = run if run is not None else _RunRows((), None, log)
    training = config.training
    data = load_training_data(training)
    check_evaluation_labels(data.test.labels, training)
    run.loaded(data)
    eval_groups = item_popularity_groups(data)
    work_dir = config.work_dir or tempfile.mkdtemp(prefix="tf_smelu_jobs_")
    log(f"{config.workers}-worker jobs on localhost, update modes {list(config.update_modes)}; "
        f"weights, predictions and worker logs in {work_dir}")
    for sources in config.source_sets:
        seeds = replica_seeds(sources, config.replicas, training.seed)
        for mode in config.update_modes:
            row_training = dataclasses.replace(training, update_mode=mode)
            for activation in config.activations:
                if run.reuse(("+".join([*sources, f"update:{mode}"]), activation.label)):
                    continue
                jobs = [
                    ReplicaJob(
                        str(activation), mode, r, work_dir,
                        embedding_seed=s.embedding_seed, tower_seed=s.tower_seed,
                        # None: every replica reads the rows in the same order.
                        order_seed=s.order_seed if s.order_seed is not None else training.seed,
                        tag="+".join(sources),
                    )
                    for r, s in enumerate(seeds)
                ]
                try:
                    result = run_replica_jobs(row_training, jobs, config.workers,
                                              config.job_timeout, progress=config.progress)
                except ReplicaJobError as error:
                    _raise_workers_user_error(error, f"{activation.label} {mode}")
                if not np.array_equal(result.labels, data.test.labels):
                    raise RuntimeError(
                        f"The workers' held-out labels differ from this process's ({jobs[0].name})."
                    )
                # The workers checked every loss; the last update comes after it.
                check_finite(result.probabilities, row_training.total_steps(len(data.train)),
                             activation.label, training.learning_rate, "held-out predictions")
                row = summarize_predictions(
                    activation, [*sources, f"update:{mode}"], result.probabilities,
                    result.labels, seed=training.seed, eval_groups=eval_groups,
                )
                row.update(train_seconds=float(np.mean(result.seconds)), update_mode=mode,
                           workers=config.workers)
                run.add(row)
    return run.all()
