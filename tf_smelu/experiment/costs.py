"""What a row costs relative to the baseline row: training steps and time, serving size.

A remedy buys its prediction-difference cut with accuracy and with compute:
an ensemble of K trains and serves K models, a distilled replica also pays
for its teacher. Rows record their own totals (`steps`, `train_seconds`,
`params`, and `flops` where measured); the ratios to the baseline's put
every remedy on one scale, the one the advisor's budgets
(`--max_train_cost`, `--max_serve_cost`) are stated in.

A model a remedy learns from (`distill`'s teacher; `anchor`'s and
`warm_start`'s previous model) trains once for all R replicas of a row: its
steps (`setup_steps`) count as `setup_steps / R` per replica in
`train_steps_ratio` (its time is in `train_seconds` already), so a budget
sees distillation with R = 4 replicas cost 1.25, not 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence

COST_RATIOS = {
    "train_steps_ratio": "steps",
    "train_seconds_ratio": "train_seconds",
    "serve_params_ratio": "params",
    "serve_flops_ratio": "flops",
}
"""Ratio field -> the row's total it divides by the baseline's."""


def with_costs(rows: Sequence[MutableMapping[str, object]],
               baseline: Mapping[str, object]) -> Sequence[MutableMapping[str, object]]:
    """Adds to every row its cost ratios to `baseline` (in place; returns `rows`).

    A ratio is set only where both rows hold a positive total (rows of the
    project's own trainer record no `params`, for instance). Training steps
    per replica include `setup_steps / replicas` (see the module docstring);
    a row written before rows recorded `setup_steps` (it has
    `setup_seconds` only) gets no `train_steps_ratio`, so that `row_costs`
    takes its measured `train_seconds_ratio`, which includes that time.
    """
    for row in rows:
        for ratio, total in COST_RATIOS.items():
            mine, base = _total(row, total), _total(baseline, total)
            if isinstance(mine, (int, float)) and isinstance(base, (int, float)) and base > 0:
                row[ratio] = mine / base
            else:
                row.pop(ratio, None)  # (a resumed row's ratio of an older version)
    return rows


def _setup_steps_unknown(row: Mapping[str, object]) -> bool:
    """Whether `row` used a trained model whose steps it does not say (an older version's row)."""
    return "setup_seconds" in row and "setup_steps" not in row


def _total(row: Mapping[str, object], total: str) -> object:
    """`row[total]`; training steps per replica with the amortized `setup_steps`; else None."""
    value = row.get(total)
    if total != "steps" or not isinstance(value, (int, float)):
        return value
    if _setup_steps_unknown(row):
        return None
    setup = row.get("setup_steps", 0)
    return value + setup / row["replicas"] if setup else value


COST_TOLERANCE = 0.01
"""Relative slack when a cost is compared with a budget: a model a few learned parameters
per unit larger (generalized SmeLU) is not ruled out by `--max_serve_cost=1`."""

BUDGETS = {"max_train_cost": "train", "max_serve_cost": "serve"}
"""Budget field -> the kind of cost it limits (see `row_costs`)."""


def expected_costs(recipe, replicas: int | None = None) -> dict[str, float]:
    """What a recipe (`tf_smelu.remedies.Recipe`) costs before anything trains.

    Training: models trained per replica (`ensemble:K`: K; `codistill`'s K
    peers per member: K), i.e. the steps ratio to one baseline model if
    every model takes as many steps, plus,
    given `replicas`, each model the remedies learn from (`recipe.targets`:
    a teacher, the previous model) amortized over them (at most as many
    steps as one baseline model: `1 / replicas` each). Serving: the product
    of the remedies' `serve_params_ratio`. A plain activation costs 1 and 1.

    Args:
        recipe: The recipe.
        replicas: The replicas its row will have at most; None: leave the
            trained targets out (a lower bound).

    Returns:
        `{"train": ..., "serve": ...}`.
    """
    setup = len(recipe.targets) / replicas if replicas else 0.0
    trained = sum(len(recipe.peer_seeds(member)) for member in recipe.member_seeds(0))
    return {"train": float(trained) + setup,
            "serve": float(math.prod(r.serve_params_ratio for r in recipe.remedies))}


def row_costs(row: Mapping[str, object], expected: Mapping[str, float]) -> dict[str, float]:
    """A row's training and serving cost relative to the baseline, as budgets compare them.

    Training: `train_steps_ratio` (steps, not seconds: exact and repeatable,
    where seconds depend on the machine's load and on whether the replicas
    trained side by side), including the amortized `setup_steps` of a
    teacher or previous model; for a row of an older version that used one
    without recording its steps, `train_seconds_ratio` (which holds its
    time). Serving: `serve_flops_ratio` where measured, else
    `serve_params_ratio`. A ratio the row does not hold (e.g. the built-in
    trainer's rows hold no parameter counts) is `expected` (`expected_costs`).

    Args:
        row: A row with its ratios (`with_costs`), or without.
        expected: The row's recipe's `expected_costs`.

    Returns:
        `{"train": ..., "serve": ...}`.
    """
    def measured(*fields):
        return next((float(row[f]) for f in fields if isinstance(row.get(f), (int, float))),
                    None)

    train = (measured("train_seconds_ratio") if _setup_steps_unknown(row)
             else measured("train_steps_ratio"))
    serve = measured("serve_flops_ratio", "serve_params_ratio")
    return {"train": expected["train"] if train is None else train,
            "serve": expected["serve"] if serve is None else serve}


def budget_problems(costs: Mapping[str, float], budgets: Mapping[str, float | None]
                    ) -> list[str]:
    """How `costs` (`row_costs`) exceed `budgets` (`BUDGETS` field -> limit or None).

    Returns:
        E.g. `["serve cost 2 > --max_serve_cost=1"]`; empty when within every budget.
    """
    return [f"{kind} cost {costs[kind]:.3g} > --{name}={limit:g}"
            for name, kind in BUDGETS.items()
            if (limit := budgets.get(name)) is not None
            and costs[kind] > limit * (1 + COST_TOLERANCE)]


def check_budget(name: str, value: float | None) -> None:
    """Raises unless `value` (a `BUDGETS` field) is None or a finite number >= 1.

    Raises:
        ValueError: A budget below 1 (one baseline model costs 1, so it rules
            out even the baseline) or not a finite number.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value < 1:
        raise ValueError(
            f"`{name}` must be a number >= 1, a multiple of one relu model's cost (1), or "
            f"unset; {value!r} would rule out even relu itself. Received: {name}={value!r}")


def ruled_out(recipes, budgets: Mapping[str, float | None], baseline,
              replicas: int | None = None) -> dict[str, str]:
    """The recipes whose `expected_costs` exceed `budgets`, before anything trains.

    Args:
        recipes: `tf_smelu.remedies.Recipe`s; one without an activation applies to `baseline`.
        budgets: `BUDGETS` field -> limit or None.
        baseline: The baseline `Activation`.
        replicas: The most replicas a row may get (see `expected_costs`).

    Returns:
        Label (e.g. `relu+ensemble(K=2)`) -> why (`budget_problems`, joined).
    """
    out = {}
    for recipe in recipes:
        recipe = recipe.with_activation(baseline)
        problems = budget_problems(expected_costs(recipe, replicas), budgets)
        if problems:
            out[recipe.label(recipe.activation.label)] = ", ".join(problems)
    return out


def require_candidates(excluded: Mapping[str, str], left: int,
                       budgets: Mapping[str, float | None]) -> None:
    """Refuses budgets that leave no candidate next to the baseline (checked before training).

    Args:
        excluded: `ruled_out`'s answer.
        left: Candidates the budgets keep (activations other than the baseline, remedies).
        budgets: `BUDGETS` field -> limit or None.

    Raises:
        ValueError: `excluded` is not empty and `left` is 0, naming every candidate ruled out.
    """
    if excluded and not left:
        raise ValueError(
            "The cost budgets rule out every candidate, so relu would be compared with "
            "nothing: " + "; ".join(f"{label} ({why})" for label, why in excluded.items())
            + ". Raise the budget, or add activations or cheaper remedies. Received: "
            + ", ".join(f"{name}={value}" for name, value in budgets.items() if value is not None))
