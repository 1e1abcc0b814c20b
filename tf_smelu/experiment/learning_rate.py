"""The operating point on the user's data: the baseline's learning rate, chosen by a sweep.

The default learning rate (1e-2) was tuned on the synthetic data only; on
other data the baseline may be far from its best, and a remedy's AUC cost and
PD change measured there mean little (the README's "The operating point").
Before the `--max_auc_loss` search, `tune` trains the baseline (ReLU) at a
few learning rates around the configured one and every row is then trained at
the rate with the best mean held-out AUC.

The grid is in half-decade steps (`STEP`, ×√10 ≈ 3.2) around the configured
rate: on the default data ReLU loses 0.006–0.007 AUC half a decade either side
of its best (0.7313, 0.7372, 0.7299 at 3e-3, 1e-2, 2e-2), a peak too broad to
step over and, at about 3 standard errors of a `REPLICAS`-replica mean (one
replica's AUC varies by 0.002–0.003), wide enough to see. It starts with
three points (×1/3.2, ×1, ×3.2: nine replicas when the configured rate is
already near the best) and is extended one step at a time
while the best rate is at an edge, up to `MAX_STEPS` steps (×10^±1.5) either
way; a best rate still at an edge then is reported as such. A training that
diverges (`DivergedError`) counts as the worst rate, never stops the sweep.

The rates are compared on the held-out AUC: the trainers of the main job have
no validation split, and carving one from the training data would change the
rows' training data. The sweep's replicas are seeded apart from the rows'
(`SEED_TAG`), so the baseline row the remedies are compared with is fresh
replicas: the selection's luck is not carried into it.

Every trained rate is written to `--output_dir/learning_rate.json` (`CACHE_FILE`,
atomically) with everything that affects it (`cache_key`); a run on the same
configuration reuses it, and an interrupted sweep continues where it stopped.
The configuration that `results.json` compares is the user's (the configured
rate), so a resume matches; rows carry the rate they were trained at
(`learning_rate`), and finished rows trained at another rate are not reused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from tf_smelu.common import atomic_write, derived_seed, field_differences
from tf_smelu.experiment.advisor import BASELINE
from tf_smelu.experiment.config import CTRExperimentConfig
from tf_smelu.remedies import Recipe
from tf_smelu.registry import Activation
from tf_smelu.training.replicas import DivergedError, expected_retracing

CACHE_FILE = "learning_rate.json"
STEP = math.sqrt(10.0)
"""Factor between neighbouring rates of the grid: half a decade."""
BASE_STEPS = (-1, 0, 1)
"""The grid first trained, in `STEP`s from the configured rate."""
MAX_STEPS = 3
"""The grid is extended at most this many `STEP`s from the configured rate (×10^±1.5)."""
REPLICAS = 3
"""Replicas per rate: a mean AUC with a standard error of ~0.6 replica sd."""
SEED_TAG = 4_417
"""Derives the sweep's replica seeds from `--seed`, apart from the rows' (see module docstring)."""

_NOT_IN_KEY = (
    "activations", "sources", "update_mode", "replicas", "max_replicas", "max_auc_loss",
    "time_budget", "beta_scale", "preactivation_warmup_steps", "progress", "job_timeout",
    "tune_learning_rate", "max_train_cost", "max_serve_cost")
"""Configuration fields that do not change the sweep (which rows run, how the search
spends its budget, how the rows' β is scaled): every other field is in `cache_key`,
so that a field added later is keyed until someone says it does not matter."""


class RowTrainer(Protocol):
    """What the sweep needs of the main job's row trainer (`tf_smelu.experiment.runner`)."""

    def row(self, recipe: Recipe, sources: Sequence[str], replicas: int, *,
            seed: int | None = None, learning_rate: float | None = None) -> dict: ...


@dataclasses.dataclass(frozen=True)
class RateResult:
    """The baseline trained at one learning rate of the sweep.

    Attributes:
        step: `STEP`s from the configured rate (negative: lower).
        learning_rate: The rate.
        aucs: Held-out AUC per replica (empty when the training diverged).
        diverged: The trainer's message when the training diverged.
        train_seconds: Seconds the trainer reported.
    """

    step: int
    learning_rate: float
    aucs: tuple[float, ...] = ()
    diverged: str | None = None
    train_seconds: float = 0.0

    @property
    def auc_mean(self) -> float:
        """Mean held-out AUC; NaN when diverged or not finite (then the worst rate)."""
        mean = float(np.mean(self.aucs)) if self.aucs and self.diverged is None else math.nan
        return mean if math.isfinite(mean) else math.nan

    def to_json(self) -> dict[str, object]:
        auc_mean = self.auc_mean
        return {"step": self.step, "learning_rate": self.learning_rate,
                "auc_mean": None if math.isnan(auc_mean) else auc_mean,
                "auc_std": float(np.std(self.aucs, ddof=1)) if len(self.aucs) > 1 else None,
                "aucs": list(self.aucs), "diverged": self.diverged,
                "train_seconds": self.train_seconds}

    @classmethod
    def from_json(cls, value: Mapping[str, object], configured: float) -> RateResult:
        """A result written by `to_json`, checked.

        Raises:
            ValueError: A field is missing or wrong (e.g. a rate that is not
                the grid's at its step, an AUC outside [0, 1]).
        """
        step = value["step"]
        if not isinstance(step, int) or abs(step) > MAX_STEPS:
            raise ValueError(f"step {step!r} is not an integer within ±{MAX_STEPS}")
        if value["learning_rate"] != rate_at(configured, step):
            raise ValueError(f"learning_rate {value['learning_rate']!r} is not the grid's rate "
                             f"{rate_at(configured, step):g} at step {step}")
        aucs = value["aucs"]
        if not isinstance(aucs, list) or not all(
                isinstance(a, (int, float)) and 0 <= a <= 1 for a in aucs):
            raise ValueError(f"aucs {aucs!r} are not AUCs in [0, 1]")
        diverged = value["diverged"]
        if not isinstance(diverged, (str, type(None))):
            raise ValueError(f"diverged {diverged!r} is neither null nor the trainer's message")
        if diverged is None and len(aucs) != REPLICAS:
            raise ValueError(f"rate {value['learning_rate']!r} holds {len(aucs)} AUCs, not "
                             f"{REPLICAS}, and did not diverge")
        return cls(step, float(value["learning_rate"]), tuple(float(a) for a in aucs),
                   diverged, float(value["train_seconds"]))


def rate_at(configured: float, step: int) -> float:
    """The grid's rate `step` half-decades from `configured` (two significant digits)."""
    return configured if step == 0 else float(f"{configured * STEP ** step:.2g}")


def best(results: Sequence[RateResult]) -> RateResult | None:
    """The rate with the best mean AUC; None when every training diverged.

    A diverged (or non-finite) rate is never chosen. Ties go to the rate
    closest to the configured one, then to the lower (the more stable).
    """
    finite = [r for r in results if not math.isnan(r.auc_mean)]
    return max(finite, key=lambda r: (r.auc_mean, -abs(r.step), -r.step), default=None)


def next_step(results: Mapping[int, RateResult]) -> int | None:
    """The step the sweep trains next, or None when it is decided.

    First every `BASE_STEPS`; then one step beyond an edge whose rate is
    the best (beyond the lowest when every rate diverged), within
    `MAX_STEPS`.
    """
    missing = [step for step in BASE_STEPS if step not in results]
    if missing:
        return missing[0]
    chosen = best(list(results.values()))
    low, high = min(results), max(results)
    if chosen is None or chosen.step == low:
        step = low - 1
    elif chosen.step == high:
        step = high + 1
    else:
        return None
    return step if abs(step) <= MAX_STEPS else None


class AllDivergedError(DivergedError):
    """Every learning rate of the sweep diverged, down to the lowest it may try."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The sweep's results and the rate it chose.

    Attributes:
        configured: The configured learning rate (the grid's centre).
        results: Every rate trained, by step.
        sources: What differed between the replicas of a rate.
        reused: Steps read from `CACHE_FILE` rather than trained in this run.
    """

    configured: float
    results: Mapping[int, RateResult]
    sources: tuple[str, ...]
    reused: tuple[int, ...] = ()

    @property
    def chosen(self) -> RateResult:
        """The best rate (see `best`).

        Raises:
            AllDivergedError: No rate trained without diverging.
        """
        chosen = best(list(self.results.values()))
        if chosen is None:
            lowest = self.results[min(self.results)]
            raise AllDivergedError(
                f"the learning-rate sweep diverged at every rate down to "
                f"{lowest.learning_rate:g} ({lowest.diverged}); lower --learning_rate or pass "
                "--notune_learning_rate")
        return chosen

    @property
    def at_edge(self) -> str | None:
        """`"low"` or `"high"` when the chosen rate is the grid's lowest or highest."""
        step = self.chosen.step
        return "low" if step == min(self.results) else "high" if step == max(self.results) \
            else None

    def text(self) -> str:
        """The line the main job prints, e.g. `learning rate: chose 0.0032 (AUC ...) ...`."""
        chosen = self.chosen
        low, high = (self.results[step].learning_rate for step in (min(self.results),
                                                                     max(self.results)))
        line = (f"learning rate: chose {chosen.learning_rate:g} (AUC {chosen.auc_mean:.4f}, mean "
                f"of {len(chosen.aucs)} relu replicas) from the sweep over {low:g}…{high:g} "
                f"(configured {self.configured:g}); every row trains at it")
        if self.at_edge:
            line += (f". It is the {self.at_edge}est rate the sweep may try: the best may lie "
                     f"beyond; set --learning_rate nearer to it to look further")
        return line

    def table(self) -> str:
        """One line per rate: mean ± sd AUC (or diverged), the chosen one marked."""
        chosen = self.chosen.step
        lines = [f"{'learning rate':>13}  {'held-out AUC (mean ± sd)':<26} seconds"]
        for step in sorted(self.results):
            r = self.results[step]
            auc = (f"diverged: {r.diverged}" if r.diverged is not None else
                   f"{r.auc_mean:.4f} ± {np.std(r.aucs, ddof=1):.4f}" if len(r.aucs) > 1 else
                   f"{r.auc_mean:.4f}")
            mark = "  <- chosen" if step == chosen else ""
            cached = "  (trained earlier)" if step in self.reused else ""
            lines.append(f"{r.learning_rate:>13g}  {auc:<26} {r.train_seconds:7.0f}{mark}{cached}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        """What results.json records (`advice.<sources>.learning_rate`)."""
        chosen = self.chosen
        return {"configured": self.configured, "chosen": chosen.learning_rate,
                "auc_mean": chosen.auc_mean, "at_edge": self.at_edge,
                "replicas": REPLICAS, "sources": list(self.sources),
                "grid": [self.results[s].learning_rate for s in sorted(self.results)],
                "rates": [self.results[s].to_json() for s in sorted(self.results)],
                "text": self.text()}


def sweep_sources(config: CTRExperimentConfig) -> tuple[str, ...]:
    """The sources of the sweep's replicas: the first source set's, and `init`.

    The first set's sources keep what changes training itself (stale
    updates); `init` makes every replica an independent model, so that a
    rate's mean AUC is a mean (with `none` the replicas would be one model).
    """
    return tuple(sorted({*config.source_sets[0], "init"}))


def cache_key(config: CTRExperimentConfig) -> dict[str, object]:
    """Everything that changes the sweep's numbers: data, model, training, seeds, grid."""
    return {**{k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY},
            "sweep_sources": list(sweep_sources(config)), "sweep_replicas": REPLICAS,
            "sweep_seed_tag": SEED_TAG, "grid_step": STEP, "base_steps": list(BASE_STEPS),
            "max_steps": MAX_STEPS, "baseline": BASELINE}


def read_cache(path: str, key: Mapping[str, object], configured: float,
               log: Callable[[str], None]) -> dict[int, RateResult]:
    """The rates an earlier sweep with the same `key` trained; {} otherwise.

    A missing file is silent; a damaged one or one of another configuration
    is ignored with one logged line (the sweep then trains and replaces it).
    """
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        differences = field_differences(content["key"], key)
        if not differences:  # (another configuration's rates are another grid)
            results = [RateResult.from_json(rate, configured) for rate in content["rates"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        log(f"{path}: not a learning-rate sweep this run can reuse ({type(error).__name__}: "
            f"{error}); the sweep runs again and replaces it")
        return {}
    if differences:
        log(f"{path} holds the sweep of another configuration (differs in "
            f"{', '.join(name for name, _, _ in differences)}); the sweep runs again and "
            "replaces it")
        return {}
    return {r.step: r for r in results}


def write_cache(path: str, key: Mapping[str, object], results: Mapping[int, RateResult]) -> None:
    """Writes every rate trained so far (atomically: an interrupted write leaves the last)."""
    with atomic_write(path) as f:
        json.dump({"key": dict(key), "rates": [results[s].to_json() for s in sorted(results)]},
                  f, indent=1, allow_nan=False)


def train_rate(trainer: RowTrainer, configured: float, step: int, sources: Sequence[str],
               seed: int) -> RateResult:
    """The baseline's replicas at the grid's rate `step`; a divergence is a result."""
    rate = rate_at(configured, step)
    try:
        row = trainer.row(Recipe(Activation.parse(BASELINE)), sources, REPLICAS, seed=seed,
                          learning_rate=rate)
    except DivergedError as error:
        return RateResult(step, rate, diverged=str(error))
    return RateResult(step, rate, tuple(float(a) for a in row["aucs"]),
                      train_seconds=float(row.get("train_seconds", 0.0)))


def run_sweep(config: CTRExperimentConfig, trainer: Callable[[], RowTrainer],
              results: dict[int, RateResult],
              on_result: Callable[[dict[int, RateResult]], None] = lambda results: None
              ) -> Sweep:
    """Trains the steps `next_step` asks for that `results` lacks.

    Args:
        config: The main job's configuration (rate, seed, sources).
        trainer: Returns the row trainer (called only if a rate is missing,
            so that a cached sweep loads no data).
        results: Rates trained earlier, by step (e.g. `read_cache`).
        on_result: Called with all results after every rate trained.

    Returns:
        The sweep (`Sweep.chosen` raises if every rate diverged).
    """
    configured, sources = config.training.learning_rate, sweep_sources(config)
    seed = derived_seed(config.training.seed, SEED_TAG)
    reused = tuple(sorted(results))
    results = dict(results)
    with expected_retracing():  # a new trainer per rate, short ones on small data
        while (step := next_step(results)) is not None:
            results[step] = train_rate(trainer(), configured, step, sources, seed)
            on_result(results)
    return Sweep(configured, results, sources, reused)


def tune(
    config: CTRExperimentConfig,
    make_trainer: Callable[[CTRExperimentConfig], RowTrainer],
    output_dir: str | None,
    finished: Sequence[dict],
    log: Callable[[str], None] = print,
) -> tuple[CTRExperimentConfig, Sweep | None, list[dict]]:
    """The main job's configuration at the baseline's best learning rate on its data.

    Does nothing unless `config.tune_learning_rate`. Otherwise runs (or
    reuses) the sweep, prints its table and choice, and returns `config`
    with `training.learning_rate` the chosen rate.

    Args:
        config: The main job's configuration (its rate is the grid's centre).
        make_trainer: Builds the main job's row trainer for a configuration
            (called at most once, and only when a rate must be trained).
        output_dir: Where `CACHE_FILE` goes; None: not cached.
        finished: Rows of an earlier run (results.json).
        log: Where the table and the choice go.

    Returns:
        `(config, sweep, finished)`: the configuration rows train with, the
        sweep (None when not tuning) and the finished rows trained at the
        chosen rate (others are logged and not reused).

    Raises:
        AllDivergedError: Every rate the sweep may try diverged.
    """
    if not config.tune_learning_rate:
        return config, None, list(finished)
    path = None if output_dir is None else os.path.join(output_dir, CACHE_FILE)
    key = cache_key(config)
    configured = config.training.learning_rate
    earlier = {} if path is None else read_cache(path, key, configured, log)
    trainers: list[RowTrainer] = []

    def trainer() -> RowTrainer:
        if not trainers:  # relu needs no σ: the sweep's trainer scales β as given
            trainers.append(make_trainer(dataclasses.replace(config, beta_scale="absolute")))
        return trainers[0]

    def save(results: dict[int, RateResult]) -> None:
        if path is not None:
            write_cache(path, key, results)

    log(f"Learning-rate sweep: relu at half-decade steps around {configured:g}, {REPLICAS} "
        f"replicas each, best mean held-out AUC (--notune_learning_rate skips it)"
        + (f"; {len(earlier)} rate(s) trained earlier, from {path}" if earlier else ""))
    sweep = run_sweep(config, trainer, earlier, save)
    chosen = sweep.chosen
    log(sweep.table() + "\n" + sweep.text())
    tuned = dataclasses.replace(
        config, training=dataclasses.replace(config.training, learning_rate=chosen.learning_rate))
    return tuned, sweep, rows_at_rate(finished, chosen.learning_rate, log)


def rows_at_rate(finished: Sequence[dict], rate: float, log: Callable[[str], None]) -> list[dict]:
    """The finished rows trained at `rate` (or not saying); the others are logged, not reused.

    Rows trained at another rate happen when `CACHE_FILE` was deleted and the
    sweep chose differently: mixing them with rows at `rate` would compare
    two operating points.
    """
    other = [row for row in finished if row.get("learning_rate", rate) != rate]
    if other:
        log(f"{len(other)} finished row(s) of results.json were trained at learning rate "
            f"{other[0]['learning_rate']:g}, not the chosen {rate:g}: they are trained again")
    return [row for row in finished if row.get("learning_rate", rate) == rate]
