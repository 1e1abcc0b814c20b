"""Relative against absolute β: the two frontiers, with intervals, from main-job results.

Run the main job twice on the same data and settings, once with absolute β
(`--activations=relu,smelu:0.1,smelu:0.2,smelu:0.4`) and once with
`--beta_scale=relative` (`--activations=smelu:0.5,smelu:1,smelu:2`: β_l =
k σ_l), then give both results.json files here. Every row is compared with
the ReLU row (95% bootstrap intervals of the AUC change and of the
relative-PD change, `tf_smelu.experiment.advisor.analyze`), the Pareto
frontier of each (family, β scale) is drawn in one plot, and each relative
point is set against the absolute frontier at the same AUC change (linear
interpolation between its points): a relative point whose PD-change interval
lies below that value is a better trade than any absolute β there.

Usage:
  python benchmarks/beta_scale.py --results=runs/absolute/results.json,runs/relative/results.json \\
      --output_dir=runs/beta_scale
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from tf_smelu import cli
from tf_smelu.common import UserError, atomic_write
from tf_smelu.experiment import advisor

FLAGS = flags.FLAGS
flags.DEFINE_list("results", None, "results.json files of runs on the same data and settings "
                  "(one of them with a relu row), absolute and --beta_scale=relative.")
flags.DEFINE_string("output_dir", "runs/beta_scale",
                    "Where beta_scale.json and beta_scale.png go.")
flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resampling.", lower_bound=0)
flags.mark_flag_as_required("results")

SETTINGS_THAT_MUST_MATCH = ("dataset", "train_examples", "eval_examples", "seed", "model",
                            "hidden_units", "embedding_dim", "epochs", "batch_size",
                            "learning_rate", "max_vocab_size")


def load_rows(paths: list[str]) -> tuple[list[dict], dict]:
    """Every row of `paths` (the first row of each label wins), and the shared settings.

    Raises:
        UserError: A file is missing or not a results file, or the runs'
            settings differ.
    """
    rows: dict[str, dict] = {}
    settings = None
    for path in paths:
        try:
            with open(path, encoding="utf-8") as file:
                content = json.load(file)
            config, results = content["config"], content["results"]
        except OSError as error:
            raise UserError(f"{path}: {error.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}: not a results.json of the main job") from None
        own = {name: config.get(name) for name in SETTINGS_THAT_MUST_MATCH}
        if settings is not None and own != settings:
            differing = [n for n in SETTINGS_THAT_MUST_MATCH if own[n] != settings[n]]
            raise UserError(f"{path}: settings differ from {paths[0]}'s: "
                            + ", ".join(f"{n} {settings[n]!r} vs {own[n]!r}" for n in differing))
        settings = own
        for row in results:
            rows.setdefault(f"{'+'.join(row['sources'])}/{row['label']}", row)
    return list(rows.values()), settings


def scale_kind(row: dict) -> str:
    """`relative` for rows of `--beta_scale=relative`, else `absolute`."""
    return "relative" if row.get("beta_scale") == "relative" else "absolute"


def compare(rows: list[dict], seed: int) -> list[dict]:
    """Per source set: every row vs relu, with its β scale, per-layer β and intervals."""
    entries = []
    for tag in dict.fromkeys("+".join(row["sources"]) for row in rows):
        same = [row for row in rows if "+".join(row["sources"]) == tag]
        try:
            analysis = advisor.analyze(same, seed=seed)
        except ValueError as error:
            raise UserError(f"sources {tag}: {error}") from None
        for comparison in (analysis.baseline, *analysis.candidates):
            row = next(r for r in same if r["label"] == comparison.label)
            entries.append({"sources": tag, **comparison.to_json(),
                            "beta_scale": scale_kind(row),
                            "beta_per_layer": row.get("beta_per_layer")})
    return entries


def frontiers(entries: list[dict]) -> dict[str, list[dict]]:
    """Per (sources, family, β scale): its Pareto frontier, the baseline included."""
    groups: dict[str, list[dict]] = {}
    baselines = {e["sources"]: e for e in entries if e["family"] == advisor.BASELINE}
    for e in entries:
        if e["family"] == advisor.BASELINE:
            continue
        key = f"{e['sources']}/{e['family']} ({e['beta_scale']} β)"
        groups.setdefault(key, [baselines[e["sources"]]]).append(e)
    result = {}
    for key, members in groups.items():
        keep = advisor.pareto_frontier([m["rel_pd"] for m in members],
                                       [m["auc_mean"] for m in members])
        result[key] = sorted((members[i] for i in keep), key=lambda m: -m["auc_change"])
    return result


def absolute_pd_change_at(entries: list[dict], sources: str, family: str,
                          auc_change: float) -> float | None:
    """The absolute-β frontier's PD change at `auc_change` (linear between its points).

    `None` outside the AUC range the absolute points cover.
    """
    points = sorted((e["auc_change"], e["rel_pd_change"]) for e in entries
                    if e["sources"] == sources and e["beta_scale"] == "absolute"
                    and e["family"] in (family, advisor.BASELINE))
    xs = [p[0] for p in points]
    if len(points) < 2 or not xs[0] <= auc_change <= xs[-1]:
        return None
    return float(np.interp(auc_change, xs, [p[1] for p in points]))


def verdicts(entries: list[dict]) -> list[str]:
    """One line per relative row: its PD change vs the absolute frontier's at its AUC change."""
    lines = []
    for e in (e for e in entries if e["beta_scale"] == "relative"):
        reference = absolute_pd_change_at(entries, e["sources"], e["family"], e["auc_change"])
        low, high = e["rel_pd_change_ci"]
        if reference is None:
            verdict = "outside the AUC range of the absolute points"
        elif high < reference:
            verdict = f"better: its whole interval is below absolute β's {reference:+.0%}"
        elif low > reference:
            verdict = f"worse: its whole interval is above absolute β's {reference:+.0%}"
        else:
            verdict = f"indistinguishable from absolute β's {reference:+.0%} there"
        lines.append(f"{e['sources']}: {e['label']} (β per layer "
                     f"{', '.join(f'{b:.3f}' for b in (e['beta_per_layer'] or {}).values())}): "
                     f"PD {e['rel_pd_change']:+.0%} [{low:+.0%}, {high:+.0%}] at AUC "
                     f"{e['auc_change']:+.4f} [{e['auc_change_ci'][0]:+.4f}, "
                     f"{e['auc_change_ci'][1]:+.4f}] — {verdict}")
    return lines


def format_entries(entries: list[dict]) -> str:
    """A plain-text table of every row against relu."""
    lines = [f"{'sources':<12} {'β scale':<9} {'activation':<18} {'R':>3} {'AUC':>6} "
             f"{'ΔAUC vs relu [95% CI]':>26}  {'ΔrelPD [95% CI]':>18}"]
    for e in entries:
        lines.append(f"{e['sources']:<12} {e['beta_scale']:<9} {e['label']:<18} "
                     f"{e['replicas']:>3} {e['auc_mean']:.4f} " + advisor.format_changes(e))
    return "\n".join(lines)


def plot(entries: list[dict], fronts: dict[str, list[dict]], path: str) -> None:
    """Every row with both intervals; each frontier as a line."""
    # Off-screen, as tf_smelu.experiment.report draws: pyplot's backend stays untouched.
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    figure = Figure(figsize=(7.5, 5))
    axes = figure.subplots()
    for key, members in fronts.items():
        own = [e for e in entries if f"{e['sources']}/{e['family']} ({e['beta_scale']} β)" == key]
        line = axes.plot([-m["auc_change"] for m in members],
                         [m["rel_pd_change"] for m in members], "-", alpha=0.6, label=key)[0]
        axes.errorbar(
            [-e["auc_change"] for e in own], [e["rel_pd_change"] for e in own],
            xerr=[[e["auc_change_ci"][1] - e["auc_change"] for e in own],
                  [e["auc_change"] - e["auc_change_ci"][0] for e in own]],
            yerr=[[e["rel_pd_change"] - e["rel_pd_change_ci"][0] for e in own],
                  [e["rel_pd_change_ci"][1] - e["rel_pd_change"] for e in own]],
            fmt="o" if "absolute" in key else "s", color=line.get_color(), capsize=3)
        for e in own:
            axes.annotate(e["label"].split("(")[-1].rstrip(")"), (-e["auc_change"],
                          e["rel_pd_change"]), fontsize=7, xytext=(4, 4),
                          textcoords="offset points")
    axes.axhline(0, color="grey", lw=0.8)
    axes.axvline(0, color="grey", lw=0.8)
    axes.set_xlabel("AUC loss vs relu (95% CI)")
    axes.set_ylabel("relative PD change vs relu (95% CI)")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_title("Absolute β vs β = k·σ per layer")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.check_output_dir(FLAGS.output_dir)
    rows, settings = load_rows(FLAGS.results)
    entries = compare(rows, FLAGS.seed)
    fronts = frontiers(entries)
    lines = verdicts(entries)
    print(format_entries(entries))
    print("\n" + ("\n".join(lines) if lines else "No --beta_scale=relative rows to compare."))
    with atomic_write(os.path.join(FLAGS.output_dir, "beta_scale.json")) as out:
        json.dump({"results": FLAGS.results, "settings": settings, "rows": entries,
                   "frontiers": {k: [m["label"] for m in v] for k, v in fronts.items()},
                   "verdicts": lines}, out, indent=1)
    plot(entries, fronts, os.path.join(FLAGS.output_dir, "beta_scale.png"))
    print(f"\nWrote {os.path.join(FLAGS.output_dir, 'beta_scale.json')} and beta_scale.png")


if __name__ == "__main__":
    cli.run(main)
