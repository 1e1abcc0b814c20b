"""Multi-worker training: the loop in process, the launcher, and 2 localhost workers.

The `slow` tests start real `MultiWorkerMirroredStrategy` clusters of two
processes on 127.0.0.1 (a few seconds of TF start-up each); every launch is
bounded by a timeout and the launcher kills its workers' process groups.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf

from tf_smelu.data.synthetic import CTRExamples
from tf_smelu.training import distributed
from tf_smelu.training.distributed import (
    DistributedTrainConfig,
    DistributedTrainer,
    averaging_steps,
    load_weights,
    in_memory_dataset_fn,
    synthetic_problem,
    worker_output_path,
)
from tf_smelu.training.launcher import WorkerFailedError, WorkerTimeoutError, launch_workers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_TIMEOUT = 240  # seconds per 2-worker run; normal is 10-40 s on 2 busy cores
TINY_PROBLEM = dict(hidden_units=(16,), embedding_dim=4, max_vocab_size=50, num_examples=1024)
TINY_FLAGS = [
    "--hidden_units=16", "--embedding_dim=4", "--max_vocab_size=50", "--num_examples=1024",
    "--per_replica_batch_size=16", "--log_every=10",
]


# --------------------------------------------------------------------------
# In process, default strategy.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_problem():
    return synthetic_problem(**TINY_PROBLEM)


def _train(problem, **config):
    """Trains in this process under the default strategy; returns (weights, result)."""
    model_fn, dataset_fn = problem
    config.setdefault("per_replica_batch_size", 16)
    trainer = DistributedTrainer(
        model_fn, dataset_fn, DistributedTrainConfig(**config), tf.distribute.get_strategy()
    )
    result = trainer.train()
    return trainer.weights(), result


def _same(weights_a, weights_b) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))


def test_default_strategy_trains(tiny_problem):
    model_fn, _ = tiny_problem
    initial = [w.numpy() for w in model_fn().weights]
    weights, result = _train(tiny_problem, steps=40, learning_rate=1e-2)
    assert (result.start_step, result.final_step, len(result.losses)) == (0, 40, 40)
    assert result.worker.num_workers == 1 and result.schedule_seed is None
    assert not _same(weights, initial)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])


def test_one_worker_local_sgd_is_sync(tiny_problem):
    # Alone, a worker never averages: local SGD must then be plain training,
    # which checks that both paths scale the loss the same way.
    sync, _ = _train(tiny_problem, steps=12)
    local, result = _train(tiny_problem, steps=12, update_mode="local_sgd", local_sgd_period=4)
    assert _same(sync, local)
    assert result.averaging_steps == [4, 8, 12]


def test_stale_schedule_seed_reproducible_entropy_differs(tiny_problem):
    stale = dict(steps=12, update_mode="stale", max_delay=3)
    seeded_a, result = _train(tiny_problem, schedule_seed=7, **stale)
    seeded_b, _ = _train(tiny_problem, schedule_seed=7, **stale)
    assert result.schedule_seed == 7 and _same(seeded_a, seeded_b)
    entropy_a, result_a = _train(tiny_problem, **stale)
    entropy_b, result_b = _train(tiny_problem, **stale)
    assert result_a.schedule_seed != result_b.schedule_seed
    assert not _same(entropy_a, entropy_b)


@pytest.mark.parametrize("update_mode", ["sync", "stale"])
def test_jit_compiled_gradients_match_graph_mode(tiny_problem, update_mode):
    run = dict(steps=8, update_mode=update_mode, max_delay=2, schedule_seed=1)
    graph, _ = _train(tiny_problem, **run)
    xla, result = _train(tiny_problem, jit_compile=True, **run)
    assert len(result.losses) == 8 and not _same(xla, [w * 0 for w in xla])
    for a, b in zip(graph, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [(dict(steps=0), "steps"), (dict(update_mode="async"), "update_mode"),
     (dict(learning_rate=-1.0), "learning_rate"), (dict(schedule_seed=-2), "schedule_seed"),
     (dict(jit_compile=True, sparse_gradients=True), "dense gradients")],
)
def test_train_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        DistributedTrainConfig(**{"steps": 10, **bad})


class _Crash(Exception):
    pass


def test_resume_after_crash_matches_uninterrupted_run(tiny_problem, tmp_path, monkeypatch):
    """Stale mode: the delay ring buffer, step and entropy seed come back too."""

    def crash(code):
        raise _Crash(code)

    monkeypatch.setattr(distributed.os, "_exit", crash)
    run = dict(steps=30, update_mode="stale", max_delay=3, checkpoint_every=10,
               checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(_Crash):
        _train(tiny_problem, crash_at_step=25, crash_worker=0, **run)
    assert tf.train.latest_checkpoint(run["checkpoint_dir"]).endswith("ckpt-20")
    resumed, result = _train(tiny_problem, **run)
    assert (result.start_step, result.final_step, len(result.losses)) == (20, 30, 10)

    uninterrupted, _ = _train(tiny_problem, steps=30, update_mode="stale", max_delay=3,
                              schedule_seed=result.schedule_seed)
    # One worker: consolidating the pending gradients is exact, and the
    # resumed run skips the consumed batches, so nothing differs at all.
    assert _same(resumed, uninterrupted)
    # A finished run resumes at its end and does nothing more.
    _, again = _train(tiny_problem, **run)
    assert (again.start_step, again.losses) == (30, [])


def test_workers_read_disjoint_shards():
    rows = np.arange(10)
    examples = CTRExamples({"row": rows}, rows.astype(np.float32), rows.astype(np.float32))
    dataset_fn = in_memory_dataset_fn(examples)
    seen = []
    for index in range(2):
        context = tf.distribute.InputContext(2, index, 2)
        seen.append({int(r) for features, _ in dataset_fn(context, 2) for r in features["row"]})
    assert seen[0] == {0, 2, 4, 6} and seen[1] == {1, 3, 5, 7}  # full batches only


def test_averaging_steps_shared_jittered_and_final():
    steps = averaging_steps(100, period=8, jitter=3, seed=1)
    assert steps == averaging_steps(100, period=8, jitter=3, seed=1)
    assert steps[-1] == 100 and steps == sorted(set(steps))
    gaps = np.diff([0, *steps[:-1]])
    assert gaps.min() >= 5 and gaps.max() <= 11 and len(set(gaps)) > 1


# --------------------------------------------------------------------------
# Launcher with plain Python workers (no TensorFlow: fast).
# --------------------------------------------------------------------------


def _python_worker(code: str) -> list[str]:
    prelude = (
        "import json, os, subprocess, sys, time; "
        "i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
    )
    return [sys.executable, "-c", prelude + code]


def _assert_gone(pids):
    for pid in pids:
        # A killed grandchild may linger a moment as init's zombie.
        gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert gone, pid
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not mine & set(pids)


def test_launcher_sets_tf_config_and_prefixes_output(capsys):
    code = (
        "c = json.loads(os.environ['TF_CONFIG']); "
        "print(len(c['cluster']['worker']), c['task']['index'], c['cluster']['worker'][i])"
    )
    assert launch_workers(_python_worker(code), 3, timeout=60) == [0, 0, 0]
    lines = capsys.readouterr().out.splitlines()
    for index in range(3):
        line = next(l for l in lines if l.startswith(f"[worker {index}] "))
        count, task, address = line.split("] ", 1)[1].split()
        assert (count, task) == ("3", str(index)) and address.startswith("127.0.0.1:")


def test_launcher_fails_fast_and_kills_process_groups(tmp_path):
    # Worker 1 starts a grandchild and fails; worker 0 would run for a minute.
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "print('hello from', i); "
        "g = subprocess.Popen(['sleep', '60']) if i == 1 else None; "
        f"open({str(pid_file)!r}, 'w').write(str(g.pid)) if i == 1 else None; "
        "sys.exit(3) if i == 1 else time.sleep(60)"
    )
    start = time.monotonic()
    with pytest.raises(WorkerFailedError) as failure:
        launch_workers(_python_worker(code), 2, timeout=60, quiet=True)
    assert time.monotonic() - start < 30
    error = failure.value
    assert (error.worker_index, error.exit_code) == (1, 3)
    assert "worker 1 failed with exit code 3" in str(error) and "hello from 1" in str(error)
    _assert_gone(error.pids + [int(pid_file.read_text())])


def test_launcher_timeout_kills_everything():
    with pytest.raises(WorkerTimeoutError) as failure:
        launch_workers(_python_worker("time.sleep(60)"), 2, timeout=1, quiet=True)
    assert "still running" in str(failure.value)
    _assert_gone(failure.value.pids)


# --------------------------------------------------------------------------
# Two MultiWorkerMirroredStrategy workers on localhost.
# --------------------------------------------------------------------------


def _launch_training(output, *flags):
    command = [sys.executable, "-m", "tf_smelu.training.distributed", *TINY_FLAGS,
               f"--output={output}", *flags]
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    return launch_workers(command, 2, timeout=LAUNCH_TIMEOUT, env=env, cwd=REPO)


def _worker_outputs(output):
    weights = [load_weights(worker_output_path(str(output), i)) for i in range(2)]
    summaries = []
    for i in range(2):
        with open(worker_output_path(str(output), i, ".json"), encoding="utf-8") as f:
            summaries.append(json.load(f))
    return weights, summaries


@pytest.mark.slow
def test_two_workers_sync_identical_weights(tmp_path):
    output = tmp_path / "sync.npz"
    assert _launch_training(output, "--steps=30", "--update_mode=sync") == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)
    assert _same(w0, load_weights(str(output)))  # the chief's final weights
    assert [s["worker"] for s in summaries] == [{"index": i, "num_workers": 2} for i in range(2)]
    # The reported loss is the global-batch mean: the same on both workers.
    assert summaries[0]["losses"] == summaries[1]["losses"] and len(summaries[0]["losses"]) == 30


@pytest.mark.slow
def test_two_workers_crash_is_reported_then_stale_run_resumes(tmp_path):
    """Stale mode without a schedule seed: the chief's seed is shared and checkpointed."""
    output, checkpoint_dir = tmp_path / "stale.npz", tmp_path / "ckpt"
    flags = ["--steps=40", "--update_mode=stale", "--max_delay=3",
             f"--checkpoint_dir={checkpoint_dir}", "--checkpoint_every=10"]
    with pytest.raises(WorkerFailedError) as failure:
        _launch_training(output, *flags, "--crash_at_step=25", "--crash_worker=1")
    error = failure.value
    assert (error.worker_index, error.exit_code) == (1, 1)
    assert "worker 1 failed with exit code 1" in str(error)
    assert "crashing on purpose after step 25" in str(error)
    _assert_gone(error.pids)
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    assert latest.endswith("ckpt-20")
    seed = int(tf.train.load_variable(latest, "schedule_seed/.ATTRIBUTES/VARIABLE_VALUE"))
    assert seed >= 0

    assert _launch_training(output, *flags) == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)  # both workers used the same delays
    for summary in summaries:
        assert (summary["start_step"], summary["final_step"]) == (20, 40)
        assert len(summary["losses"]) == 20 and summary["schedule_seed"] == seed
    assert tf.train.latest_checkpoint(str(checkpoint_dir)).endswith("ckpt-40")


@pytest.mark.slow
def test_two_workers_local_sgd_equal_after_final_average(tmp_path):
    output = tmp_path / "local.npz"
    flags = ["--steps=20", "--update_mode=local_sgd", "--local_sgd_period=6",
             "--local_sgd_jitter=2", "--schedule_seed=3"]
    assert _launch_training(output, *flags) == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)
    assert summaries[0]["averaging_steps"] == summaries[1]["averaging_steps"]
    assert summaries[0]["averaging_steps"] == averaging_steps(20, 6, 2, 3)
    # Between averages each worker stepped on its own shard.
    assert summaries[0]["losses"] != summaries[1]["losses"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode_flags",
    [["--update_mode=stale", "--max_delay=3"],
     ["--update_mode=local_sgd", "--local_sgd_period=5", "--local_sgd_jitter=3"]],
    ids=["stale", "local_sgd"],
)
def test_two_workers_schedule_seed_reproducible_entropy_differs(tmp_path, mode_flags):
    """Run to run on a real 2-worker cluster: a fixed --schedule_seed gives
    bit-identical models; without it each run's chief draws its own schedule."""

    def run(name, *flags):
        output = tmp_path / f"{name}.npz"
        assert _launch_training(output, "--steps=24", *mode_flags, *flags) == [0, 0]
        (w0, w1), summaries = _worker_outputs(output)
        assert _same(w0, w1)  # both workers followed the same schedule
        return w0, summaries[0]

    seeded_a, summary_a = run("seeded_a", "--schedule_seed=11")
    seeded_b, summary_b = run("seeded_b", "--schedule_seed=11")
    assert summary_a["schedule_seed"] == summary_b["schedule_seed"] == 11
    assert _same(seeded_a, seeded_b)
    assert summary_a["losses"] == summary_b["losses"]

    entropy_a, summary_c = run("entropy_a")
    entropy_b, summary_d = run("entropy_b")
    assert summary_c["schedule_seed"] != summary_d["schedule_seed"]
    if "--update_mode=local_sgd" in mode_flags:
        assert summary_c["averaging_steps"] != summary_d["averaging_steps"]
    assert not _same(entropy_a, entropy_b)


def test_launcher_command_line_reports_the_failing_worker():
    code = ("import json, os, sys; i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
            "print('up', i); sys.exit(7 if i == 1 else 0)")
    completed = subprocess.run(
        [sys.executable, "-m", "tf_smelu.training.launcher", "--num_workers=2", "--timeout=60",
         "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert completed.returncode == 7, completed.stderr[-2000:]
    assert "[worker 1] up 1" in completed.stdout
    assert "launcher: worker 1 failed with exit code 7" in completed.stderr


def test_launcher_command_line_needs_a_command():
    completed = subprocess.run(
        [sys.executable, "-m", "tf_smelu.training.launcher", "--num_workers=2"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert completed.returncode != 0 and "worker command after `--`" in completed.stderr
