"""What a row costs relative to the baseline row: training steps and time, serving size.

A remedy buys its prediction-difference cut with accuracy and with compute:
an ensemble of K trains and serves K models, a distilled replica also pays
for its teacher. Rows record their own totals (`steps`, `train_seconds`,
`params`, and `flops` where measured); the ratios to the baseline's put
every remedy on one scale, the one the advisor's budgets
(`--max_train_cost`, `--max_serve_cost`) are stated in.
"""

from __future__ import annotations

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
    project's own trainer record no `params`, for instance).
    """
    for row in rows:
        for ratio, total in COST_RATIOS.items():
            mine, base = row.get(total), baseline.get(total)
            if isinstance(mine, (int, float)) and isinstance(base, (int, float)) and base > 0:
                row[ratio] = mine / base
    return rows
