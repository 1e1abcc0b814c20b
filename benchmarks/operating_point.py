"""The operating point: AUC and prediction difference against the learning rate and epochs.

A tradeoff measured on an under-trained model can mislead: a higher learning
rate changes both the AUC every activation reaches and how much its replicas
disagree. This runs the main job once per (learning rate, epochs) point, each
in its own `--output_dir/lr<rate>_epochs<n>/` (results.json written row by
row; the same command again reuses finished rows), then writes
`operating_point.json` (every point's rows with AUC and relative-PD changes
vs ReLU and their 95% bootstrap intervals) and `operating_point.png` (AUC and
relative PD against the learning rate, one line per activation and epochs).

Every other flag is the main job's (`examples/recsys_reproducibility.py
--help`); `--learning_rate` and `--epochs` are replaced by the grids below.

Usage:
  python benchmarks/operating_point.py --learning_rates=0.001,0.003,0.01,0.03 \\
      --replicas=4 --output_dir=runs/operating_point   # default data, ~10 min
  python benchmarks/operating_point.py --learning_rates=0.001,0.01 --epochs_grid=1 \\
      --train_examples=2000 --eval_examples=500 --replicas=4 --hidden_units=8 \\
      --noprogress   # smoke test, seconds
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from tf_smelu import cli, experiment
from tf_smelu.common import atomic_write
from tf_smelu.experiment import CTRExperimentConfig, advisor

FLAGS = flags.FLAGS
cli.define_experiment_flags(
    CTRExperimentConfig(activations=("relu", "smelu:0.2", "smelu:0.4", "gelu"), replicas=4),
    output_dir="runs/operating_point",
    quick_help="Smoke-test sizes (20k examples, 4 replicas); explicit flags still win.")
flags.adopt_module_key_flags(cli)
flags.DEFINE_list("learning_rates", ["0.001", "0.003", "0.01", "0.03"],
                  "Adam learning rates to run (replace --learning_rate).")
flags.DEFINE_list("epochs_grid", ["1"], "Epochs to run at every learning rate (replace --epochs).")

QUICK_PRESET = dict(train_examples=20_000, eval_examples=5_000, replicas=advisor.MIN_REPLICAS)
GRID_FLAGS = ("learning_rates", "epochs_grid")


def _grid(name: str, parse: type) -> list:
    """The values of a grid flag, parsed and checked (> 0), in the order given."""
    try:
        values = [parse(text) for text in FLAGS[name].value]
    except ValueError:
        raise app.UsageError(f"--{name}: {','.join(FLAGS[name].value)} are not all "
                             f"{parse.__name__} numbers") from None
    if not values or any(not value > 0 for value in values):
        raise app.UsageError(f"--{name} needs one or more numbers > 0. Received: {values}")
    return list(dict.fromkeys(values))


def point_dir(output_dir: str, learning_rate: float, epochs: int) -> str:
    """Where one (learning rate, epochs) point's main-job results go."""
    return os.path.join(output_dir, f"lr{learning_rate:g}_epochs{epochs}")


def summarize_point(rows: list[dict], learning_rate: float, epochs: int, seed: int
                    ) -> list[dict]:
    """Per source set and activation: AUC, relative PD and their changes vs ReLU with intervals."""
    summary = []
    for tag in dict.fromkeys("+".join(row["sources"]) for row in rows):
        same = [row for row in rows if "+".join(row["sources"]) == tag]
        analysis = advisor.analyze(same, seed=seed)
        for comparison in (analysis.baseline, *analysis.candidates):
            row = next(r for r in same if r["label"] == comparison.label)
            summary.append({"learning_rate": learning_rate, "epochs": epochs, "sources": tag,
                            **comparison.to_json(), "auc_std": row["auc_std"],
                            "rel_pd_ci": row["rel_pd_ci"]})
    return summary


def format_summary(points: list[dict]) -> str:
    """A plain-text table of every point, ReLU first within each."""
    lines = [f"{'lr':>7} {'epochs':>6} {'activation':<16} {'AUC':>13} {'relPD [95% CI]':>23} "
             f"{'ΔAUC vs relu [95% CI]':>26}  {'ΔrelPD [95% CI]':>18}"]
    for p in points:
        lines.append(
            f"{p['learning_rate']:>7g} {p['epochs']:>6} {p['label']:<16} "
            f"{p['auc_mean']:.4f}±{p['auc_std']:.4f} "
            f"{p['rel_pd']:.4f} [{p['rel_pd_ci'][0]:.4f},{p['rel_pd_ci'][1]:.4f}] "
            + advisor.format_changes(p))
    return "\n".join(lines)


def plot(points: list[dict], path: str) -> None:
    """AUC (mean ± sd) and relative PD (95% CI) against the learning rate."""
    # Off-screen, as tf_smelu.experiment.report draws: pyplot's backend stays untouched.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    auc_axes, pd_axes = figure.subplots(1, 2)
    series = dict.fromkeys((p["sources"], p["label"], p["epochs"]) for p in points)
    for sources, label, epochs in series:
        own = sorted((p for p in points if (p["sources"], p["label"], p["epochs"])
                      == (sources, label, epochs)), key=lambda p: p["learning_rate"])
        rates = [p["learning_rate"] for p in own]
        name = label + (f", {epochs} epoch{'s' * (epochs > 1)}" if len({s[2] for s in series}) > 1 else "")
        name += f" ({sources})" if len({s[0] for s in series}) > 1 else ""
        line = auc_axes.errorbar(rates, [p["auc_mean"] for p in own],
                                 yerr=[p["auc_std"] for p in own], marker="o", capsize=3,
                                 label=name)
        pd_axes.errorbar(
            rates, [p["rel_pd"] for p in own],
            yerr=[[p["rel_pd"] - p["rel_pd_ci"][0] for p in own],
                  [p["rel_pd_ci"][1] - p["rel_pd"] for p in own]],
            marker="o", capsize=3, color=line[0].get_color(), label=name)
    for axes, ylabel in ((auc_axes, "held-out AUC (mean ± sd over replicas)"),
                         (pd_axes, "relative PD (95% CI)")):
        axes.set_xscale("log")
        axes.set_xlabel("Adam learning rate")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
    pd_axes.legend(fontsize=8)
    figure.suptitle("Operating point: accuracy and replica disagreement vs learning rate")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def checked_points() -> tuple[dict, list[float], list[int]]:
    """The main job's flag values and the two grids, every point's configuration checked.

    Reads the parsed flags only (no data, no output directory), so that a bad
    value at any point ends the run before the first one trains.

    Returns:
        The main job's resolved flag values (without the grid flags), the
        learning rates and the epochs to run.

    Raises:
        app.UsageError: A flag value is bad (one line).
    """
    learning_rates = _grid("learning_rates", float)
    epochs_grid = _grid("epochs_grid", int)
    values = {k: v for k, v in cli.resolved_flags(QUICK_PRESET).items() if k not in GRID_FLAGS}
    if values["max_auc_loss"] is not None:
        raise app.UsageError("--max_auc_loss is not supported here: every point runs the "
                             "same rows so that they can be compared")
    if values["replicas"] < advisor.MIN_REPLICAS:
        raise app.UsageError(f"--replicas={values['replicas']}: the intervals vs relu need at "
                             f"least {advisor.MIN_REPLICAS} replicas per row")
    for learning_rate in learning_rates:
        for epochs in epochs_grid:
            cli.experiment_config({**values, "learning_rate": learning_rate, "epochs": epochs})
    return values, learning_rates, epochs_grid


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values, learning_rates, epochs_grid = checked_points()
    output_dir = values["output_dir"]
    cli.check_output_dir(output_dir)
    points = []
    for epochs in epochs_grid:
        for learning_rate in learning_rates:
            where = point_dir(output_dir, learning_rate, epochs)
            print(f"\n== learning rate {learning_rate:g}, {epochs} epoch(s): {where}")
            rows = cli.run_experiment(
                {**values, "learning_rate": learning_rate, "epochs": epochs,
                 "output_dir": where}, where, resume=values["resume"])
            points += summarize_point(rows, learning_rate, epochs, values["seed"])
            with atomic_write(os.path.join(output_dir, "operating_point.json")) as out:
                json.dump({"config": values, "environment": experiment.environment(),
                           "points": points}, out, indent=1)
    print("\n" + format_summary(points))
    plot(points, os.path.join(output_dir, "operating_point.png"))
    print(f"\nWrote {os.path.join(output_dir, 'operating_point.json')} and operating_point.png")


if __name__ == "__main__":
    cli.run(main)
