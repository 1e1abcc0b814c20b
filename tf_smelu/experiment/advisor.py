"""The advisor: which activation or remedy, at which β (λ, K, decay), at what cost, how sure.

Given result rows of one source set (`results.schema.json`, next to this
module), the advisor answers "should I switch from ReLU, and to what?" for an AUC budget
`max_auc_loss` the user is willing to give up (and optional cost budgets
`max_train_cost`, `max_serve_cost`), plans which rows to train next to answer
it with as few replicas as possible, and confirms its answer on fresh replica
seeds. Everything here is a pure
function of the rows (NumPy only, nothing trains): the runner trains what
`plan` asks for and calls it again, so a resumed run continues where it
stopped.

Rows it needs. Besides `label`, `activation`, `beta` and `replicas`, each row
carries every replica's AUC (`aucs`, R numbers) and every replica pair's
relative PD (`rel_pd_pairs`, R (R - 1) / 2 numbers in `numpy.triu_indices(R,
1)` order). Rows of activations with parameters besides β (RESCU's order)
also need `spec`, e.g. `"rescu:0.3:3"`. Rows need at least `MIN_REPLICAS`.
Rows of remedies (`tf_smelu.remedies`) carry `remedy` (e.g. `"ema:0.999"`)
and are labelled `relu+ema(0.999)`; they are candidates with fixed
parameters, like the reference activations.

Costs (`tf_smelu.experiment.costs.row_costs`). Every row's training cost is
its `train_steps_ratio` to the baseline row (steps, not seconds: exact and
repeatable, where seconds depend on the machine's load and on whether the
replicas trained side by side; a teacher's or previous model's steps count
amortized over the row's replicas) and its serving cost its `serve_flops_ratio`,
else `serve_params_ratio`; a ratio the row lacks is what its recipe costs
(`costs.expected_costs`: 1 for an activation, K for `ensemble:K`). A
candidate over a cost budget (by more than `costs.COST_TOLERANCE`) is never
chosen and gets no replicas; a remedy whose expected cost is over one is
never trained (`SearchSettings.ruled_out`).

Intervals (`analyze`). A row's replicas are resampled with replacement
(`n_resamples` times, at least two distinct replicas per resample): its mean
AUC and its mean relative PD over the pairs of distinct resampled replicas
move together, since both come from the same replicas. Each row is resampled
independently, with a stream seeded by `seed` and the row's label, so the
intervals do not depend on row order. Against the baseline (ReLU):

    AUC change          = AUC_row - AUC_relu                 (negative: a loss)
    relative PD change  = relPD_row / relPD_relu - 1         (negative: fewer flips)

with percentile intervals at level `confidence` (95%). Rows share replica
seeds by index, but pairing them would need equal R in both rows, which the
adaptive search breaks, and the AUC correlations between rows measured in
`docs/default_results.json` ranged from -0.2 to 0.66: independent resampling
is the conservative choice. Percentile intervals from few replicas are too
narrow (about 0.8 of a t interval's width at R = 8), one reason the decision
rule below uses the unfavourable end of every interval.

Decision rule (`recommend`), for budget L:

* within budget: the upper end of the AUC-loss interval is <= L (the lower
  end of the AUC-change interval is >= -L). Point estimates would accept,
  half of the time, a β that costs more than L, and the search pushes β to
  exactly that edge; and the costs are within the cost budgets;
* PD reduced: the upper end of the relative-PD-change interval is < 0;
* the choice is the candidate that is both, with the largest PD reduction
  (point estimate); ties go to the higher AUC, then the label. Reference
  activations (GELU, Swish, Softplus) and remedies are candidates too: "use
  gelu" and "use relu+ema(0.999)" are valid answers;
* other such candidates whose PD is indistinguishable from the choice's (the
  interval of the difference of their relative PDs contains 0) are named;
* no such candidate: keep ReLU, naming the closest miss within budget and
  the best candidate over it.

The choice is the best of several candidates, so its PD reduction is
somewhat optimistic (the winner's curse); the intervals are not corrected
for that selection. The confirmation (`confirm`) measures it again instead:
the choice and the baseline are trained once more, at the choice's R, on
replica seeds the search never used (`confirmation_seed`), and the rule
above is applied to those two rows: the answer *held* when the choice is
still within every budget and still reduces PD significantly. "Keep relu"
needs no confirmation: nothing would change. Confirmation rows carry
`"confirmation": true` and their `seed`, so they never mix with the
search's rows (`tf_smelu.experiment.results.row_key` keys them apart), and
a resumed run reuses those finished. The Pareto frontier across every
candidate within the cost budgets (`frontier`) is what the plot draws.

Search (`plan`), per family (an activation with a scale parameter β, e.g.
SmeLU; RESCU of each order is its own family). It assumes that AUC loss and
PD reduction both grow with β and looks for the largest β within budget. A
row's status is *within* or *over* budget (the whole AUC-loss interval on one
side of L) or *open* (the interval straddles L and R < `max_replicas`); an
interval still straddling L at `max_replicas` counts as over.

1. Baseline, remedies within the cost budgets, the first β of the coarse
   grid (`scale_grid`) and then the reference points are trained with
   `replicas` replicas (reference points last, so that a time budget cuts
   them first; a search the time budget stops names the rows it never
   trained).
2. While no β is over budget, the next grid β is trained (rows straddling
   the budget wait: with noisy AUCs nearly every row straddles it at first,
   and the frontier over the whole grid is worth more than one β's R).
3. Open rows between the family's bracket (the largest β within budget below
   the smallest β over it) get more replicas: R doubles up to
   `max_replicas`. Otherwise the bracket is bisected at its geometric mean
   rounded to two significant digits, until its ends are within a factor
   `1 + resolution`
   (or, with no β within budget, β is halved down to a quarter of the grid's
   first value).
   Whenever a step gives a row more replicas than the baseline has, the
   baseline is brought to the same R first (a change vs ReLU is only as
   sure as both rows).
4. When no family has a step left, replicas go where the decision is
   uncertain (never to a row over a cost budget): reference and remedy rows
   whose AUC-loss interval straddles the budget and whose PD could beat the
   choice; candidates within budget whose PD
   point beats the choice but whose reduction is not yet significant (and
   the baseline with them); the best of another family (or a reference)
   whose PD is indistinguishable from the choice's (and the choice with
   it). Replicas decide between families; bisection decides β within one.
5. Nothing left: done. Every step adds a β (finitely many: bisection stops)
   or replicas (bounded by `max_replicas`), so the search ends.

Time budget (`search`). Seconds per replica are measured over the trials run
so far; before each trial, its estimated time (seconds per replica x its new
replicas) is compared with the time left, and the search stops at the first
trial that does not fit. The first trial always runs (nothing is measured
before it). The trials are a deterministic sequence for fixed seeds and
rows, so a larger budget runs the same trials and more. The confirmation
comes on top of the time budget.

Example, with `rows` of one source set:

    advice = recommend(rows, max_auc_loss=0.002, max_serve_cost=1)
    print(advice.text)   # use smelu(β=0.3) (smelu:0.3): relative PD -18% [-23%, -13%] ...

and a whole search, confirmed, with `run_trial` training one `Trial`:

    settings = SearchSettings(0.002, remedies=("ema:0.999", "ensemble:2"), max_serve_cost=1)
    result = confirm(run_trial, search(run_trial, settings), settings)
    print(result.text)   # ... then "Confirmed on fresh replica seeds ..." or "NOT confirmed ..."
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tf_smelu.common import derived_seed
from tf_smelu.experiment import config as experiment_config
from tf_smelu.experiment.config import recipe_spec
from tf_smelu.experiment.costs import (
    BUDGETS,
    budget_problems,
    check_budget,
    expected_costs,
    require_candidates,
    row_costs,
    ruled_out,
    with_costs,
)
from tf_smelu.registry import ACTIVATIONS, Activation
from tf_smelu.remedies import Recipe, Remedy
from tf_smelu.training.preactivation import relative_label
from tf_smelu.validation import is_int, require_in_range, require_positive_int

BASELINE = str(experiment_config.BASELINE)
"""What every candidate is compared with."""

CONFIRMATION = "confirmation"
"""Row field marking the confirmation's rows (fresh replica seeds), kept apart from the
search's rows of the same label."""

CONFIRMATION_SEED_KIND = 5
"""`derived_seed(seed, 5)` is the confirmation's base seed: replica seeds of the search are
`derived_seed(seed, kind, r)` with kinds 1-4 (`tf_smelu.experiment.replica_seeds`)."""

Budgets = Mapping[str, "float | None"]
"""Cost budget field (`costs.BUDGETS`: `max_train_cost`, `max_serve_cost`) -> limit or None."""

DEFAULT_REFERENCES = ("gelu", "swish", "softplus")
"""Smooth activations without a scale parameter: the usual alternatives to SmeLU."""

DEFAULT_SCALE_GRID = (0.05, 0.1, 0.2, 0.4, 0.8)
"""Coarse grid of β: beyond about 0.5 smooth activations reach a near-linear plateau
(at the pre-activation spread of the default data with learning rate 1e-3)."""

RELATIVE_SCALE_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Coarse grid of k with relative β (β_l = k σ_l): from a band an eighth of the
pre-activation spread wide to one wider than most pre-activations (near-linear)."""

MIN_REPLICAS = 4
"""Fewest replicas per row: 3 replicas give at most 10 distinct resamples."""

WITHIN, OVER, STRADDLES = "within", "over", "straddles"
"""Where a row's AUC-loss interval lies relative to the budget."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval `[low, high]`.

    Attributes:
        estimate: The point estimate.
        low: The interval's lower end.
        high: The interval's upper end.
    """

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether `value` lies in `[low, high]`.

        Args:
            value: A number.

        Returns:
            True if `low <= value <= high`.
        """
        return self.low <= value <= self.high


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One row against the baseline.

    Attributes:
        label: The row's label, e.g. `smelu(β=0.3)`.
        activation: The row's activation.
        replicas: The row's R.
        auc_mean: Mean AUC over the replicas.
        rel_pd: Mean relative PD over the replica pairs.
        auc_change: AUC minus the baseline's (negative: a loss).
        rel_pd_change: Relative PD over the baseline's, minus 1.
        remedies: The row's remedies (`tf_smelu.remedies`), e.g. `ema:0.999`.
        train_cost: Training cost relative to the baseline (`costs.row_costs`).
        serve_cost: Serving cost relative to the baseline (`costs.row_costs`).
    """

    label: str
    activation: Activation
    replicas: int
    auc_mean: float
    rel_pd: float
    auc_change: Interval
    rel_pd_change: Interval
    remedies: tuple[Remedy, ...] = ()
    train_cost: float = 1.0
    serve_cost: float = 1.0

    @property
    def recipe(self) -> Recipe:
        """The activation and the remedies."""
        return Recipe(self.activation, self.remedies)

    @property
    def spec(self) -> str:
        """The spec, e.g. `smelu:0.3` or `relu+ema:0.999`."""
        return recipe_spec(self.recipe)

    @property
    def family(self) -> str:
        """The activation's family; a remedy recipe (fixed parameters) is its own."""
        return self.label if self.remedies else family_name(self.activation)

    @property
    def scale(self) -> float | None:
        """The family's scale parameter β, `None` for activations without one and remedies."""
        return None if self.remedies else scale_of(self.activation)

    @property
    def costs(self) -> dict[str, float]:
        """`{"train": ..., "serve": ...}` as the budgets compare them."""
        return {"train": self.train_cost, "serve": self.serve_cost}

    def cost_problems(self, budgets: Budgets | None) -> list[str]:
        """How the row exceeds the cost budgets, e.g. `["serve cost 2 > --max_serve_cost=1"]`.

        Args:
            budgets: `max_train_cost` and `max_serve_cost` (a limit or None),
                or None for no budgets.

        Returns:
            One text per budget exceeded (empty: within all).
        """
        return budget_problems(self.costs, budgets or {})

    def fits(self, max_auc_loss: float, budgets: Budgets | None) -> bool:
        """Within the AUC budget (whole interval) and every cost budget.

        Args:
            max_auc_loss: The AUC the user will give up, `>= 0`.
            budgets: The cost budgets, or None.

        Returns:
            True if the whole AUC-change interval is within `max_auc_loss`
            and no cost budget is exceeded.
        """
        return self.budget_status(max_auc_loss) == WITHIN and not self.cost_problems(budgets)

    def budget_status(self, max_auc_loss: float) -> str:
        """`WITHIN`, `OVER` or `STRADDLES` the AUC budget (see the module docstring).

        Args:
            max_auc_loss: The AUC the user will give up, `>= 0`.

        Returns:
            `WITHIN` if the whole AUC-loss interval is within it, `OVER` if
            the whole interval is beyond it, else `STRADDLES`.
        """
        if -self.auc_change.low <= max_auc_loss:
            return WITHIN
        if -self.auc_change.high > max_auc_loss:
            return OVER
        return STRADDLES

    @property
    def pd_reduced(self) -> bool:
        """Whether the whole relative-PD-change interval is below 0."""
        return self.rel_pd_change.high < 0

    def to_json(self, max_auc_loss: float | None = None,
                budgets: Budgets | None = None) -> dict[str, object]:
        """JSON-ready: the row, its changes vs the baseline with their intervals, its costs.

        Args:
            max_auc_loss: Given, the content adds the budget status, whether
                the PD reduction is significant and `over_cost`.
            budgets: The cost budgets `over_cost` is measured against.

        Returns:
            The comparison as in results.json's `advice` candidates.
        """
        content = {
            "label": self.label, "spec": self.spec, "family": self.family, "beta": self.scale,
            "remedy": self.recipe.remedy_spec or None,
            "replicas": self.replicas, "auc_mean": self.auc_mean, "rel_pd": self.rel_pd,
            "auc_change": self.auc_change.estimate,
            "auc_change_ci": [self.auc_change.low, self.auc_change.high],
            "rel_pd_change": self.rel_pd_change.estimate,
            "rel_pd_change_ci": [self.rel_pd_change.low, self.rel_pd_change.high],
            "train_cost": self.train_cost, "serve_cost": self.serve_cost,
        }
        if max_auc_loss is not None:
            content.update(budget=self.budget_status(max_auc_loss), pd_reduced=self.pd_reduced,
                           over_cost=self.cost_problems(budgets))
        return content


def scale_of(activation: Activation) -> float | None:
    """The family's scale parameter (β today; a relative β would change only this).

    Args:
        activation: An activation.

    Returns:
        Its β, or None for an activation without one.
    """
    return activation.beta if "beta" in activation.entry.parameters else None


def with_scale(activation: Activation, scale: float) -> Activation:
    """`activation` with its scale parameter set to `scale`.

    Args:
        activation: An activation with a scale parameter.
        scale: The new β, `> 0`.

    Returns:
        A new `Activation`.
    """
    return dataclasses.replace(activation, beta=scale)


def family_name(activation: Activation) -> str:
    """The activation without its scale: `smelu`, `rescu(order=2)`, `gelu`.

    Args:
        activation: An activation.

    Returns:
        Its name, with its parameters other than β.
    """
    fixed = [p for p in activation.entry.parameters if p != "beta"]
    if not fixed:
        return activation.name
    return f"{activation.name}({', '.join(f'{p}={getattr(activation, p)}' for p in fixed)})"


def row_recipe(row: Mapping[str, object]) -> Recipe:
    """The activation and remedies of a result row, checked against the row's label.

    Rows of `--beta_scale=relative` (`"beta_scale": "relative"`) are labelled
    `smelu(β=1.2σ)`: their activation's β is then k. Rows with remedies
    carry them in `remedy` (e.g. `ema:0.999`) and are labelled
    `relu+ema(0.999)`.

    Args:
        row: A result row (`label`, and `spec` or `activation` and `beta`,
            and `remedy` if any).

    Returns:
        The row's recipe.

    Raises:
        ValueError: The row's activation and remedy fields do not give its
            label (e.g. a RESCU row without `spec`), or its `remedy` does not parse.
    """
    label = row.get("label")
    if "spec" in row:
        activation = Activation.parse(row["spec"])
    else:
        activation = Activation(row.get("activation"), beta=row.get("beta"))
    try:
        remedies = Recipe.parse(row["remedy"]).remedies if row.get("remedy") else ()
    except ValueError as error:
        raise ValueError(f"Result row {label!r}: {error}") from None
    recipe = Recipe(activation, remedies)
    expected = recipe.label(relative_label(activation) if row.get("beta_scale") == "relative"
                            else activation.label)
    if expected != label:
        raise ValueError(
            f"Result row {label!r} describes {'recipe' if remedies else 'activation'} "
            f"{expected!r}; rows of "
            "activations with parameters besides beta need `spec` (e.g. 'rescu:0.3:3'). "
            f"Received: spec={row.get('spec')!r}, activation={row.get('activation')!r}, "
            f"beta={row.get('beta')!r}, remedy={row.get('remedy')!r}"
        )
    return recipe


def row_activation(row: Mapping[str, object]) -> Activation:
    """The activation of a result row (`row_recipe`'s), checked against the row's label.

    Args:
        row: A result row.

    Returns:
        The row's activation.

    Raises:
        ValueError: As `row_recipe`.
    """
    return row_recipe(row).activation


def _checked_array(row, field, size, label) -> np.ndarray:
    values = np.asarray(row[field], np.float64)
    if values.shape != (size,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            f"Result row {label!r}: `{field}` must hold {size} finite numbers >= 0 for "
            f"replicas={row['replicas']}. Received: {field} of shape {values.shape}"
        )
    return values


def _check_mean(row, field, values, label) -> None:
    if field in row and not math.isclose(float(np.mean(values)), row[field],
                                         rel_tol=1e-6, abs_tol=1e-12):
        raise ValueError(
            f"Result row {label!r}: the mean of its per-replica values is "
            f"{np.mean(values)!r}, not its `{field}`. Received: {field}={row[field]!r}"
        )


def _replica_data(row: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """A row's per-replica AUCs `[R]` and pair relative PDs as an `[R, R]` matrix."""
    label = row.get("label")
    missing = [f for f in ("replicas", "aucs", "rel_pd_pairs") if f not in row]
    if missing:
        raise ValueError(
            f"Result row {label!r} lacks {missing}: the advisor needs every replica's AUC "
            "(`aucs`) and every replica pair's relative PD (`rel_pd_pairs`)."
        )
    replicas = row["replicas"]
    if not is_int(replicas) or replicas < MIN_REPLICAS:
        raise ValueError(
            f"The advisor needs >= {MIN_REPLICAS} replicas per row for its intervals. "
            f"Received: replicas={replicas!r} in row {label!r}"
        )
    aucs = _checked_array(row, "aucs", replicas, label)
    pairs = _checked_array(row, "rel_pd_pairs", replicas * (replicas - 1) // 2, label)
    _check_mean(row, "auc_mean", aucs, label)
    _check_mean(row, "rel_pd", pairs, label)
    distances = np.zeros((replicas, replicas))
    rows, cols = np.triu_indices(replicas, k=1)
    distances[rows, cols] = distances[cols, rows] = pairs
    return aucs, distances


def _bootstrap(aucs, distances, n_resamples, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mean AUC and mean pair PD of `n_resamples` resamples of a row's replicas.

    A resample holds replica i `c_i` times; its mean PD over pairs of distinct
    replicas is `(c^T D c) / (R^2 - sum c_i^2)` (as in
    `tf_smelu.metrics.pairwise_pd`). Resamples of a single replica have no
    pair and are drawn again.
    """
    r = len(aucs)
    kept = []
    while sum(len(k) for k in kept) < n_resamples:
        counts = rng.multinomial(r, np.full(r, 1.0 / r), size=n_resamples).astype(np.float64)
        kept.append(counts[np.count_nonzero(counts, axis=1) >= 2])
    counts = np.concatenate(kept)[:n_resamples]
    pair_weights = r * r - np.sum(counts * counts, axis=1)
    pds = np.einsum("bi,ij,bj->b", counts, distances, counts) / pair_weights
    return counts @ aucs / r, pds


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Every row of one source set against the baseline (see `analyze`).

    Attributes:
        baseline: The baseline row (its changes are exactly 0).
        candidates: Every other row, in row order.
        confidence: Level of the intervals.
        pd_draws: Each row's bootstrap draws of its mean relative PD, by
            label (for intervals of differences between rows).
    """

    baseline: Comparison
    candidates: tuple[Comparison, ...]
    confidence: float
    pd_draws: Mapping[str, np.ndarray] = dataclasses.field(repr=False, compare=False)

    def get(self, label: str) -> Comparison | None:
        """The comparison of the row labelled `label` (the baseline included).

        Args:
            label: A row's label, e.g. `smelu(β=0.3)`.

        Returns:
            Its comparison, or None if no row has that label.
        """
        return next((c for c in (self.baseline, *self.candidates) if c.label == label), None)

    def pd_difference(self, a: Comparison, b: Comparison) -> Interval:
        """Relative PD of `a` minus that of `b`, with its interval.

        Args:
            a: A comparison of this analysis.
            b: Another.

        Returns:
            The difference of their mean relative PDs, with a bootstrap
            interval at the analysis' confidence.
        """
        return _interval(a.rel_pd - b.rel_pd, self.pd_draws[a.label] - self.pd_draws[b.label],
                         self.confidence)


def _interval(estimate, draws, confidence) -> Interval:
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(estimate), float(low), float(high))


def _check_rows(rows: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    rows = list(rows)
    if not rows:
        raise ValueError("`rows` must hold at least the baseline's result row.")
    source_sets = sorted({"+".join(r.get("sources", ())) or "none" for r in rows})
    if len(source_sets) > 1:
        raise ValueError(
            "Rows compared with each other must share their sources; advise on each source "
            f"set separately. Received: sources sets {source_sets}"
        )
    labels = [r.get("label") for r in rows]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"Each activation needs one row. Received: several rows of {duplicates}")
    return rows


def _require_settings(confidence, n_resamples) -> None:
    require_in_range("confidence", confidence, low=0, high=1,
                     low_inclusive=False, high_inclusive=False)
    require_positive_int("n_resamples", n_resamples)


def baseline_has_pd(rows: Sequence[Mapping[str, object]], baseline: str = BASELINE) -> bool:
    """Whether the baseline's replicas disagree at all (else there is nothing to reduce).

    Args:
        rows: Result rows of one source set.
        baseline: Spec of the baseline activation.

    Returns:
        True if some pair of the baseline's replicas has a non-zero PD.

    Raises:
        ValueError: As `analyze` (no baseline row, rows of several source
            sets, duplicate labels).
    """
    return bool(np.any(_replica_data(_baseline_row(_check_rows(rows), baseline))[1]))


def _baseline_row(rows, baseline):
    label = Activation.parse(baseline).label
    row = next((r for r in rows if r.get("label") == label), None)
    if row is None:
        raise ValueError(
            f"No {label!r} row among the rows: changes are measured against it. "
            f"Received: rows {[r.get('label') for r in rows]}"
        )
    return row


def analyze(
    rows: Sequence[Mapping[str, object]],
    *,
    baseline: str = BASELINE,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Analysis:
    """Compares every row of one source set with the baseline, with intervals.

    Args:
        rows: Result rows sharing their `sources`, one per activation, with
            the fields the module docstring lists.
        baseline: Spec of the baseline activation.
        confidence: Level of the intervals, in (0, 1).
        n_resamples: Bootstrap resamples per row.
        seed: Seed of the resampling; the same rows and seed give the same
            intervals.

    Returns:
        An `Analysis`; each comparison carries its costs relative to the
        baseline row (`tf_smelu.experiment.costs.row_costs`).

    Raises:
        ValueError: Rows lack fields or replicas, mix source sets, repeat an
            activation, miss the baseline, or the baseline's replicas agree
            (exactly, on every pair or on the pairs of a resample): then its
            relative PD is 0 and a change relative to it is undefined.
    """
    _require_settings(confidence, n_resamples)
    rows = _check_rows(rows)
    baseline_row = _baseline_row(rows, baseline)
    baseline_label = baseline_row["label"]
    draws, means = {}, {}
    for row in rows:
        aucs, distances = _replica_data(row)
        rng = np.random.default_rng([seed, zlib.crc32(row["label"].encode("utf-8"))])
        draws[row["label"]] = _bootstrap(aucs, distances, n_resamples, rng)
        means[row["label"]] = float(np.mean(aucs)), float(np.mean(
            distances[np.triu_indices(len(aucs), k=1)]))
    base_auc, base_pd = draws[baseline_label]
    if not np.all(base_pd > 0):
        raise ValueError(
            f"The baseline {baseline_label!r} has replicas that predict identically, so a "
            "relative change of its PD is undefined; use more replicas or other sources."
        )
    base_auc_mean, base_rel_pd = means[baseline_label]
    results = {}
    for row in rows:
        label = row["label"]
        (auc_mean, rel_pd), (auc_draws, pd_draws) = means[label], draws[label]
        recipe = row_recipe(row)
        [with_ratios] = with_costs([dict(row)], baseline_row)
        costs = row_costs(with_ratios, expected_costs(recipe))
        results[label] = Comparison(
            label, recipe.activation, row["replicas"], auc_mean, rel_pd,
            _interval(auc_mean - base_auc_mean, auc_draws - base_auc, confidence),
            _interval(rel_pd / base_rel_pd - 1, pd_draws / base_pd - 1, confidence),
            recipe.remedies, costs["train"], costs["serve"],
        )
    zero = Interval(0.0, 0.0, 0.0)
    return Analysis(
        baseline=dataclasses.replace(results.pop(baseline_label), auc_change=zero,
                                     rel_pd_change=zero),
        candidates=tuple(results.values()),
        confidence=confidence,
        pd_draws={label: pds for label, (_, pds) in draws.items()},
    )


def pareto_frontier(rel_pd: Sequence[float], auc: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both relative PD and AUC.

    Point j dominates point i when `rel_pd[j] <= rel_pd[i]` and
    `auc[j] >= auc[i]`, one of them strictly; equal points are all kept.

    Args:
        rel_pd: Relative PD of each point (lower is better).
        auc: AUC of each point (higher is better), as many as `rel_pd`.

    Returns:
        The non-dominated indices, by decreasing AUC (then increasing PD).

    Raises:
        ValueError: The sequences differ in length or hold non-finite numbers.
    """
    pd, auc = np.asarray(rel_pd, np.float64), np.asarray(auc, np.float64)
    if pd.shape != auc.shape or pd.ndim != 1 or not np.all(np.isfinite(pd) & np.isfinite(auc)):
        raise ValueError(
            "`rel_pd` and `auc` must be equally long sequences of finite numbers. "
            f"Received: rel_pd={rel_pd!r}, auc={auc!r}"
        )
    dominated = (pd[None, :] <= pd[:, None]) & (auc[None, :] >= auc[:, None]) & (
        (pd[None, :] < pd[:, None]) | (auc[None, :] > auc[:, None]))
    keep = np.flatnonzero(~dominated.any(axis=1))
    return sorted(keep.tolist(), key=lambda i: (-auc[i], pd[i], i))


def family_frontiers(analysis: Analysis) -> dict[str, tuple[Comparison, ...]]:
    """Each family's Pareto frontier (point estimates), the baseline included.

    Families are the activations with a scale parameter (β), in row order;
    the baseline is β -> 0's end of every family, so it is on the frontier
    unless a β beats it on both PD and AUC.

    Args:
        analysis: The rows against the baseline.

    Returns:
        Family name -> its frontier, by decreasing AUC.
    """
    families: dict[str, list[Comparison]] = {}
    for c in analysis.candidates:
        if c.scale is not None:
            families.setdefault(c.family, [analysis.baseline]).append(c)
    return {family: _frontier(members) for family, members in families.items()}


def _frontier(members: Sequence[Comparison]) -> tuple[Comparison, ...]:
    return tuple(members[i] for i in pareto_frontier([m.rel_pd for m in members],
                                                     [m.auc_mean for m in members]))


def frontier(analysis: Analysis, budgets: Budgets | None = None) -> tuple[Comparison, ...]:
    """The Pareto frontier across every row, remedies and activations alike.

    Point estimates of relative PD and AUC (equivalently, of their changes
    vs the baseline), over the baseline and every candidate within the cost
    `budgets` (one over a budget is no option, however good).

    Args:
        analysis: The rows against the baseline.
        budgets: The cost budgets, or None.

    Returns:
        The frontier, by decreasing AUC.
    """
    return _frontier([analysis.baseline, *(c for c in analysis.candidates
                                           if not c.cost_problems(budgets))])


def _percent(i: Interval) -> str:
    return f"{i.estimate:+.0%} [{i.low:+.0%}, {i.high:+.0%}]"


def _auc(i: Interval) -> str:
    return f"{i.estimate:+.4f} [{i.low:+.4f}, {i.high:+.4f}]"


def format_changes(comparison: Mapping[str, object]) -> str:
    """`ΔAUC [interval]  ΔrelPD [interval]` of a `Comparison.to_json()`, for tables.

    Args:
        comparison: A `Comparison.to_json()` (e.g. from results.json).

    Returns:
        The two changes with their intervals, right-aligned.
    """
    auc = Interval(comparison["auc_change"], *comparison["auc_change_ci"])
    pd = Interval(comparison["rel_pd_change"], *comparison["rel_pd_change_ci"])
    return f"{_auc(auc):>26}  {_percent(pd):>18}"


def _costs(c: Comparison) -> str:
    return f"cost ×{c.train_cost:.3g} to train, ×{c.serve_cost:.3g} to serve"


def _describe(c: Comparison, max_auc_loss: float | None = None,
              budgets: Budgets | None = None) -> str:
    text = f"{c.label}: relative PD {_percent(c.rel_pd_change)} at AUC {_auc(c.auc_change)}"
    text += f" (R={c.replicas}"
    if c.costs != {"train": 1.0, "serve": 1.0}:
        text += f", {_costs(c)}"
    if max_auc_loss is not None:
        status = c.budget_status(max_auc_loss)
        text += {WITHIN: ", within budget", OVER: ", over budget",
                 STRADDLES: ", may exceed the budget"}[status]
        if status == WITHIN and not c.pd_reduced:
            text += ", PD reduction not significant"
    problems = c.cost_problems(budgets)
    if problems:
        text += f", over the cost budget: {', '.join(problems)}"
    return text + ")"


def _budget_text(max_auc_loss: float, budgets: Budgets | None) -> str:
    """`AUC loss <= 0.002, serve cost <= 1`."""
    return ", ".join([f"AUC loss <= {max_auc_loss:g}", *(
        f"{kind} cost <= {budgets[name]:g}" for name, kind in BUDGETS.items()
        if (budgets or {}).get(name) is not None)])


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """What to use for one source set, why, and how sure (see `recommend`).

    Attributes:
        choice: The recommended candidate; `None`: keep the baseline.
        max_auc_loss: The AUC budget.
        text: The recommendation in plain words, several lines.
        analysis: All rows against the baseline; `None` when the baseline's
            replicas agree exactly (nothing to reduce).
        indistinguishable: Other candidates within budget whose PD cannot be
            told apart from the choice's.
        best_per_family: Per family (and reference), its candidate with the
            largest significant PD reduction within budget, or `None`.
        budgets: The cost budgets (`max_train_cost`, `max_serve_cost`: limit or None).
        ruled_out: Remedies not trained because their expected costs exceed
            `budgets`: label -> why.
    """

    choice: Comparison | None
    max_auc_loss: float
    text: str
    analysis: Analysis | None
    indistinguishable: tuple[Comparison, ...] = ()
    best_per_family: Mapping[str, Comparison | None] = dataclasses.field(default_factory=dict)
    budgets: Budgets = dataclasses.field(default_factory=dict)
    ruled_out: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def frontiers(self) -> dict[str, tuple[Comparison, ...]]:
        """`family_frontiers` of the analysis (empty without one)."""
        return family_frontiers(self.analysis) if self.analysis else {}

    @property
    def frontier(self) -> tuple[Comparison, ...]:
        """`frontier` of the analysis across every remedy (empty without one)."""
        return frontier(self.analysis, self.budgets) if self.analysis else ()

    def to_json(self) -> dict[str, object]:
        """JSON-ready: the choice, the text, every candidate, the frontiers and the budgets.

        Returns:
            The recommendation as results.json's `advice` holds it.
        """
        budget = self.max_auc_loss
        analysis = self.analysis
        return {
            "max_auc_loss": budget,
            **{name: self.budgets.get(name) for name in BUDGETS},
            "confidence": analysis.confidence if analysis else None,
            "baseline": analysis.baseline.to_json(budget, self.budgets) if analysis else None,
            "choice": self.choice.spec if self.choice else None,
            "indistinguishable": [c.spec for c in self.indistinguishable],
            "text": self.text,
            "candidates": [c.to_json(budget, self.budgets)
                           for c in analysis.candidates] if analysis else [],
            "frontiers": {
                family: [{"label": c.label, "spec": c.spec, "auc_mean": c.auc_mean,
                          "rel_pd": c.rel_pd} for c in members]
                for family, members in self.frontiers.items()
            },
            "frontier": [{"label": c.label, "spec": c.spec, "auc_change": c.auc_change.estimate,
                          "rel_pd_change": c.rel_pd_change.estimate, "train_cost": c.train_cost,
                          "serve_cost": c.serve_cost} for c in self.frontier],
            "ruled_out": dict(self.ruled_out),
        }


def _preference(c: Comparison) -> tuple:
    """Largest PD reduction first, then higher AUC, then the label (for determinism)."""
    return c.rel_pd_change.estimate, -c.auc_change.estimate, c.label


def _decide(analysis: Analysis, max_auc_loss: float, budgets: Budgets | None = None):
    """The choice (or None), the candidates indistinguishable from it, each family's best."""
    eligible = [c for c in analysis.candidates if c.fits(max_auc_loss, budgets) and c.pd_reduced]
    best_per_family: dict[str, Comparison | None] = dict.fromkeys(
        c.family for c in analysis.candidates)
    for c in sorted(eligible, key=_preference):
        best_per_family[c.family] = best_per_family[c.family] or c
    choice = min(eligible, key=_preference, default=None)
    ties = tuple(c for c in eligible
                 if c is not choice and analysis.pd_difference(c, choice).contains(0.0))
    return choice, ties, best_per_family


def recommend(
    rows: Sequence[Mapping[str, object]],
    max_auc_loss: float,
    *,
    baseline: str = BASELINE,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    max_train_cost: float | None = None,
    max_serve_cost: float | None = None,
    ruled_out: Mapping[str, str] | None = None,
) -> Recommendation:
    """Recommends an activation or remedy for one source set, or keeping the baseline.

    The decision rule is the module docstring's: the largest significant PD
    reduction among candidates whose whole AUC-loss interval is within
    `max_auc_loss` and whose costs are within the cost budgets.

    Args:
        rows: Result rows of one source set (see `analyze`).
        max_auc_loss: AUC the user will give up against the baseline, >= 0.
        baseline: Spec of the baseline activation.
        confidence: Level of every interval, in (0, 1).
        n_resamples: Bootstrap resamples per row.
        seed: Seed of the resampling.
        max_train_cost: Most training cost relative to the baseline (>= 1), or None.
        max_serve_cost: Most serving cost relative to the baseline (>= 1), or None.
        ruled_out: Candidates not trained because of the cost budgets, label -> why
            (named in the text).

    Returns:
        A `Recommendation`.

    Raises:
        ValueError: As `analyze`, or a cost budget below 1; a baseline whose
            replicas all agree gives "keep" (there is nothing to reduce).

    Examples:
        Rows summarized from six replicas' held-out predictions per
        activation (here made up: the same signal plus replica noise, half
        as much for smelu):

        ```python
        import numpy as np

        from tf_smelu.experiment import summarize_predictions
        from tf_smelu.experiment.advisor import recommend
        from tf_smelu.registry import Activation

        rng = np.random.default_rng(0)
        signal = rng.normal(size=3000)
        labels = (signal + rng.normal(size=3000) > 0).astype(float)

        def replicas(spread):  # [6, N] click probabilities
            return 1 / (1 + np.exp(-(signal + spread * rng.normal(size=(6, 3000)))))

        rows = [summarize_predictions(Activation.parse(spec), ["init"], replicas(spread), labels)
                for spec, spread in (("relu", 0.3), ("smelu:1", 0.15))]
        advice = recommend(rows, max_auc_loss=0.01)
        print(advice.text)  # use smelu(β=1) (smelu:1.0): relative PD -49% [...] ...
        assert advice.choice.spec == "smelu:1.0"
        ```
    """
    require_in_range("max_auc_loss", max_auc_loss, low=0)
    _require_settings(confidence, n_resamples)
    budgets = {"max_train_cost": max_train_cost, "max_serve_cost": max_serve_cost}
    for name, value in budgets.items():
        check_budget(name, value)
    ruled_out = dict(ruled_out or {})
    base_label = Activation.parse(baseline).label
    if not baseline_has_pd(rows, baseline):
        return Recommendation(
            None, max_auc_loss, f"keep {base_label}: its replicas predict identically under "
            "these sources (relative PD 0); there is nothing to reduce.", None,
            budgets=budgets, ruled_out=ruled_out)
    analysis = analyze(rows, baseline=baseline, confidence=confidence,
                       n_resamples=n_resamples, seed=seed)
    choice, ties, best_per_family = _decide(analysis, max_auc_loss, budgets)
    level = f"{confidence:.0%} intervals"
    budget_text = _budget_text(max_auc_loss, budgets)
    lines = []
    if choice is not None:
        chosen = next(r for r in rows if r["label"] == choice.label)
        spec = choice.spec if not chosen.get("beta_per_layer") else (
            f"{choice.spec} with --beta_scale=relative, β per hidden layer "
            + ", ".join(f"{b:.3g}" for b in chosen["beta_per_layer"].values()))
        lines.append(
            f"use {choice.label} ({spec}): relative PD {_percent(choice.rel_pd_change)} "
            f"at AUC {_auc(choice.auc_change)} vs {base_label} (R={choice.replicas} vs "
            f"R={analysis.baseline.replicas}; {_costs(choice)}; budget: {budget_text}, "
            f"{level})."
        )
        if ties:
            lines.append(
                f"{', '.join(c.label for c in (choice, *ties[:-1]))} and {ties[-1].label} are "
                f"indistinguishable in PD at R={'/'.join(str(c.replicas) for c in (choice, *ties))}"
                f": " + "; ".join(_describe(c) for c in ties) + "."
            )
    else:
        lines.append(
            f"keep {base_label}: nothing reduces relative PD significantly within the budget "
            f"({budget_text}; R={analysis.baseline.replicas} for {base_label}, {level})."
        )
        within = [c for c in analysis.candidates if c.fits(max_auc_loss, budgets)]
        if within:
            closest = min(within, key=lambda c: (c.rel_pd_change.estimate, c.label))
            lines.append(f"Closest within budget: {_describe(closest, max_auc_loss)}.")
        beyond = [c for c in analysis.candidates if not c.fits(max_auc_loss, budgets)]
        if beyond:
            best = min(beyond, key=lambda c: (c.rel_pd_change.estimate, c.label))
            lines.append(f"Best beyond budget: {_describe(best, max_auc_loss, budgets)}.")
    families = [f for f in best_per_family
                if any(c.family == f and c.scale is not None for c in analysis.candidates)]
    if families:
        lines.append("Best of each family within budget: " + "; ".join(
            _describe(best_per_family[f]) if best_per_family[f] else f"{f}: none"
            for f in families) + ".")
    for title, members in (
            ("Reference points", [c for c in analysis.candidates
                                  if c.scale is None and not c.remedies]),
            ("Remedies", [c for c in analysis.candidates if c.remedies])):
        if members:
            lines.append(f"{title}: " + "; ".join(
                _describe(c, max_auc_loss, budgets) for c in members) + ".")
    if ruled_out:
        lines.append("Not trained, over the cost budget: " + "; ".join(
            f"{label} ({why})" for label, why in ruled_out.items()) + ".")
    return Recommendation(choice, max_auc_loss, "\n".join(lines), analysis, ties,
                          best_per_family, budgets, ruled_out)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One step of the search: train the row of `activation` (and `remedies`) up to `replicas`.

    Attributes:
        activation: What to train.
        replicas: The row's R after the trial.
        extra_replicas: Replicas to train now (the row's first
            `replicas - extra_replicas` replicas exist already: replica seeds
            depend only on the replica's index, so the runner may train only
            the new ones and summarize all predictions together).
        reason: Why, in plain words.
        relative: β is k, a multiple of each layer's pre-activation σ
            (`--beta_scale=relative`): the row is labelled `smelu(β=1σ)`.
        remedies: The remedies to train with (`tf_smelu.remedies`).
        seed: Base seed of the replica seeds; None: the search's (the
            configured seed). The confirmation trains on a fresh one, and
            its rows carry `row_fields`.
    """

    activation: Activation
    replicas: int
    extra_replicas: int
    reason: str
    relative: bool = False
    remedies: tuple[Remedy, ...] = ()
    seed: int | None = None

    @property
    def recipe(self) -> Recipe:
        """The activation and the remedies, as the row trainers take them."""
        return Recipe(self.activation, self.remedies)

    @property
    def label(self) -> str:
        """The label of the row this trial trains."""
        return self.recipe.label(relative_label(self.activation) if self.relative
                                 else self.activation.label)

    @property
    def row_fields(self) -> dict[str, object]:
        """What the runner adds to the trial's row: `confirmation` and `seed` on fresh seeds."""
        return {} if self.seed is None else {CONFIRMATION: True, "seed": self.seed}

    def to_json(self) -> dict[str, object]:
        """JSON-ready: spec, label, replicas, why, and the seed of a confirmation.

        Returns:
            The trial as results.json's `advice` lists it.
        """
        return {"spec": recipe_spec(self.recipe), "label": self.label,
                "replicas": self.replicas, "extra_replicas": self.extra_replicas,
                "reason": self.reason, **({} if self.seed is None else {"seed": self.seed})}


def _as_activation(value: Activation | str) -> Activation:
    return value if isinstance(value, Activation) else Activation.parse(value)


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """What the search looks for and what it may spend (see the module docstring).

    Attributes:
        max_auc_loss: AUC the user will give up against the baseline, >= 0.
        families: Activations with a scale parameter to search (their own β
            is ignored), one per family; specs or `Activation`s.
        references: Activations without one, trained once as reference
            points (and as candidates).
        baseline: What every row is compared with.
        scale_grid: The coarse grid of β, increasing (default
            `DEFAULT_SCALE_GRID`, or `RELATIVE_SCALE_GRID` with `relative`).
        replicas: R of every new row, >= `MIN_REPLICAS`.
        max_replicas: Most replicas any row gets.
        resolution: Bisection stops when the bracket's ends are within a
            factor `1 + resolution`.
        time_budget: Seconds the search may take (`None`: no limit).
        confidence: Level of every interval.
        n_resamples: Bootstrap resamples per row.
        seed: Seed of the resampling; the confirmation's replica seeds derive
            from it (`confirmation_seed`), the search's are the runner's.
        relative: β is k, a multiple of each layer's pre-activation σ
            (trials are labelled `smelu(β=1σ)`); `scale_grid` is then in k
            (default `RELATIVE_SCALE_GRID`).
        remedies: Recipes with remedies (`tf_smelu.remedies.Recipe` or
            specs such as `ensemble:2`, `smelu:1+ema:0.999`; one without an
            activation applies to the baseline), candidates with fixed
            parameters, trained like references.
        max_train_cost: Most training cost a choice may have (training steps
            relative to one baseline model), >= 1; None: no limit.
        max_serve_cost: Most serving cost a choice may have (FLOPs, else
            parameters, relative to one baseline model), >= 1; None: no limit.

    Raises:
        ValueError: A setting out of range, or cost budgets that rule out
            every remedy when no activation is searched or referenced.
    """

    max_auc_loss: float
    families: tuple[Activation, ...] = tuple(
        e.name for e in ACTIVATIONS.values() if "beta" in e.parameters)
    references: tuple[Activation, ...] = DEFAULT_REFERENCES
    baseline: Activation = BASELINE
    scale_grid: tuple[float, ...] | None = None
    replicas: int = 8
    max_replicas: int = 32
    resolution: float = 0.25
    time_budget: float | None = None
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0
    relative: bool = False
    remedies: tuple[Recipe, ...] = ()
    max_train_cost: float | None = None
    max_serve_cost: float | None = None

    def __post_init__(self):
        require_in_range("max_auc_loss", self.max_auc_loss, low=0)
        self._check_remedies_and_budgets()
        if self.scale_grid is None:
            object.__setattr__(self, "scale_grid",
                               RELATIVE_SCALE_GRID if self.relative else DEFAULT_SCALE_GRID)
        object.__setattr__(self, "baseline", _as_activation(self.baseline))
        for name in ("families", "references"):
            object.__setattr__(self, name, tuple(_as_activation(a) for a in getattr(self, name)))
        unscaled = [str(a) for a in self.families if scale_of(a) is None]
        scaled = [str(a) for a in self.references if scale_of(a) is not None]
        if unscaled or scaled:
            raise ValueError(
                "`families` must have a scale parameter (beta) and `references` none. "
                f"Received: families {unscaled} without, references {scaled} with one")
        names = [family_name(a) for a in self.families]
        if len(set(names)) < len(names):
            raise ValueError(f"`families` names a family twice. Received: families={names}")
        grid = tuple(float(b) for b in self.scale_grid)
        if not grid or any(not (math.isfinite(b) and b > 0) for b in grid) or list(grid) != sorted(
                set(grid)):
            raise ValueError(
                "`scale_grid` must be increasing finite numbers > 0. "
                f"Received: scale_grid={self.scale_grid!r}")
        object.__setattr__(self, "scale_grid", grid)
        require_positive_int("replicas", self.replicas)
        if self.replicas < MIN_REPLICAS or self.max_replicas < self.replicas:
            raise ValueError(
                f"Need {MIN_REPLICAS} <= replicas <= max_replicas. Received: "
                f"replicas={self.replicas!r}, max_replicas={self.max_replicas!r}")
        require_positive_int("max_replicas", self.max_replicas)
        require_in_range("resolution", self.resolution, low=0, low_inclusive=False)
        if self.time_budget is not None:
            require_in_range("time_budget", self.time_budget, low=0, low_inclusive=False)
        _require_settings(self.confidence, self.n_resamples)

    def _check_remedies_and_budgets(self) -> None:
        object.__setattr__(self, "baseline", _as_activation(self.baseline))
        recipes = tuple(Recipe.parse(r).with_activation(self.baseline) for r in self.remedies)
        plain = [str(r.activation) for r in recipes if not r.remedies]
        if plain:
            raise ValueError(f"`remedies` must each name a remedy; put {plain} in `families` "
                             f"or `references`. Received: remedies={self.remedies!r}")
        object.__setattr__(self, "remedies", recipes)
        for name in BUDGETS:
            check_budget(name, getattr(self, name))
        references = [a for a in self.references if _as_activation(a) != self.baseline]
        require_candidates(self.ruled_out, len(self.families) + len(references)
                           + len(recipes) - len(self.ruled_out), self.budgets)

    @property
    def budgets(self) -> dict[str, float | None]:
        """`max_train_cost` and `max_serve_cost` by name."""
        return {name: getattr(self, name) for name in BUDGETS}

    @property
    def ruled_out(self) -> dict[str, str]:
        """Remedies whose expected costs exceed the budgets (never trained): label -> why.

        A teacher or previous model counts amortized over `max_replicas`,
        the cheapest its row can be.
        """
        return ruled_out(self.remedies, self.budgets, self.baseline, self.max_replicas)

    @property
    def affordable_remedies(self) -> tuple[Recipe, ...]:
        """`remedies` that `ruled_out` keeps."""
        excluded = self.ruled_out
        return tuple(r for r in self.remedies if r.label(r.activation.label) not in excluded)

    @classmethod
    def from_activations(
        cls, activations: Sequence[Activation | str], max_auc_loss: float, **settings: object
    ) -> SearchSettings:
        """Settings whose families and references are those among `activations`.

        An activation with β stands for its family (its β is ignored); one
        without is a reference point; the baseline is always trained.

        Args:
            activations: Activations or their specs (e.g. `--activations`).
            max_auc_loss: The AUC budget, `>= 0`.
            **settings: Other fields of `SearchSettings` (e.g. `baseline`,
                `remedies`, `max_serve_cost`).

        Returns:
            The settings.

        Raises:
            ValueError: if a spec or setting is invalid.
        """
        parsed = [_as_activation(a) for a in activations]
        baseline = _as_activation(settings.pop("baseline", BASELINE))
        families = {family_name(a): a for a in parsed if scale_of(a) is not None}
        references = [a for a in dict.fromkeys(parsed) if scale_of(a) is None and a != baseline]
        return cls(max_auc_loss, tuple(families.values()), tuple(references), baseline,
                   **settings)


def _round(value: float) -> float:
    """Two significant digits: β values people can read, and a finite set to visit."""
    return float(f"{value:.2g}")


def _new(what: Activation | Recipe, settings: SearchSettings, reason: str) -> Trial:
    recipe = Recipe.parse(what)
    return Trial(recipe.activation, settings.replicas, settings.replicas, reason,
                 relative=settings.relative, remedies=recipe.remedies)


def _more(c: Comparison, settings: SearchSettings, reason: str) -> Trial | None:
    target = min(2 * c.replicas, settings.max_replicas)
    return Trial(c.activation, target, target - c.replicas, reason,
                 relative=settings.relative, remedies=c.remedies) if target > c.replicas \
        else None


def _family_step(family: Activation, analysis: Analysis, settings: SearchSettings) -> list[Trial]:
    """The next trials of one family's search (steps 2 and 3 of the module docstring)."""
    budget = settings.max_auc_loss
    members = sorted((c for c in analysis.candidates if c.family == family_name(family)),
                     key=lambda c: c.scale)
    grid = settings.scale_grid

    def status(c):
        s = c.budget_status(budget)
        return OVER if s == STRADDLES and c.replicas >= settings.max_replicas else s

    over = [c.scale for c in members if status(c) == OVER]
    upper = min(over, default=None)
    lower = max((c.scale for c in members if status(c) == WITHIN
                 and (upper is None or c.scale < upper)), default=None)
    open_rows = [c for c in members if status(c) == STRADDLES
                 and (lower is None or c.scale > lower) and (upper is None or c.scale < upper)]
    evaluated = {c.scale for c in members}
    # Climb the grid before adding replicas: with noisy AUCs every row straddles the budget at
    # first, and a search that doubled R there would spend its time on one β instead of
    # mapping the family's frontier.
    climb = next((b for b in grid if b > max(evaluated, default=0.0)), None) \
        if upper is None else None
    if climb is not None:
        return [_new(with_scale(family, climb), settings, "coarse grid of β")]
    if open_rows:
        return [_more(c, settings, f"its AUC-loss interval [{-c.auc_change.high:.4f}, "
                      f"{-c.auc_change.low:.4f}] straddles the budget {budget:g}")
                for c in open_rows]
    if upper is None:
        return []
    if lower is None:
        step = _round(upper / 2)
        if step < grid[0] / 4 or step in evaluated:
            return []
        reason = f"β={upper:g} is over budget: halving"
    else:
        if upper / lower <= 1 + settings.resolution:
            return []
        step = _round(math.sqrt(lower * upper))
        if not lower < step < upper or step in evaluated:
            return []
        reason = f"bisection between β={lower:g} (within budget) and β={upper:g} (over)"
    return [_new(with_scale(family, step), settings, reason)]


def _refinements(analysis: Analysis, settings: SearchSettings) -> list[Trial]:
    """Replicas where the decision is uncertain (step 4 of the module docstring)."""
    budget = settings.max_auc_loss
    choice, ties, best_per_family = _decide(analysis, budget, settings.budgets)
    best = choice.rel_pd_change.estimate if choice else 0.0
    searched = {family_name(f) for f in settings.families}
    wanted: list[tuple[Comparison, str]] = []
    # Replicas cannot bring a row within a cost budget: rows over one get none.
    for c in (c for c in analysis.candidates if not c.cost_problems(settings.budgets)):
        status = c.budget_status(budget)
        if status == STRADDLES and c.family not in searched and c.rel_pd_change.estimate < best:
            reason = (f"its AUC-loss interval straddles the budget {budget:g} and its PD could "
                      "beat the choice")
            wanted.append((c, reason))
        elif status == WITHIN and not c.pd_reduced and c.rel_pd_change.estimate < best:
            reason = f"its PD change {_percent(c.rel_pd_change)} is not significant yet"
            wanted += [(c, reason), (analysis.baseline, f"{c.label}: {reason}")]
    # Replicas decide between families; bisection, not replicas, decides β within one.
    for c in (c for c in ties if c.family != choice.family and best_per_family[c.family] is c):
        reason = f"PD indistinguishable between {choice.label} and {c.label}"
        wanted += [(c, reason), (choice, reason)]
    trials: dict[str, Trial] = {}
    for c, reason in wanted:
        trial = _more(c, settings, reason)
        if trial is not None:
            trials.setdefault(c.label, trial)
    return list(trials.values())


def next_candidates(
    family: Activation | str, rows: Sequence[Mapping[str, object]], settings: SearchSettings
) -> list[Trial]:
    """The next trials of one family's search (the baseline must have a row).

    Args:
        family: The family, e.g. `"smelu"` (its β is ignored).
        rows: Result rows of one source set, the baseline's included.
        settings: The search's settings.

    Returns:
        New β rows or more replicas for open rows; empty when the family's
        search has ended.

    Raises:
        ValueError: if `family` has no scale parameter, or the rows are
            invalid (as for `analyze`).
    """
    family = _as_activation(family)
    if scale_of(family) is None:
        raise ValueError(f"`family` must have a scale parameter (beta). Received: {family}")
    analysis = analyze(rows, baseline=str(settings.baseline), confidence=settings.confidence,
                       n_resamples=settings.n_resamples, seed=settings.seed)
    if not any(c.family == family_name(family) for c in analysis.candidates):
        return [_new(with_scale(family, settings.scale_grid[0]), settings, "coarse grid of β")]
    return _family_step(family, analysis, settings)


def _untrained(trials: Sequence[Trial], rows: Sequence[Mapping[str, object]]) -> list[Trial]:
    """The trials whose label no row of `rows` has (in order): those not trained yet."""
    done = {r["label"] for r in rows}
    return [t for t in trials if t.label not in done]


def plan(rows: Sequence[Mapping[str, object]], settings: SearchSettings) -> list[Trial]:
    """The next trials of the search, in order (see the module docstring).

    Args:
        rows: Result rows of one source set so far (possibly none).
        settings: The search's settings.

    Returns:
        The trials to run next, most important first; empty when the search
        has ended.
    """
    rows = list(rows)
    baseline = _new(settings.baseline, settings, "the baseline")
    # Reference points come last: they only frame the answer, so a time budget
    # that runs out must cut them, not the remedies and β the user asked about.
    trials = _untrained([baseline, *(_new(r, settings, "remedy")
                                     for r in settings.affordable_remedies)], rows)
    references = _untrained([_new(r, settings, "reference point") for r in settings.references],
                            rows)
    # A remedy row (`smelu:1+ema:0.999`) is no member of its activation's β family.
    activations = [row_activation(r) for r in rows if not r.get("remedy")]
    unsearched = [f for f in settings.families
                  if not any(family_name(a) == family_name(f) for a in activations)]
    trials += [_new(with_scale(f, settings.scale_grid[0]), settings, "coarse grid of β")
               for f in unsearched]
    if baseline in trials:
        return trials + references
    if not baseline_has_pd(rows, str(settings.baseline)):
        return []
    analysis = analyze(rows, baseline=str(settings.baseline), confidence=settings.confidence,
                       n_resamples=settings.n_resamples, seed=settings.seed)
    for family in settings.families:
        if family not in unsearched:
            trials += _family_step(family, analysis, settings)
    trials += references
    return _baseline_keeps_up(trials or _refinements(analysis, settings), analysis, settings)


def _baseline_keeps_up(trials: list[Trial], analysis: Analysis, settings: SearchSettings
                       ) -> list[Trial]:
    """Puts the baseline first, at the largest R of `trials`, when it has fewer.

    Every decision is about a difference to the baseline, which is only as
    sure as both rows: replicas spent on a candidate alone would leave the
    interval of its PD change as wide as the baseline's R makes it.
    """
    baseline = analysis.baseline
    target = max((t.replicas for t in trials), default=0)
    if target <= baseline.replicas or any(t.label == baseline.label for t in trials):
        return trials
    reason = (f"the baseline keeps up with R={target}: a change vs {baseline.label} is only as "
              "sure as both rows")
    return [Trial(settings.baseline, target, target - baseline.replicas, reason,
                  relative=settings.relative), *trials]


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """The choice and the baseline measured again on fresh replica seeds (see `confirm`).

    Attributes:
        seed: Base seed of the fresh replicas (`confirmation_seed`).
        baseline: The baseline's new row against itself.
        choice: The choice's new row against the new baseline row.
        problems: Why the answer did not hold (empty: it held).
        text: One line in plain words.
    """

    seed: int
    baseline: Comparison
    choice: Comparison
    problems: tuple[str, ...]
    text: str

    @property
    def held(self) -> bool:
        """Still within every budget, and PD still significantly reduced."""
        return not self.problems

    def to_json(self, max_auc_loss: float, budgets: Budgets) -> dict[str, object]:
        """JSON-ready: whether it held, why not, the seed and both rows' comparisons.

        Args:
            max_auc_loss: The AUC budget.
            budgets: The cost budgets.

        Returns:
            The confirmation as results.json's `advice` holds it.
        """
        return {"held": self.held, "problems": list(self.problems), "seed": self.seed,
                "rows": [self.baseline.label, self.choice.label], "text": self.text,
                "baseline": self.baseline.to_json(max_auc_loss, budgets),
                "choice": self.choice.to_json(max_auc_loss, budgets)}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The rows a search ended with, the trials it ran, why it stopped, its advice.

    Attributes:
        rows: The search's rows (never the confirmation's).
        trials: The trials run, in order.
        stopped: Why the search stopped.
        recommendation: The advice over `rows`.
        confirmation: The choice re-measured on fresh seeds (`confirm`);
            None before `confirm`, or when the advice is to keep the baseline.
        confirmation_rows: The confirmation's rows (baseline, choice).
    """

    rows: tuple[dict, ...]
    trials: tuple[Trial, ...]
    stopped: str
    recommendation: Recommendation
    confirmation: Confirmation | None = None
    confirmation_rows: tuple[dict, ...] = ()

    @property
    def text(self) -> str:
        """The recommendation's text, then whether the confirmation held."""
        return "\n".join([self.recommendation.text, *(
            [self.confirmation.text] if self.confirmation else [])])

    def to_json(self) -> dict[str, object]:
        """JSON-ready: the recommendation's, the trials, why the search stopped, the confirmation.

        Returns:
            `Recommendation.to_json()` with `trials`, `stopped` and
            `confirmation` (`null` for "keep").
        """
        recommendation = self.recommendation
        return {**recommendation.to_json(), "text": self.text, "stopped": self.stopped,
                "trials": [t.to_json() for t in self.trials],
                "confirmation": self.confirmation.to_json(
                    recommendation.max_auc_loss, recommendation.budgets)
                if self.confirmation else None}


RunTrial = Callable[[Trial, Mapping[str, object] | None], dict]
"""`run_trial(trial, row)` trains `trial` (extending `row`, the activation's
current row or `None`; replica seeds from `trial.seed`, the configured seed when
None) and returns its new row with `trial.replicas` replicas."""


def _checked(trial: Trial, row: dict) -> dict:
    if row.get("label") != trial.label or row.get("replicas") != trial.replicas:
        raise ValueError(
            f"`run_trial` must return the row of {trial.label!r} with "
            f"{trial.replicas} replicas. Received: label={row.get('label')!r}, "
            f"replicas={row.get('replicas')!r}")
    return row


def _never_trained(trials: Sequence[Trial], rows: Sequence[Mapping[str, object]]) -> str:
    """Names the planned rows a stopped search never trained (empty if none)."""
    missing = list(dict.fromkeys(t.label for t in _untrained(trials, rows)))
    if not missing:
        return ""
    return f"; never trained: {', '.join(missing)} (a larger --time_budget measures them)"


def search(
    run_trial: RunTrial,
    settings: SearchSettings,
    rows: Sequence[Mapping[str, object]] = (),
    *,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Runs `plan`'s trials until the search ends or the time budget is spent.

    Args:
        run_trial: Trains one trial and returns the new row (see `RunTrial`).
        settings: The search's settings.
        rows: Rows of the same source set from before (e.g. a resumed run;
            never the confirmation's).
        clock: Seconds, for the time budget.
        log: Where to say what runs and why.

    Returns:
        A `SearchResult` whose recommendation covers all rows (not yet
        confirmed: see `confirm`).

    Raises:
        ValueError: `run_trial` returned a row of another activation or R.
    """
    rows = [dict(r) for r in rows]
    for label, why in settings.ruled_out.items():
        log(f"advisor: {label} is not trained: {why}")
    start, spent, trained, ran = clock(), 0.0, 0, []
    stopped = None
    while stopped is None:
        trials = plan(rows, settings)
        if not trials:
            stopped = "search finished"
        for trial in trials:
            if settings.time_budget is not None and trained:
                needed = spent / trained * trial.extra_replicas
                left = settings.time_budget - (clock() - start)
                if needed > left:
                    stopped = (f"time budget: {trial.label} (+{trial.extra_replicas} replicas) "
                               f"needs about {needed:.0f}s, {max(left, 0):.0f}s left"
                               f"{_never_trained(trials, rows)}")
                    break
            log(f"advisor: {trial.label} to R={trial.replicas}: {trial.reason}")
            index = next((i for i, r in enumerate(rows) if r["label"] == trial.label), None)
            began = clock()
            row = _checked(trial, run_trial(trial, None if index is None else rows[index]))
            spent, trained = spent + clock() - began, trained + trial.extra_replicas
            if index is None:
                rows.append(row)
            else:
                rows[index] = row
            ran.append(trial)
    recommendation = recommend(
        rows, settings.max_auc_loss, baseline=str(settings.baseline),
        confidence=settings.confidence, n_resamples=settings.n_resamples, seed=settings.seed,
        ruled_out=settings.ruled_out, **settings.budgets)
    log(f"advisor ({stopped}):\n{recommendation.text}")
    return SearchResult(tuple(rows), tuple(ran), stopped, recommendation)


def confirmation_seed(seed: int) -> int:
    """Base seed of the confirmation's replicas, derived from the search's `seed`.

    Never one the search used (its replica seeds derive from `seed` itself,
    `tf_smelu.experiment.replica_seeds`), and the same on every run, so a
    resumed run finds the confirmation rows it finished.

    Args:
        seed: The search's base seed.

    Returns:
        The confirmation's base seed.
    """
    return derived_seed(seed, CONFIRMATION_SEED_KIND)


def is_confirmation(row: Mapping[str, object]) -> bool:
    """Whether `row` is a confirmation row (fresh seeds), not one of the search's.

    Args:
        row: A result row.

    Returns:
        True if the row is marked `confirmation`.
    """
    return bool(row.get(CONFIRMATION))


def confirmation_trials(result: SearchResult, settings: SearchSettings) -> list[Trial]:
    """The baseline and the choice on fresh replica seeds, at the choice's R.

    Empty when the advice is to keep the baseline: nothing would change, so
    there is nothing to confirm.

    Args:
        result: The search's result.
        settings: The search's settings.

    Returns:
        The baseline's and the choice's trials, or none.
    """
    choice = result.recommendation.choice
    if choice is None:
        return []
    seed, replicas = confirmation_seed(settings.seed), choice.replicas
    reason = f"confirmation on fresh replica seeds (base seed {seed})"
    return [Trial(settings.baseline, replicas, replicas, reason, settings.relative, seed=seed),
            Trial(choice.activation, replicas, replicas, reason, settings.relative,
                  choice.remedies, seed=seed)]


def judge_confirmation(rows: Sequence[Mapping[str, object]], recommendation: Recommendation,
                       settings: SearchSettings) -> Confirmation:
    """Whether the recommendation holds on the confirmation's rows.

    It holds when the choice, against the baseline's new row, is still
    within the AUC budget (whole interval), within the cost budgets, and
    still reduces PD significantly: the decision rule, on fresh replicas.

    Args:
        rows: The confirmation's rows: the baseline's and the choice's.
        recommendation: The search's recommendation (with a choice).
        settings: The search's settings (budgets, intervals).

    Returns:
        A `Confirmation`.

    Raises:
        ValueError: As `analyze`, or `rows` lack the choice's row.
    """
    analysis = analyze(rows, baseline=str(settings.baseline), confidence=settings.confidence,
                       n_resamples=settings.n_resamples, seed=settings.seed)
    label = recommendation.choice.label
    choice = analysis.get(label)
    if choice is None or choice is analysis.baseline:
        raise ValueError(f"The confirmation needs the row of {label!r}. Received: rows "
                         f"{[r.get('label') for r in rows]}")
    budget = settings.max_auc_loss
    problems = []
    if choice.budget_status(budget) != WITHIN:
        problems.append(f"its AUC-loss interval [{-choice.auc_change.high:.4f}, "
                        f"{-choice.auc_change.low:.4f}] is no longer within {budget:g}")
    problems += choice.cost_problems(settings.budgets)
    if not choice.pd_reduced:
        problems.append("its PD reduction is no longer significant")
    seed = confirmation_seed(settings.seed)
    where = (f"on fresh replica seeds (base seed {seed}, R={choice.replicas} for "
             f"{analysis.baseline.label} and {label})")
    measured = (f"relative PD {_percent(choice.rel_pd_change)} at AUC "
                f"{_auc(choice.auc_change)}, {_costs(choice)}")
    text = (f"Confirmed {where}: {measured}; still within budget and PD still reduced."
            if not problems else
            f"NOT confirmed {where}: {measured}; {'; '.join(problems)}. Treat the "
            "recommendation as unconfirmed: more replicas (--replicas, --max_replicas) "
            "would settle it.")
    return Confirmation(seed, analysis.baseline, choice, tuple(problems), text)


def confirm(
    run_trial: RunTrial,
    result: SearchResult,
    settings: SearchSettings,
    rows: Sequence[Mapping[str, object]] = (),
    *,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Re-measures the choice and the baseline on fresh replica seeds (held out from the search).

    Args:
        run_trial: Trains one trial (see `RunTrial`); the runner adds
            `trial.row_fields` to the row it returns.
        result: The search's result.
        settings: The search's settings.
        rows: Confirmation rows finished earlier (a resumed run): one of the
            same label, R and seed is reused, not trained again.
        log: Where to say what runs and whether the answer held.

    Returns:
        `result` with its `confirmation` and `confirmation_rows`; `result`
        itself when the advice is to keep the baseline (nothing to confirm).

    Raises:
        ValueError: `run_trial` returned a row of another label or R.
    """
    trials = confirmation_trials(result, settings)
    if not trials:
        log(f"advisor: keep {settings.baseline.label} needs no confirmation (nothing would "
            "change)")
        return result
    confirmed = []
    for trial in trials:
        row = next((dict(r) for r in rows if r.get("label") == trial.label
                    and r.get("replicas") == trial.replicas and r.get("seed") == trial.seed
                    and is_confirmation(r)), None)
        if row is None:
            log(f"advisor: {trial.label} to R={trial.replicas}: {trial.reason}")
            row = _checked(trial, run_trial(trial, None))
        confirmed.append(row)
    confirmation = judge_confirmation(confirmed, result.recommendation, settings)
    log(f"advisor: {confirmation.text}")
    return dataclasses.replace(result, confirmation=confirmation,
                               confirmation_rows=tuple(confirmed))
