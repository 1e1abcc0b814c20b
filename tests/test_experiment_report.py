"""The report: results.json (validated against its schema), tables and the plot."""

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

