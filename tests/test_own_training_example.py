"""examples/own_training_dcn.py from the user's side: --help, a tiny run, two mistakes."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "own_training_dcn.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(*flags, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=ENV)


def _assert_one_error_line(result, *words):
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]


def _write_shards(directory, rows=400):
    """Two GZIP TFRecord shards of `user`/`item` ids, a dense float and a 0/1 label."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    paths = []
    for shard in range(2):
        path = str(directory / f"part-{shard}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for _ in range(rows // 2):
                user, item = int(rng.integers(50)), int(rng.integers(80))
                feature = {
                    "user": tf.train.Feature(int64_list=tf.train.Int64List(value=[user])),
                    "item": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[f"item{item}".encode()])),
                    "price": tf.train.Feature(float_list=tf.train.FloatList(
                        value=[float(rng.normal())])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int((user + item) % 3 == 0)])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(
                    feature=feature)).SerializeToString())
        paths.append(path)
    return paths


@pytest.mark.slow
def test_help_explains_the_example_and_its_flags():
    result = _run("--help", timeout=120)
    assert "Measure your own training" in result.stdout
    for flag in ("--data", "--eval_data", "--activations", "--sources", "--replicas",
                 "--epochs", "--learning_rate", "--quick", "--output_dir"):
        assert flag in result.stdout, flag


@pytest.mark.slow
def test_quick_run_writes_shards_results_plot_and_churn(tmp_path, validate_results):
    out = tmp_path / "out"
    result = _run("--quick", f"--output_dir={out}", "--activations=relu,smelu:0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out / "data")) == [
        "eval-00000-of-00001.tfrecord.gz", "train-00000-of-00002.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz"]
    results = validate_results(out / "results.json")
    rows = results["results"]
    assert [row["label"] for row in rows] == ["relu", "smelu(β=0.5)"]
    for row in rows:
        assert row["trainer"] == "keras_fit" and len(row["aucs"]) == 2
        assert row["rel_pd"] > 0 and "auc" in row["eval_metrics"]
    assert results["config"]["learning_rate"] == 2e-3
    assert (out / "tradeoff.png").stat().st_size > 0
    [churn] = [line for line in result.stdout.splitlines() if line.startswith("Churn")]
    assert float(churn.rsplit(":", 1)[1]) > 0  # one epoch with --quick: one value


@pytest.mark.slow
def test_own_shards_with_bytes_ids_and_a_damaged_shard(tmp_path):
    """The user's own files (int64 and bytes ids) run; a cut shard stops before training."""
    train, held_out = _write_shards(tmp_path)
    ok = _run("--quick", f"--data={train}", f"--eval_data={held_out}",
              f"--output_dir={tmp_path / 'out'}", "--activations=relu", "--epochs=1")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "relu" in ok.stdout and "Churn" in ok.stdout

    data = open(train, "rb").read()
    damaged = tmp_path / "damaged.tfrecord.gz"
    damaged.write_bytes(data[: len(data) // 2])
    result = _run("--quick", f"--data={damaged}", f"--eval_data={held_out}",
                  f"--output_dir={tmp_path / 'out2'}")
    _assert_one_error_line(result, str(damaged), "damaged")
    assert not (tmp_path / "out2" / "results.json").exists()


@pytest.mark.slow  # each starts TensorFlow: ~5 s of CPU
@pytest.mark.parametrize("flags, words", [
    (["--data=/nonexistent/train-*", "--eval_data=/nonexistent/eval-*"],
     ["--data=/nonexistent/train-*", "No TFRecord file"]),
    (["--sources=init,weather"], ["--sources", "weather"]),
])
def test_a_wrong_flag_ends_in_one_error_line(tmp_path, flags, words):
    _assert_one_error_line(_run(*flags, f"--output_dir={tmp_path}", timeout=120), *words)


@pytest.mark.slow
def test_diverged_training_ends_in_one_error_line_naming_the_replica(tmp_path):
    result = _run("--quick", "--learning_rate=1e30",  # smelu:1 diverges (relu saturates)
                  f"--output_dir={tmp_path}", timeout=300)
    _assert_one_error_line(result, "training diverged", "replica run 0", "NaN")
    assert "Warning" not in result.stderr, result.stderr[-3000:]
