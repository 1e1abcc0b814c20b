"""examples/multiworker_reproducibility.py and the main job's --workers: end to end.

The library code both use is tested in tests/test_replica_jobs.py; here the
command lines run for real: 4 + 2 two-worker MultiWorkerMirroredStrategy jobs
on localhost (~10 s each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "multiworker_reproducibility.py")
MAIN_JOB = os.path.join(REPO, "examples", "recsys_reproducibility.py")
ROW_KEYS = {
    "activation", "beta", "label", "replicas", "sources", "auc_mean", "auc_std",
    "logloss_mean", "abs_pd", "rel_pd", "rel_pd_ci", "rel_pd_median", "outlier_replicas",
    "train_seconds", "update_mode", "workers",
}


def _run(script, *args, timeout=400):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    completed = subprocess.run(
        [sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


@pytest.mark.slow
def test_quick_run_writes_results_and_plot(tmp_path, validate_results):
    output_dir = tmp_path / "out"
    completed = _run(EXAMPLE, "--quick", "--update_mode=stale", f"--output_dir={output_dir}",
                     "--job_timeout=120", "--noprogress")
    assert "update:stale" in completed.stdout
    validate_results(output_dir / "results.json")
    with open(output_dir / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    rows = results["results"]
    assert [(r["update_mode"], r["activation"]) for r in rows] == [
        ("stale", "relu"), ("stale", "smelu")]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["replicas"] == 2 and row["workers"] == 2
        assert row["sources"] == ["update:stale"]
        assert 0.0 <= row["auc_mean"] <= 1.0
        # Each job drew its own delay schedule, so replicas differ.
        assert row["rel_pd"] > 0
    assert results["config"]["quick"] and results["config"]["replicas"] == 2
    assert (output_dir / "tradeoff.png").stat().st_size > 0
    logs = sorted(p.name for p in (output_dir / "runs").glob("*.log"))
    assert logs == [f"{a}.stale.r{r}.log" for a in ("relu", "smelu_0.4") for r in (0, 1)]


@pytest.mark.slow
def test_main_job_runs_replicas_as_multi_worker_jobs(tmp_path, validate_results):
    """The documented --workers/--update_mode flags of the main job (docs/guide/multi-worker.md); sources default to none."""
    completed = _run(
        MAIN_JOB, "--workers=2", "--update_mode=local_sgd", "--activations=relu",
        "--replicas=2", "--train_examples=2048", "--eval_examples=500", "--batch_size=64",
        "--hidden_units=16", "--embedding_dim=4", "--max_vocab_size=50",
        "--local_sgd_period=6", f"--output_dir={tmp_path}", "--noprogress",
    )
    assert "2-worker jobs on localhost" in completed.stdout
    validate_results(tmp_path / "results.json")
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    (row,) = results["results"]
    assert row["sources"] == ["update:local_sgd"] and row["workers"] == 2
    assert row["rel_pd"] > 0  # jittered averaging points differ per job
    assert results["config"]["sources"] == ["none"]
