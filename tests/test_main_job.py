"""End to end: the README's main command, in its --quick preset."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "recsys_reproducibility.py")
ROW_KEYS = {
    "activation", "beta", "replicas", "sources", "auc_mean", "auc_std", "logloss_mean",
    "abs_pd", "rel_pd", "rel_pd_ci", "train_seconds",
}


def _run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.mark.slow
def test_quick_run_writes_results_and_plot(tmp_path, validate_results):
    result = _run("--quick", f"--output_dir={tmp_path}", "--noprogress")
    assert result.returncode == 0, result.stderr[-3000:]
    validate_results(tmp_path / "results.json")
    assert "relPD" in result.stdout  # the printed table
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert results["config"]["quick"] is True and results["config"]["replicas"] == 3
    assert {"activations", "sources", "seed", "output_dir"} <= set(results["config"])
    rows = results["results"]
    assert [r["activation"] for r in rows] == ["relu", "smelu"]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["sources"] == ["tower_init"] and row["replicas"] == 3
        assert 0.5 < row["auc_mean"] < 1.0 and row["rel_pd"] > 0
        lo, hi = row["rel_pd_ci"]
        assert lo <= row["rel_pd"] <= hi
    assert rows[0]["beta"] is None and rows[1]["beta"] == 1.0  # the --quick preset

    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "tradeoff.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_help_explains_every_flag():
    result = _run("--help", timeout=120)
    for flag in ("--activations", "--sources", "--replicas", "--quick", "--output_dir"):
        assert flag in result.stdout
    assert "prediction difference" in result.stdout


@pytest.mark.slow
def test_bad_flag_values_fail_clearly(tmp_path):
    result = _run("--quick", "--activations=relu,smelu:-1", f"--output_dir={tmp_path}", timeout=300)
    assert result.returncode != 0
    assert "beta must be a finite number > 0" in result.stderr


@pytest.mark.slow
def test_quick_run_on_a_criteo_file(tmp_path, validate_results):
    from tf_smelu.data import write_synthetic_criteo_file

    path = write_synthetic_criteo_file(str(tmp_path / "day_0.gz"), 3000, seed=1, gzip=True)
    result = _run(
        "--quick", f"--dataset=criteo:{path}", "--activations=relu,smelu:0.3",
        "--replicas=2", f"--output_dir={tmp_path}", "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    validate_results(tmp_path / "results.json")
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert results["config"]["dataset"] == f"criteo:{path}"
    assert [r["label"] for r in results["results"]] == ["relu", "smelu(β=0.3)"]
    assert all(r["rel_pd_by_group"] == {} for r in results["results"])  # no item field


@pytest.mark.slow
def test_bad_dataset_spec_fails_before_any_work(tmp_path):
    result = _run("--dataset=parquet:/nowhere", f"--output_dir={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "dataset" in result.stderr.lower()


PRESET_SCRIPT = """
import json
from absl import app, flags
from tf_smelu.cli import resolved_flags
flags.DEFINE_boolean("quick", False, "Preset.")
flags.DEFINE_integer("replicas", 8, "R.")
flags.DEFINE_integer("train_examples", 500, "N.")
app.run(lambda argv: print(json.dumps(resolved_flags({"replicas": 3, "train_examples": 20}))))
"""


@pytest.mark.slow
def test_quick_preset_never_overrides_explicit_flags(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(PRESET_SCRIPT)

    def config(*args):
        result = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert config("--replicas=5") == {"quick": False, "replicas": 5, "train_examples": 500}
    assert config("--quick", "--replicas=5") == {"quick": True, "replicas": 5, "train_examples": 20}


@pytest.mark.slow
def test_max_auc_loss_searches_and_recommends(tmp_path, validate_results):
    result = _run(
        "--quick", "--train_examples=4000", "--eval_examples=2000", "--hidden_units=16,8",
        "--activations=relu,smelu:0.1,gelu", "--replicas=4", "--max_auc_loss=0.005",
        # The search is the subject, not the learning-rate sweep (test_learning_rate's; 0.032
        # is what it picks here) nor the time budget's stop (test_advisor's; a generous cap
        # here): R stays 4, so the search ends after the same rows however loaded the machine.
        "--learning_rate=0.032", "--notune_learning_rate", "--max_replicas=4",
        "--time_budget=300",
        f"--output_dir={tmp_path}", "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    content = validate_results(tmp_path / "results.json")
    advice = content["advice"]["tower_init"]
    assert advice["text"] in result.stdout and "Recommendation for sources tower_init" in (
        result.stdout)
    assert advice["text"].startswith(("use ", "keep relu"))
    labels = [r["label"] for r in content["results"]]
    # The baseline and the first β come first, the reference point after them.
    assert labels[:3] == ["relu", "smelu(β=0.05)", "gelu"]
    assert [t["label"] for t in advice["trials"]][:3] == ["relu", "smelu(β=0.05)", "gelu"]
    for row in content["results"]:  # the advisor's inputs are in every row
        assert len(row["rel_pd_pairs"]) == row["replicas"] * (row["replicas"] - 1) // 2
        assert len(row["aucs"]) == row["replicas"]
    assert {"smelu"} <= set(advice["frontiers"])


@pytest.mark.slow
def test_relative_beta_sets_each_layer_from_its_measured_spread(tmp_path, validate_results):
    result = _run(
        "--quick", "--train_examples=4000", "--eval_examples=1000", "--hidden_units=16,8",
        "--replicas=2", "--activations=relu,smelu:0.5", "--beta_scale=relative",
        "--preactivation_warmup_steps=5", f"--output_dir={tmp_path}", "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pre-activation std per hidden layer after 5 ReLU steps" in result.stdout
    relu, smelu = validate_results(tmp_path / "results.json")["results"]
    assert relu["label"] == "relu" and smelu["label"] == "smelu(β=0.5σ)"
    assert smelu["k"] == 0.5 and len(smelu["beta_per_layer"]) == 2
    for key, beta in smelu["beta_per_layer"].items():
        assert beta == pytest.approx(0.5 * smelu["preactivation_std"][key])


@pytest.mark.slow
def test_the_search_with_relative_beta_climbs_k_and_names_each_layers_beta(tmp_path,
                                                                          validate_results):
    result = _run(
        "--quick", "--train_examples=4000", "--eval_examples=1000", "--hidden_units=16,8",
        "--activations=relu,smelu:1", "--replicas=4", "--max_replicas=4", "--beta_scale=relative",
        "--preactivation_warmup_steps=5", "--max_auc_loss=0.01",
        # As in test_max_auc_loss_searches_and_recommends: the sweep's rate, R fixed, a cap.
        "--learning_rate=0.032", "--notune_learning_rate", "--time_budget=300",
        f"--output_dir={tmp_path}", "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    content = validate_results(tmp_path / "results.json")
    labels = [r["label"] for r in content["results"]]
    assert labels[:2] == ["relu", "smelu(β=0.125σ)"]  # the k grid, not smelu:1's own k
    for row in content["results"][1:]:
        assert row["beta_scale"] == "relative" and row["k"] == row["beta"]
        for key, beta in row["beta_per_layer"].items():
            assert beta == pytest.approx(row["k"] * row["preactivation_std"][key])
    advice = content["advice"]["tower_init"]
    assert [t["label"] for t in advice["trials"]][:2] == labels[:2]
    if advice["choice"] is not None:
        assert "with --beta_scale=relative, β per hidden layer" in advice["text"]
