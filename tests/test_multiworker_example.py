"""examples/multiworker_reproducibility.py: its row helper, and a --quick end-to-end run.

The slow test starts 8 two-worker MultiWorkerMirroredStrategy jobs on
localhost (2 activations x 2 update modes x 2 replicas, ~15 s each).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "multiworker_reproducibility.py")
ROW_KEYS = {
    "activation", "beta", "label", "replicas", "sources", "auc_mean", "auc_std",
    "logloss_mean", "abs_pd", "rel_pd", "rel_pd_ci", "rel_pd_median", "outlier_replicas",
    "train_seconds", "update_mode",
}


@pytest.fixture(scope="module")
def example():
    """The example as a module (its flags are only defined when it runs as a program)."""
    spec = importlib.util.spec_from_file_location("multiworker_reproducibility", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_replica_row_schema_and_values(example):
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(np.float64)
    base = np.clip(0.3 + 0.2 * (labels - 0.3) + 0.05 * rng.standard_normal(200), 0.01, 0.99)
    probabilities = np.stack([base, base * 1.1, base * 0.9])
    row = example.replica_row("smelu:0.4", "stale", probabilities, labels, train_seconds=12.0)
    assert ROW_KEYS <= set(row)
    assert (row["activation"], row["beta"], row["update_mode"]) == ("smelu", 0.4, "stale")
    assert row["sources"] == ["update:stale"] and row["replicas"] == 3
    assert row["auc_mean"] > 0.7 and not row["identical_replicas"]
    assert row["rel_pd"] == pytest.approx(np.mean([0.1 / 1.05, 0.1 / 0.95, 0.2 / 1.0]), rel=1e-6)

    same = example.replica_row("relu", "sync", np.stack([base, base]), labels, 1.0)
    assert same["identical_replicas"] and same["rel_pd"] == 0.0 and same["auc_std"] == 0.0


def test_worker_command_differs_only_in_activation_and_mode(example, tmp_path):
    config = dict(
        steps=10, per_replica_batch_size=8, learning_rate=1e-3, hidden_units=["16"],
        embedding_dim=4, max_vocab_size=50, train_examples=256, eval_examples=100,
        max_delay=2, local_sgd_period=4, local_sgd_jitter=1, seed=3,
    )
    jobs = [example.ReplicaJob("relu", "stale", r, str(tmp_path)) for r in range(2)]
    first, second = (example.worker_command(config, job) for job in jobs)
    differing = [(a, b) for a, b in zip(first, second) if a != b]
    assert all("--output" in a or "_out=" in a for a, _ in differing)  # only output paths
    assert not any(arg.startswith("--schedule_seed") for arg in first)  # OS entropy per run
    assert "--activation=relu" in first and "--update_mode=stale" in first


@pytest.mark.slow
def test_quick_run_writes_results_and_plot(tmp_path):
    output_dir = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    completed = subprocess.run(
        [sys.executable, EXAMPLE, "--quick", "--update_modes=sync,stale",
         f"--output_dir={output_dir}", "--job_timeout=120"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "[8/8]" in completed.stdout and "update:stale" in completed.stdout
    with open(output_dir / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    rows = results["results"]
    assert [(r["update_mode"], r["activation"]) for r in rows] == [
        ("sync", "relu"), ("sync", "smelu"), ("stale", "relu"), ("stale", "smelu")
    ]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["replicas"] == 2
        assert row["sources"] == [f"update:{row['update_mode']}"]
        assert 0.0 <= row["auc_mean"] <= 1.0 and row["rel_pd"] >= 0.0
    # Stale: each run drew its own delay schedule, so replicas differ.
    assert all(r["rel_pd"] > 0 for r in rows if r["update_mode"] == "stale")
    # Sync with shared seeds is the control: (nearly) identical replicas.
    assert all(r["rel_pd"] < 1e-3 for r in rows if r["update_mode"] == "sync")
    assert results["config"]["quick"] and results["config"]["replicas"] == 2
    assert (output_dir / "tradeoff.png").stat().st_size > 0
