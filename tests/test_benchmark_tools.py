"""The measurement tools in benchmarks/: relative vs absolute β, and the operating point.

`beta_scale.py` reads prepared results files whose answer is known (nothing
trains); `operating_point.py` runs the main job at two learning rates on tiny
data and resumes.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_advisor import make_row

from tf_smelu.experiment import advisor
from tf_smelu.training.preactivation import relative_label

REPO = pathlib.Path(__file__).resolve().parent.parent
SETTINGS = {"dataset": "synthetic", "train_examples": 1000, "eval_examples": 100, "seed": 0,
            "model": "mlp", "hidden_units": [8], "embedding_dim": 4, "epochs": 1,
            "batch_size": 64, "learning_rate": 0.001, "max_vocab_size": 0}


def _run(script, *args, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=False)


def relative_row(k, auc, pd, **kwargs):
    row = make_row(f"smelu:{k}", auc, pd, **kwargs)
    row.update(label=relative_label(advisor.row_activation(row)), beta_scale="relative",
               k=k, beta_per_layer={"hidden_activation_0": 0.1 * k, "hidden_activation_1": 0.3 * k})
    return row


def write_results(path, rows, **settings):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": {**SETTINGS, **settings}, "results": rows}))
    return str(path)


def test_relative_rows_are_compared_with_relu_under_their_own_label():
    rows = [make_row("relu", 0.72, 0.05), relative_row(1.5, 0.719, 0.03)]
    analysis = advisor.analyze(rows)
    (candidate,) = analysis.candidates
    assert candidate.label == "smelu(β=1.5σ)"
    assert candidate.rel_pd_change.estimate == pytest.approx(-0.4)
    mislabelled = dict(rows[1], label="smelu(β=1.5)")
    with pytest.raises(ValueError, match=r"describes activation 'smelu\(β=1.5σ\)'"):
        advisor.analyze([rows[0], mislabelled])


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_beta_scale_sets_relative_points_against_the_absolute_frontier(tmp_path):
    # Absolute frontier: PD change -10% at AUC -0.0005, -20% at -0.001, -36% at -0.003.
    absolute = write_results(tmp_path / "absolute.json", [
        make_row("relu", 0.72, 0.05), make_row("smelu:0.1", 0.7195, 0.045),
        make_row("smelu:0.2", 0.719, 0.04), make_row("smelu:0.4", 0.717, 0.032)])
    relative = write_results(tmp_path / "relative.json", [
        relative_row(1, 0.719, 0.03, pd_sd=0.01),      # -40% where absolute has -20%
        relative_row(2, 0.7175, 0.045, pd_sd=0.01),    # -10% where absolute has about -30%
        relative_row(4, 0.71, 0.02)])                  # beyond the absolute points' AUC range
    result = _run("beta_scale.py", f"--results={absolute},{relative}",
                  f"--output_dir={tmp_path / 'out'}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = {line.split(" (β per layer")[0]: line for line in result.stdout.splitlines()
                if line.startswith("tower_init: ")}
    assert "better: its whole interval is below absolute β's -20%" in verdicts[
        "tower_init: smelu(β=1σ)"]
    assert "worse" in verdicts["tower_init: smelu(β=2σ)"]
    assert "outside the AUC range" in verdicts["tower_init: smelu(β=4σ)"]
    assert "0.100, 0.300" in verdicts["tower_init: smelu(β=1σ)"]
    content = json.loads((tmp_path / "out" / "beta_scale.json").read_text())
    assert content["frontiers"]["tower_init/smelu (relative β)"][0] == "relu"
    assert (tmp_path / "out" / "beta_scale.png").stat().st_size > 0


@pytest.mark.parametrize("second, message", [
    ("other_settings", "settings differ from"),
    ("missing", "No such file or directory"),
    ("damaged", "not a results.json of the main job"),
])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_beta_scale_refuses_files_it_cannot_compare(tmp_path, second, message):
    first = write_results(tmp_path / "a.json", [make_row("relu", 0.72, 0.05)])
    path = tmp_path / f"{second}.json"
    if second == "other_settings":
        write_results(path, [relative_row(1, 0.719, 0.03)], learning_rate=0.01)
    elif second == "damaged":
        path.write_text('{"config": {')
    result = _run("beta_scale.py", f"--results={first},{path}",
                  f"--output_dir={tmp_path / 'out'}", timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_operating_point_runs_every_learning_rate_and_resumes(tmp_path):
    args = ["operating_point.py", "--learning_rates=0.001,0.01", "--epochs_grid=1",
            "--train_examples=1500", "--eval_examples=400", "--max_vocab_size=50",
            "--hidden_units=8", "--batch_size=128", "--replicas=4",
            "--activations=relu,smelu:0.3", "--noprogress", f"--output_dir={tmp_path}"]
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    content = json.loads((tmp_path / "operating_point.json").read_text())
    points = {(p["learning_rate"], p["label"]): p for p in content["points"]}
    assert set(points) == {(lr, label) for lr in (0.001, 0.01)
                           for label in ("relu", "smelu(β=0.3)")}
    for lr in (0.001, 0.01):
        assert points[(lr, "relu")]["rel_pd_change"] == 0.0
        row = json.loads((tmp_path / f"lr{lr:g}_epochs1" / "results.json").read_text())
        assert row["config"]["learning_rate"] == lr and row["complete"]
    assert (tmp_path / "operating_point.png").stat().st_size > 0
    again = _run(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished row(s)") == 2  # nothing trained twice
    assert json.loads((tmp_path / "operating_point.json").read_text())["points"] == \
        content["points"]


OPERATING_POINT_MISTAKES = {
    "--learning_rates=0.01,fast": "--learning_rates: 0.01,fast are not all float numbers",
    "--epochs_grid=0": "--epochs_grid needs one or more numbers > 0",
    "--replicas=2": "at least 4 replicas",
    "--max_auc_loss=0.002": "--max_auc_loss is not supported here",
}


@pytest.fixture(scope="module")
def operating_point_mistakes(tmp_path_factory):
    """Every mistake's run, all started at once (each spends its time starting TensorFlow
    on one core): {flag: (completed process, its output directory)}."""
    from concurrent.futures import ThreadPoolExecutor

    def run(flag):
        out = tmp_path_factory.mktemp("mistake") / "out"
        return flag, (_run("operating_point.py", flag, f"--output_dir={out}", timeout=300), out)

    with ThreadPoolExecutor(len(OPERATING_POINT_MISTAKES)) as pool:
        return dict(pool.map(run, OPERATING_POINT_MISTAKES))


@pytest.mark.parametrize("flag, message", OPERATING_POINT_MISTAKES.items())
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_operating_point_mistakes_stop_before_training(operating_point_mistakes, flag, message):
    result, out = operating_point_mistakes[flag]
    assert result.returncode == 1
    assert message in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
    assert not out.exists()
