"""The report: results.json (validated against its schema), tables and the plot."""

import dataclasses
import json
import os

import numpy as np

from tf_smelu import experiment


def test_results_table_and_plot(tmp_path, validate_results):
    rows = [
        dict(activation=a, beta=b, label=a, replicas=3, sources=["tower_init"], auc_mean=0.7 + i / 100,
             auc_std=0.001, logloss_mean=0.45, abs_pd=0.01, rel_pd=0.1 - i / 100,
             rel_pd_ci=[0.08 - i / 100, 0.12 - i / 100], train_seconds=1.0,
             aucs=[0.7 + i / 100] * 3)  # every row the project writes has them
        for i, (a, b) in enumerate([("relu", None), ("smelu", 0.1)])
    ]
    table = experiment.format_table(rows)
    assert "-10%" in table and "relu" in table
    path = experiment.write_results(str(tmp_path), {"replicas": 3}, rows)
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["results"] == rows and saved["config"] == {"replicas": 3}
    assert "tensorflow" in saved["environment"]
    validate_results(path)
    plot = experiment.plot_tradeoff(rows, os.path.join(tmp_path, "tradeoff.png"))
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_undefined_numbers_are_written_as_null(tmp_path):
    row = {"rel_pd_ci": [float("nan"), float("nan")], "rel_pd_std": np.float64("nan"), "x": 1.0}
    path = experiment.write_results(str(tmp_path), {}, [row])
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)["results"][0]
    assert saved == {"rel_pd_ci": [None, None], "rel_pd_std": None, "x": 1.0}



def _full(row):
    """A simulated advisor row with the table's fields."""
    return {**row, "auc_std": 0.001, "logloss_mean": 0.45, "abs_pd": 0.01,
            "rel_pd_ci": [row["rel_pd"] * 0.9, row["rel_pd"] * 1.1], "train_seconds": 1.0}


def test_the_advice_plot_spans_remedies_with_cost_as_marker_size_and_the_confirmation():
    from test_advisor import REMEDY_SETTINGS, simulated_remedy_row

    from tf_smelu.experiment import advisor
    from tf_smelu.experiment.report import MARKER_AREA, tradeoff_figure

    def run_trial(trial, row):
        return simulated_remedy_row(trial)

    result = advisor.search(run_trial, REMEDY_SETTINGS, log=lambda _: None)
    result = advisor.confirm(run_trial, result, REMEDY_SETTINGS, log=lambda _: None)
    rows = [_full(r) for r in (*result.rows, *result.confirmation_rows)]
    advice = {"tower_init": result.to_json()}
    [ax] = tradeoff_figure(rows, advice).axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "relu+ensemble(K=2) (train ×2, serve ×2)" in legend
    assert "marker area ∝ training cost (× relu); hollow: over a cost budget" in legend
    assert "Pareto frontier (all candidates within the cost budgets)" in legend
    assert "recommended: relu+ensemble(K=2)" in legend
    assert "confirmation on fresh seeds: held" in legend
    sizes = {c.get_label(): c.get_sizes()[0] for c in ax.collections if c.get_label() in legend}
    assert sizes["relu+ensemble(K=2) (train ×2, serve ×2)"] == 2 * MARKER_AREA
    assert sizes["relu+ema(0.999)"] == MARKER_AREA
    assert ax.get_xlabel() == "AUC change vs relu (95% CI)"
    # The frontier is drawn in changes vs relu, through every remedy on it.
    [frontier] = [line for line in ax.get_lines() if line.get_label().startswith("Pareto")]
    assert list(frontier.get_xdata()) == [p["auc_change"] for p in advice["tower_init"]["frontier"]]


def test_confirmation_rows_are_compared_with_their_own_relu_in_the_table():
    from test_advisor import REMEDY_SETTINGS, simulated_remedy_row

    from tf_smelu.experiment import advisor

    trials = advisor.plan([], REMEDY_SETTINGS)
    search = [_full(simulated_remedy_row(t)) for t in trials]
    fresh = [_full(simulated_remedy_row(dataclasses.replace(t, seed=7), seed_effect=1.0))
             for t in trials if t.label in ("relu", "relu+ensemble(K=2)")]
    table = experiment.format_table(search + fresh).splitlines()
    line = {row.split()[1] + (" [confirmation]" if "[confirmation]" in row else ""): row
            for row in table[2:]}
    assert "-50%" in line["relu+ensemble(K=2)"]
    assert "+0%" in line["relu+ensemble(K=2) [confirmation]"]  # its own relu's PD, not -0%
