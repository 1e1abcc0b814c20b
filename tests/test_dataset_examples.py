"""The examples run end to end in a tiny configuration, on every kind of input.

The Criteo and MovieLens examples, and the main job on users' own files: a
CSV interaction log with integer ids, a CSV of ratings with schema flags, and
GZIP TFRecord files.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
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


# --------------------------------------------------------------------------
# The main job on users' own files.
# --------------------------------------------------------------------------

MAIN_JOB = os.path.join(REPO, "examples", "recsys_reproducibility.py")
NUM_INTERACTIONS = 3000


def _interactions(seed: int = 0) -> list[tuple[int, int, int, float]]:
    """(user_id, item_id, timestamp, rating): users and items with a taste signal."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 60, NUM_INTERACTIONS)
    items = rng.zipf(1.3, NUM_INTERACTIONS) % 200
    affinity = np.sin(users * 1.7) * np.cos(items * 0.9)
    ratings = np.clip(np.round(3 + 2 * affinity + rng.normal(0, 0.7, NUM_INTERACTIONS)), 1, 5)
    timestamps = 880_000_000 + np.sort(rng.integers(0, 10**7, NUM_INTERACTIONS))
    return list(zip(users.tolist(), items.tolist(), timestamps.tolist(), ratings.tolist(),
                    strict=True))


def _write_tfrecords(path_prefix: str) -> None:
    import tensorflow as tf

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    rows = _interactions()
    for shard in range(2):
        with tf.io.TFRecordWriter(f"{path_prefix}-{shard}.tfrecord.gz", options="GZIP") as w:
            for user, item, timestamp, rating in rows[shard::2]:
                features = {"user_id": int_feature(user), "item_id": int_feature(item),
                            "timestamp": int_feature(timestamp),
                            "label": int_feature(int(rating >= 4))}
                w.write(tf.train.Example(
                    features=tf.train.Features(feature=features)).SerializeToString())


def _run_main_job(tmp_path, *flags, timeout=600):
    return subprocess.run(
        [sys.executable, MAIN_JOB, "--quick", "--replicas=2", "--train_examples=2500",
         "--eval_examples=400", "--batch_size=256", f"--output_dir={tmp_path / 'out'}",
         "--noprogress", *flags],
        capture_output=True, text=True, timeout=timeout, env=ENV,
    )


OWN_DATA_KINDS = ("csv_ids", "csv_ratings", "tfrecord_gzip")


def _write_own_data(kind: str, directory) -> list[str]:
    """Writes `_interactions()` in the form `kind` names under `directory`; returns the
    main job's data flags for it."""
    rows = _interactions()
    if kind == "csv_ids":  # the usual export: no schema flag needed
        path = directory / "interactions.csv"
        path.write_text("user_id,item_id,timestamp,label\n" + "".join(
            f"{u},{i},{t},{int(r >= 4)}\n" for u, i, t, r in rows))
        return [f"--dataset=csv:{path}"]
    if kind == "csv_ratings":
        path = directory / "ratings.csv"
        path.write_text("user_id,item_id,rating\n" + "".join(
            f"{u},{i},{r:g}\n" for u, i, _, r in rows))
        return [f"--dataset=csv:{path}", "--label_column=rating", "--label_threshold=4"]
    _write_tfrecords(str(directory / "part"))
    return [f"--dataset=tfrecord:{directory}/part-*.tfrecord.gz"]


@pytest.fixture(scope="module")
def own_data_runs(tmp_path_factory):
    """The main job on every kind of own data, all started at once (each run spends much
    of its time starting TensorFlow on one core): {kind: (flags, run, its directory)}."""
    from concurrent.futures import ThreadPoolExecutor

    def run(kind):
        directory = tmp_path_factory.mktemp(kind)
        flags = _write_own_data(kind, directory)
        return kind, (flags, _run_main_job(directory, *flags), directory)

    with ThreadPoolExecutor(len(OWN_DATA_KINDS)) as pool:
        return dict(pool.map(run, OWN_DATA_KINDS))


@pytest.mark.slow
@pytest.mark.parametrize("kind", OWN_DATA_KINDS)
def test_main_job_on_your_own_data(own_data_runs, validate_results, kind):
    flags, result, directory = own_data_runs[kind]
    assert result.returncode == 0, result.stderr[-3000:]
    content = validate_results(directory / "out" / "results.json")
    config = content["config"]
    assert config["dataset"] == flags[0].removeprefix("--dataset=")
    if kind == "csv_ratings":
        assert (config["label_column"], config["label_threshold"]) == ("rating", 4.0)
    assert [row["label"] for row in content["results"]] == ["relu", "smelu(β=1)"]  # --quick
    for row in content["results"]:
        # Too few steps to learn much: the run is checked, not the model.
        assert row["replicas"] == 2 and 0.0 <= row["auc_mean"] <= 1.0 and row["rel_pd"] > 0
        # item_id is inferred as the item column: PD by item popularity.
        assert set(row["rel_pd_by_group"]) <= {"item_head", "item_torso", "item_tail"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, flags, message",
    [
        ("user_id,item_id,rating\n1,2,5\n", ["--label_threshold=4"],
         "set --label_column to some of ['user_id', 'item_id', 'rating']"),
        ("user_id,item_id,label\n1,2,1\n", ["--label_column=rating"],
         "given twice"),
    ],
)
def test_main_job_reports_schema_mistakes_in_one_line(tmp_path, content, flags, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    spec = f"csv:{path}#label" if "--label_column=rating" in flags else f"csv:{path}"
    result = _run_main_job(tmp_path, f"--dataset={spec}", *flags, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr

