"""The experiment's report: text tables, the tradeoff plot and the final results.json."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

from tf_smelu.experiment.results import write_results


def format_table(rows: list[dict]) -> str:
    """A readable text table of result rows, with PD relative to ReLU."""
    header = (
        f"{'sources':<22} {'activation':<26} {'AUC':>15} {'logloss':>8} "
        f"{'relPD (95% CI)':>24} {'vs relu':>8} {'absPD':>7} {'sec':>6}"
    )
    lines = [header, "-" * len(header)]
    relu = {tuple(r["sources"]): r["rel_pd"] for r in rows
            if r["activation"] == "relu" and not r.get("remedy")}  # relu+ema is no baseline
    for r in rows:
        key = tuple(r["sources"])
        change = f"{r['rel_pd'] / relu[key] - 1:+.0%}" if key in relu and relu[key] else ""
        lo, hi = r["rel_pd_ci"]
        ci = f"{r['rel_pd']:.4f} [{lo:.4f},{hi:.4f}]" if not math.isnan(lo) else f"{r['rel_pd']:.4f}"
        lines.append(
            f"{'+'.join(r['sources']) or 'none':<22} {r['label']:<26} "
            f"{r['auc_mean']:.4f}±{r['auc_std']:.4f} {r['logloss_mean']:8.4f} "
            f"{ci:>24} {change:>8} {r['abs_pd']:7.4f} {r['train_seconds']:6.0f}"
        )
    return "\n".join(lines)


def format_group_table(rows: list[dict]) -> str:
    """Relative PD per evaluation group (e.g. id popularity), one line per row."""
    groups = list(dict.fromkeys(g for r in rows for g in r.get("rel_pd_by_group", {})))
    if not groups:
        return ""
    lines = [f"{'sources':<22} {'activation':<26} " + " ".join(f"{g:>12}" for g in groups)]
    for r in rows:
        cells = [
            f"{r['rel_pd_by_group'][g]['rel_pd']:12.4f}" if g in r["rel_pd_by_group"] else " " * 12
            for g in groups
        ]
        lines.append(f"{'+'.join(r['sources']) or 'none':<22} {r['label']:<26} " + " ".join(cells))
    return "\n".join(lines)


def plot_tradeoff(rows: list[dict], path: str, advice: Mapping[str, dict] | None = None) -> str:
    """Relative PD against AUC, one point per activation/beta, one panel per source set.

    With `advice` (the `--max_auc_loss` search's result per source set), each
    panel also shows every family's Pareto frontier (dashed), the AUC budget
    (dotted) and the recommended row (a star).
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
        for index, r in enumerate(group):
            lo, hi = r["rel_pd_ci"]
            yerr = None if math.isnan(lo) else [[r["rel_pd"] - lo], [hi - r["rel_pd"]]]
            ax.errorbar(
                r["auc_mean"], r["rel_pd"], xerr=r["auc_std"], yerr=yerr,
                fmt="o", capsize=4, label=r["label"], color=colours[index % len(colours)],
            )
        _draw_advice(ax, (advice or {}).get("+".join(sources)))
        replicas = sorted({r["replicas"] for r in group})
        ax.set_title(f"sources: {'+'.join(sources) or 'none'} "
                     f"(R={'-'.join(str(r) for r in replicas[::max(1, len(replicas) - 1)])})")
        ax.set_xlabel("AUC (mean ± sd over replicas)")
        ax.set_ylabel("relative PD (mean over pairs, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("Accuracy–reproducibility tradeoff: lower right is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _draw_advice(ax, advice: Mapping[str, object] | None) -> None:
    if not advice:
        return
    for family, points in advice["frontiers"].items():
        ax.plot([p["auc_mean"] for p in points], [p["rel_pd"] for p in points], "--",
                alpha=0.6, label=f"{family} frontier")
    if advice.get("baseline"):
        ax.axvline(advice["baseline"]["auc_mean"] - advice["max_auc_loss"], ls=":",
                   color="gray", label=f"AUC budget ({advice['max_auc_loss']:g})")
    chosen = [c for c in advice["candidates"] if c["spec"] == advice.get("choice")]
    for choice in chosen:
        ax.plot(choice["auc_mean"], choice["rel_pd"], "*", markersize=16, color="gold",
                markeredgecolor="black", label=f"recommended: {choice['label']}")


def report(
    rows: list[dict], config: Mapping[str, object], output_dir: str,
    log: Callable[[str], None] = print, advice: Mapping[str, dict] | None = None,
    data: Mapping[str, object] | None = None,
) -> tuple:
    """Prints the tables (and the recommendation) and writes results.json and tradeoff.png.

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
