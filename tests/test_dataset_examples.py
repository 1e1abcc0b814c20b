"""The Criteo and MovieLens examples run end to end in a tiny configuration."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _rows(output_dir):
    with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as f:
        return json.load(f)["results"]


@pytest.mark.slow
def test_criteo_example_on_its_generated_file(tmp_path, validate_results):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "criteo_ctr.py"),
         "--synthetic_rows=3000", "--train_examples=2500", "--eval_examples=500",
         "--replicas=2", f"--output_dir={tmp_path}", "--noprogress"],
        capture_output=True, text=True, timeout=600, env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    validate_results(tmp_path / "results.json")
    rows = _rows(tmp_path)
    assert [r["label"] for r in rows] == ["relu", "smelu(β=0.4)"]
    assert os.path.exists(tmp_path / "tradeoff.png")
    assert os.path.exists(tmp_path / "synthetic_criteo.tsv.gz")


@pytest.mark.slow
def test_criteo_example_rejects_a_missing_file(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "criteo_ctr.py"),
         f"--path={tmp_path}/nope.gz", f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, env=ENV,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("nope.gz: no such file")


# TFDS cannot download here: run the example's real TFDS code path on mock
# data with realistic 1-5 star ratings (TFDS' own mock ratings are in [0, 1)).
MOCKED_MOVIELENS = textwrap.dedent(
    """
    import runpy, sys
    import tensorflow_datasets as tfds
    sys.path.insert(0, sys.argv[1])
    from test_movielens import _realistic_as_dataset
    sys.argv = sys.argv[2:]
    def fake(self, *args, **kwargs):  # a method: TFDS binds it to the builder
        return _realistic_as_dataset(self, *args, count=600, **kwargs)
    with tfds.testing.mock_data(as_dataset_fn=fake):
        runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


@pytest.mark.slow
def test_movielens_example_on_tfds_mock_data(tmp_path, validate_results):
    result = subprocess.run(
        [sys.executable, "-c", MOCKED_MOVIELENS, os.path.join(REPO, "tests"),
         os.path.join(REPO, "examples", "movielens_ranking.py"),
         "--replicas=2", "--epochs=1", "--activations=relu,smelu:0.3",
         f"--output_dir={tmp_path}", "--noprogress"],
        capture_output=True, text=True, timeout=600, env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    validate_results(tmp_path / "results.json")
    rows = _rows(tmp_path)
    assert [r["label"] for r in rows] == ["relu", "smelu(β=0.3)"]
    assert all(0.0 <= r["auc_mean"] <= 1.0 for r in rows)
    assert set(rows[0]["rel_pd_by_group"]) <= {"item_head", "item_torso", "item_tail"}
