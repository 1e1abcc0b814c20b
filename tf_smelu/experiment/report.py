"""The experiment's report: results.json, text tables and the tradeoff plot."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tf_smelu.common import atomic_write


def environment() -> dict[str, str]:
    """Versions and machine, recorded with every result."""
    import tf_smelu

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_smelu": tf_smelu.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
    }


def write_results(output_dir: str, config: Mapping[str, object], rows: list[dict]) -> str:
    """Writes `results.json` (`{"config", "environment", "results"}`), atomically.

    The format is documented by `docs/results.schema.json`.

    Undefined numbers (e.g. the interval of a single pair when R = 2) are
    written as `null`: NaN is not JSON.
    """
    path = os.path.join(output_dir, "results.json")
    with atomic_write(path) as f:  # never leave a half-written file
        json.dump(
            _nan_to_none({"config": dict(config), "environment": environment(), "results": rows}),
            f,
            indent=2,
            allow_nan=False,
            default=_json_default,
        )
    return path


def _nan_to_none(value):
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def format_table(rows: list[dict]) -> str:
    """A readable text table of result rows, with PD relative to ReLU."""
    header = (
        f"{'sources':<22} {'activation':<26} {'AUC':>15} {'logloss':>8} "
        f"{'relPD (95% CI)':>24} {'vs relu':>8} {'absPD':>7} {'sec':>6}"
    )
    lines = [header, "-" * len(header)]
    relu = {tuple(r["sources"]): r["rel_pd"] for r in rows if r["activation"] == "relu"}
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


def plot_tradeoff(rows: list[dict], path: str) -> str:
    """Relative PD against AUC, one point per activation/beta, one panel per source set."""
    # A bare Figure draws off-screen without switching pyplot's backend, so
    # notebooks that show their own plots keep working.
    from matplotlib.figure import Figure

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["sources"]), []).append(r)
    fig = Figure(figsize=(6 * len(groups), 4.8))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (sources, group) in zip(axes[0], groups.items()):
        for r in group:
            lo, hi = r["rel_pd_ci"]
            yerr = None if math.isnan(lo) else [[r["rel_pd"] - lo], [hi - r["rel_pd"]]]
            ax.errorbar(
                r["auc_mean"], r["rel_pd"], xerr=r["auc_std"], yerr=yerr,
                fmt="o", capsize=4, label=r["label"],
            )
        ax.set_title(f"sources: {'+'.join(sources) or 'none'} (R={group[0]['replicas']})")
        ax.set_xlabel("AUC (mean ± sd over replicas)")
        ax.set_ylabel("relative PD (mean over pairs, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy–reproducibility tradeoff: lower right is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def report(
    rows: list[dict], config: Mapping[str, object], output_dir: str,
    log: Callable[[str], None] = print,
) -> tuple:
    """Prints the tables and writes results.json and tradeoff.png.

    Returns:
        The paths `(results_json, tradeoff_png)`.
    """
    log("\n" + format_table(rows))
    group_table = format_group_table(rows)
    if group_table:
        log("\nRelative PD by item popularity "
            "(share of traffic: head 50%, torso 40%, tail 10%)\n" + group_table)
    path = write_results(output_dir, dict(config), rows)
    plot = plot_tradeoff(rows, os.path.join(output_dir, "tradeoff.png"))
    log(f"\nWrote {path} and {plot}")
    return path, plot
