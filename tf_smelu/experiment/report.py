"""The experiment's report: text tables, the tradeoff plot and the final results.json."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from tf_smelu.experiment.results import row_key, write_results

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure


def format_table(rows: list[dict]) -> str:
    """A readable text table of result rows, with PD relative to ReLU.

    The advisor's confirmation rows (`[confirmation]` after the label) are
    compared with the confirmation's ReLU row, measured on the same fresh seeds.

    Args:
        rows: Result rows (as in results.json).

    Returns:
        The table: a header, then one line per row with its sources,
        activation, AUC, log loss, relative PD with its interval, the
        change against the ReLU row of the same sources, absolute PD and
        training seconds.
    """
    header = (
        f"{'sources':<22} {'activation':<26} {'AUC':>15} {'logloss':>8} "
        f"{'relPD (95% CI)':>24} {'vs relu':>8} {'absPD':>7} {'sec':>6}"
    )
    lines = [header, "-" * len(header)]
    relu = {(tuple(r["sources"]), bool(r.get("confirmation"))): r["rel_pd"] for r in rows
            if r["activation"] == "relu" and not r.get("remedy")}  # relu+ema is no baseline
    for r in rows:
        key = tuple(r["sources"]), bool(r.get("confirmation"))
        change = f"{r['rel_pd'] / relu[key] - 1:+.0%}" if key in relu and relu[key] else ""
        lo, hi = r["rel_pd_ci"]
        ci = f"{r['rel_pd']:.4f} [{lo:.4f},{hi:.4f}]" if not math.isnan(lo) else f"{r['rel_pd']:.4f}"
        lines.append(
            f"{'+'.join(r['sources']) or 'none':<22} {row_key(r)[1]:<26} "
            f"{r['auc_mean']:.4f}±{r['auc_std']:.4f} {r['logloss_mean']:8.4f} "
            f"{ci:>24} {change:>8} {r['abs_pd']:7.4f} {r['train_seconds']:6.0f}"
        )
    return "\n".join(lines)


def format_group_table(rows: list[dict]) -> str:
    """Relative PD per evaluation group (e.g. id popularity), one line per row.

    Args:
        rows: Result rows (as in results.json).

    Returns:
        The table, or `""` when no row has per-group PD.
    """
    groups = list(dict.fromkeys(g for r in rows for g in r.get("rel_pd_by_group", {})))
    if not groups:
        return ""
    lines = [f"{'sources':<22} {'activation':<26} " + " ".join(f"{g:>12}" for g in groups)]
    for r in rows:
        cells = [
            f"{r['rel_pd_by_group'][g]['rel_pd']:12.4f}" if g in r["rel_pd_by_group"] else " " * 12
            for g in groups
        ]
        lines.append(f"{'+'.join(r['sources']) or 'none':<22} {row_key(r)[1]:<26} "
                     + " ".join(cells))
    return "\n".join(lines)


def plot_tradeoff(rows: list[dict], path: str, advice: Mapping[str, dict] | None = None) -> str:
    """Writes `tradeoff_figure(rows, advice)` to `path` (PNG).

    Args:
        rows: Result rows (as in results.json).
        path: The PNG file to write.
        advice: The `--max_auc_loss` search's result per source set (as
            results.json's `advice`), or None.

    Returns:
        `path`.
    """
    tradeoff_figure(rows, advice).savefig(path, dpi=120)
    return path


def tradeoff_figure(rows: list[dict], advice: Mapping[str, dict] | None = None) -> Figure:
    """Relative PD against AUC, one point per row, one panel per source set.

    A source set with `advice` (the `--max_auc_loss` search's result) is
    drawn as changes vs ReLU instead (`_draw_advice`): every candidate,
    activations and remedies alike, with its intervals and its training cost
    as marker size, the Pareto frontier across all of them, the AUC budget,
    the recommended row and its confirmation on fresh seeds.

    Args:
        rows: Result rows (as in results.json).
        advice: The search's result per source set, or None.

    Returns:
        A `matplotlib.figure.Figure` (drawn off-screen).
    """
    # A bare Figure draws off-screen without switching pyplot's backend, so
    # notebooks that show their own plots keep working.
    from matplotlib.figure import Figure

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["sources"]), []).append(r)
    # Legends go beside the panels (a search has a dozen rows or more), and a 20-colour map
    # keeps rows apart where the default cycle of 10 would repeat.
    from matplotlib import colormaps

    colours = colormaps["tab20" if max(map(len, groups.values())) > 10 else "tab10"].colors
    fig = Figure(figsize=(8.5 * len(groups), 4.8))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (sources, group) in zip(axes[0], groups.items()):
        searched = (advice or {}).get("+".join(sources))
        if searched and searched.get("baseline"):
            _draw_advice(ax, searched, colours)
        else:
            _draw_rows(ax, group, colours)
        replicas = sorted({r["replicas"] for r in group})
        ax.set_title(f"sources: {'+'.join(sources) or 'none'} "
                     f"(R={'-'.join(str(r) for r in replicas[::max(1, len(replicas) - 1)])})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("Accuracy–reproducibility tradeoff: lower right is better")
    fig.tight_layout()
    return fig


def _draw_rows(ax, group: list[dict], colours) -> None:
    """Every row's mean relative PD (95% CI) against its mean AUC (± sd)."""
    for index, r in enumerate(group):
        lo, hi = r["rel_pd_ci"]
        yerr = None if math.isnan(lo) else [[r["rel_pd"] - lo], [hi - r["rel_pd"]]]
        ax.errorbar(
            r["auc_mean"], r["rel_pd"], xerr=r["auc_std"], yerr=yerr,
            fmt="o", capsize=4, label=row_key(r)[1], color=colours[index % len(colours)],
        )
    ax.set_xlabel("AUC (mean ± sd over replicas)")
    ax.set_ylabel("relative PD (mean over pairs, 95% CI)")


MARKER_AREA = 40.0
"""Marker area (points²) of a candidate that costs one ReLU model to train."""


def _errors(point: Mapping[str, object], field: str) -> list[list[float]]:
    low, high = point[f"{field}_ci"]
    return [[point[field] - low], [high - point[field]]]


def _draw_advice(ax, advice: Mapping[str, object], colours) -> None:
    """The search's candidates as AUC change and relative-PD change vs ReLU (95% intervals).

    Marker area is proportional to the training cost (a hollow marker: over
    a cost budget); the dashed line is the Pareto frontier across every
    candidate within the cost budgets; the dotted line the AUC budget.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    for index, c in enumerate([advice["baseline"], *advice["candidates"]]):
        colour = colours[index % len(colours)]
        over = bool(c.get("over_cost"))
        costs = f" (train ×{c['train_cost']:.3g}, serve ×{c['serve_cost']:.3g})" if (
            c["train_cost"], c["serve_cost"]) != (1, 1) else ""
        ax.errorbar(c["auc_change"], c["rel_pd_change"], xerr=_errors(c, "auc_change"),
                    yerr=_errors(c, "rel_pd_change"), fmt="none", ecolor=colour, alpha=0.5,
                    capsize=3)
        ax.scatter(c["auc_change"], c["rel_pd_change"], s=MARKER_AREA * c["train_cost"],
                   facecolors="none" if over else colour, edgecolors=colour, zorder=3,
                   label=c["label"] + costs + (" — over a cost budget" if over else ""))
    frontier = advice.get("frontier", [])
    ax.plot([p["auc_change"] for p in frontier], [p["rel_pd_change"] for p in frontier], "--",
            color="black", alpha=0.6, label="Pareto frontier (all candidates within the cost "
            "budgets)")
    ax.axvline(-advice["max_auc_loss"], ls=":", color="gray",
               label=f"AUC budget ({advice['max_auc_loss']:g})")
    for choice in (c for c in advice["candidates"] if c["spec"] == advice.get("choice")):
        ax.plot(choice["auc_change"], choice["rel_pd_change"], "*", markersize=16,
                color="gold", markeredgecolor="black", label=f"recommended: {choice['label']}")
    confirmation = advice.get("confirmation")
    if confirmation:
        again = confirmation["choice"]
        ax.errorbar(again["auc_change"], again["rel_pd_change"],
                    xerr=_errors(again, "auc_change"), yerr=_errors(again, "rel_pd_change"),
                    fmt="D", color="black", capsize=3, markerfacecolor="white",
                    label="confirmation on fresh seeds: "
                          + ("held" if confirmation["held"] else "did not hold"))
    ax.add_line(Line2D([], [], ls="none", marker="o", color="gray",
                       label="marker area ∝ training cost (× relu); hollow: over a cost budget"))
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:+.3f}")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("AUC change vs relu (95% CI)")
    ax.set_ylabel("relative PD change vs relu (95% CI)")


def report(
    rows: list[dict], config: Mapping[str, object], output_dir: str,
    log: Callable[[str], None] = print, advice: Mapping[str, dict] | None = None,
    data: Mapping[str, object] | None = None,
) -> tuple[str, str]:
    """Prints the tables (and the recommendation) and writes results.json and tradeoff.png.

    Args:
        rows: All result rows of the run.
        config: The run's configuration (flag values), recorded in
            results.json.
        output_dir: Where results.json and tradeoff.png are written.
        log: Where the tables go.
        advice: The `--max_auc_loss` search's result per source set, or None.
        data: What the data loading reported (e.g. skipped rows), recorded
            in results.json.

    Returns:
        The paths `(results_json, tradeoff_png)`.
    """
    log("\n" + format_table(rows))
    group_table = format_group_table(rows)
    if group_table:
        log("\nRelative PD by item popularity "
            "(share of traffic: head 50%, torso 40%, tail 10%)\n" + group_table)
    for sources, result in (advice or {}).items():
        log(f"\nRecommendation for sources {sources or 'none'} ({result['stopped']}):\n"
            f"{result['text']}")
    if data and data.get("skipped_rows"):
        log(f"\nSkipped {data['skipped_rows']} malformed data row(s) (--on_error=skip); "
            "the first are listed in results.json under data.skipped_examples.")
    path = write_results(output_dir, dict(config), rows, advice=advice, data=data)
    plot = plot_tradeoff(rows, os.path.join(output_dir, "tradeoff.png"), advice)
    log(f"\nWrote {path} and {plot}")
    return path, plot
