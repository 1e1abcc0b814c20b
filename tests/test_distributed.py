"""Multi-worker training: the trainer in process, and clusters of 2 localhost workers.

The in-process tests run `DistributedTrainer` under the default strategy. The
`slow` tests start real `MultiWorkerMirroredStrategy` clusters of two
processes on 127.0.0.1 (a few seconds of TF start-up each); every launch is
bounded by a timeout and the launcher kills its workers' process groups. The
launcher itself is tested in `test_launcher.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_smelu.data.features import CTRExamples
from tf_smelu.training import trainer as trainer_module
from tf_smelu.training.cluster import in_memory_dataset_fn
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.distributed import (
    WorkerJob,
    build_trainer,
    load_weights,
    worker_args,
    worker_output_path,
)
from tf_smelu.training.launcher import WorkerFailedError, launch_workers
from tf_smelu.training.problem import load_training_data
from tf_smelu.training.trainer import DistributedTrainer, TrainerOptions
from tf_smelu.training.updates import averaging_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_TIMEOUT = 240  # seconds per 2-worker run; normal is 10-40 s on 2 busy cores
TINY = TrainingConfig(hidden_units=(16,), embedding_dim=4, max_vocab_size=50,
                      train_examples=1024, eval_examples=64, batch_size=16)
"""In process: one replica steps on 16 rows."""
OPTION_FIELDS = {f.name for f in dataclasses.fields(TrainerOptions)}


# --------------------------------------------------------------------------
# In process, default strategy.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data():
    return load_training_data(TINY)


def _trainer(data, **fields) -> DistributedTrainer:
    """A trainer of `TINY` with `fields` (training or trainer options), default strategy."""
    options = TrainerOptions(**{k: v for k, v in fields.items() if k in OPTION_FIELDS})
    config = dataclasses.replace(TINY, **{k: v for k, v in fields.items()
                                          if k not in OPTION_FIELDS})
    return build_trainer(config, WorkerJob(), data, options, tf.distribute.get_strategy())


def _train(data, **fields):
    """Trains in this process under the default strategy; returns (weights, result)."""
    trainer = _trainer(data, **fields)
    result = trainer.train()
    return trainer.weights(), result


def _same(weights_a, weights_b) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))


def test_default_strategy_trains(tiny_data):
    trainer = _trainer(tiny_data, steps=40, learning_rate=1e-2)
    initial = trainer.weights()
    result = trainer.train()
    assert trainer.per_replica_batch_size == TINY.batch_size  # one replica: the whole batch
    assert (result.start_step, result.final_step, len(result.losses)) == (0, 40, 40)
    assert result.worker.num_workers == 1 and result.schedule_seed is None
    assert not _same(trainer.weights(), initial)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])


def test_runs_are_bit_identical(tiny_data):
    first, result_a = _train(tiny_data, steps=12)
    second, result_b = _train(tiny_data, steps=12)
    assert _same(first, second) and result_a.losses == result_b.losses


def test_steps_default_to_epochs_over_the_training_rows(tiny_data):
    trainer = _trainer(tiny_data, epochs=2)  # `steps` unset
    assert TINY.steps is None and trainer.config.steps == 2 * 1024 // 16


def test_one_worker_local_sgd_is_sync(tiny_data):
    # Alone, a worker never averages: local SGD must then be plain training,
    # which checks that both paths scale the loss the same way.
    sync, _ = _train(tiny_data, steps=12)
    local, result = _train(tiny_data, steps=12, update_mode="local_sgd", local_sgd_period=4,
                           local_sgd_jitter=0)
    assert _same(sync, local)
    assert result.averaging_steps == [4, 8, 12]


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_stale_schedule_seed_reproducible_entropy_differs(tiny_data):
    stale = dict(steps=12, update_mode="stale", max_delay=3)
    seeded_a, result = _train(tiny_data, schedule_seed=7, **stale)
    seeded_b, _ = _train(tiny_data, schedule_seed=7, **stale)
    assert result.schedule_seed == 7 and _same(seeded_a, seeded_b)
    entropy_a, result_a = _train(tiny_data, **stale)
    entropy_b, result_b = _train(tiny_data, **stale)
    assert result_a.schedule_seed != result_b.schedule_seed
    assert not _same(entropy_a, entropy_b)


@pytest.mark.parametrize("update_mode", ["sync", "stale"])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_jit_compiled_gradients_match_graph_mode(tiny_data, update_mode):
    run = dict(steps=8, update_mode=update_mode, max_delay=2, schedule_seed=1)
    graph, _ = _train(tiny_data, **run)
    xla, result = _train(tiny_data, jit_compile=True, **run)
    assert len(result.losses) == 8 and not _same(xla, [w * 0 for w in xla])
    for a, b in zip(graph, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [(dict(steps=0), "steps"), (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"),
     (dict(train_examples=0), "train_examples"), (dict(eval_examples=0), "eval_examples"),
     (dict(update_mode="async"), "update_mode"), (dict(model="rnn"), "model"),
     (dict(learning_rate=-1.0), "learning_rate"), (dict(learning_rate=0.0), "learning_rate"),
     (dict(schedule_seed=-2), "schedule_seed"), (dict(max_delay=-1), "max_delay"),
     (dict(hidden_units=()), "hidden_units"), (dict(hidden_units="64,x"), "hidden_units"),
     (dict(hidden_units=(64, 0)), "hidden_units"), (dict(max_vocab_size=-1), "max_vocab_size"),
     (dict(dataset="parquet:/x"), "dataset spec"),
     (dict(dataset="csv:/x", max_vocab_size=5), "synthetic data only"),
     (dict(jit_compile=True, sparse_gradients=True), "dense gradients")],
)
def test_training_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**{"steps": 10, **bad})


@pytest.mark.parametrize(
    "bad",
    [dict(checkpoint_every=-1), dict(max_checkpoints_to_keep=0), dict(log_every=-1),
     dict(crash_at_step=0), dict(crash_worker=-1)],
)
def test_trainer_options_reject_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainerOptions(**bad)


def test_trainer_needs_steps_and_a_batch_that_splits():
    def never_called(*args):
        pytest.fail("built before the checks")

    with pytest.raises(ValueError, match="steps"):
        DistributedTrainer(never_called, never_called, TINY, tf.distribute.get_strategy())
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        TINY.per_worker_batch_size(3)
    assert dataclasses.replace(TINY, batch_size=32).per_worker_batch_size(2) == 16


class _Crash(Exception):
    pass


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_resume_after_crash_matches_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    """Stale mode: the delay ring buffer, step and entropy seed come back too."""

    def crash(code):
        raise _Crash(code)

    monkeypatch.setattr(trainer_module.os, "_exit", crash)
    run = dict(steps=30, update_mode="stale", max_delay=3, checkpoint_every=10,
               checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(_Crash):
        _train(tiny_data, crash_at_step=25, crash_worker=0, **run)
    assert tf.train.latest_checkpoint(run["checkpoint_dir"]).endswith("ckpt-20")
    resumed, result = _train(tiny_data, **run)
    assert (result.start_step, result.final_step, len(result.losses)) == (20, 30, 10)

    uninterrupted, _ = _train(tiny_data, steps=30, update_mode="stale", max_delay=3,
                              schedule_seed=result.schedule_seed)
    # One worker: consolidating the pending gradients is exact, and the
    # resumed run skips the consumed batches, so nothing differs at all.
    assert _same(resumed, uninterrupted)
    # A finished run resumes at its end and does nothing more.
    _, again = _train(tiny_data, **run)
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
# Two MultiWorkerMirroredStrategy workers on localhost.
# --------------------------------------------------------------------------

TWO_WORKERS = dataclasses.replace(TINY, batch_size=32)
"""Each of 2 workers steps on 16 rows, as one replica does in process."""


def _launch_training(output, options=TrainerOptions(log_every=10), **fields):
    """Trains `TWO_WORKERS` with `fields` on 2 localhost workers; returns the exit codes."""
    config = dataclasses.replace(TWO_WORKERS, **fields)
    command = [sys.executable, "-m", "tf_smelu.training.distributed",
               *worker_args(config, WorkerJob(output=str(output)), options)]
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
    assert _launch_training(output, steps=30, update_mode="sync") == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)
    assert _same(w0, load_weights(str(output)))  # the chief's final weights
    assert [s["worker"] for s in summaries] == [{"index": i, "num_workers": 2} for i in range(2)]
    # The reported loss is the global-batch mean: the same on both workers.
    assert summaries[0]["losses"] == summaries[1]["losses"] and len(summaries[0]["losses"]) == 30
    assert summaries[0]["flags"]["batch_size"] == 32  # global: 16 rows per worker


@pytest.mark.slow
def test_two_workers_crash_is_reported_then_stale_run_resumes(
        tmp_path, assert_processes_gone, capsys):
    """Stale mode without a schedule seed: the chief's seed is shared and checkpointed;
    then a damaged newest checkpoint, passed over by both workers alike."""
    output, checkpoint_dir = tmp_path / "stale.npz", tmp_path / "ckpt"
    run = dict(steps=40, update_mode="stale", max_delay=3)
    options = TrainerOptions(checkpoint_dir=str(checkpoint_dir), checkpoint_every=10)
    crashing = dataclasses.replace(options, crash_at_step=25, crash_worker=1)
    with pytest.raises(WorkerFailedError) as failure:
        _launch_training(output, crashing, **run)
    error = failure.value
    assert (error.worker_index, error.exit_code) == (1, 1)
    assert "worker 1 failed with exit code 1" in str(error)
    assert "crashing on purpose after step 25" in str(error)
    assert_processes_gone(error.pids)
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    assert latest.endswith("ckpt-20")
    seed = int(tf.train.load_variable(latest, "schedule_seed/.ATTRIBUTES/VARIABLE_VALUE"))
    assert seed >= 0

    assert _launch_training(output, options, **run) == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)  # both workers used the same delays
    for summary in summaries:
        assert (summary["start_step"], summary["final_step"]) == (20, 40)
        assert len(summary["losses"]) == 20 and summary["schedule_seed"] == seed
    assert tf.train.latest_checkpoint(str(checkpoint_dir)).endswith("ckpt-40")

    # A damaged newest checkpoint: every worker reads the same files and
    # passes over it to the same intact one, with a warning.
    (data_file,) = checkpoint_dir.glob("ckpt-40.data-*")
    data_file.write_bytes(data_file.read_bytes()[:-8])
    capsys.readouterr()
    assert _launch_training(output, options, **run) == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)
    assert [s["start_step"] for s in summaries] == [30, 30]
    log = capsys.readouterr().out
    assert log.count("Resuming from ckpt-30, the newest intact checkpoint") == 2, log[-3000:]


@pytest.mark.slow
def test_two_workers_local_sgd_equal_after_final_average(tmp_path):
    output = tmp_path / "local.npz"
    assert _launch_training(output, steps=20, update_mode="local_sgd", local_sgd_period=6,
                            local_sgd_jitter=2, schedule_seed=3) == [0, 0]
    (w0, w1), summaries = _worker_outputs(output)
    assert _same(w0, w1)
    assert summaries[0]["averaging_steps"] == summaries[1]["averaging_steps"]
    assert summaries[0]["averaging_steps"] == averaging_steps(20, 6, 2, 3)
    # Between averages each worker stepped on its own shard.
    assert summaries[0]["losses"] != summaries[1]["losses"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode",
    [dict(update_mode="stale", max_delay=3),
     dict(update_mode="local_sgd", local_sgd_period=5, local_sgd_jitter=3)],
    ids=["stale", "local_sgd"],
)
def test_two_workers_schedule_seed_reproducible_entropy_differs(tmp_path, mode):
    """Run to run on a real 2-worker cluster: without a `schedule_seed` each run's
    chief draws its own schedule; given the seed a run drew, a run is bit-identical
    to it (three clusters, not four: the replay is the seeded pair)."""

    def run(name, **seed):
        output = tmp_path / f"{name}.npz"
        assert _launch_training(output, steps=24, **mode, **seed) == [0, 0]
        (w0, w1), summaries = _worker_outputs(output)
        assert _same(w0, w1)  # both workers followed the same schedule
        return w0, summaries[0]

    entropy_a, summary_a = run("entropy_a")
    entropy_b, summary_b = run("entropy_b")
    assert summary_a["schedule_seed"] != summary_b["schedule_seed"]
    if mode["update_mode"] == "local_sgd":
        assert summary_a["averaging_steps"] != summary_b["averaging_steps"]
    assert not _same(entropy_a, entropy_b)

    drawn = summary_a["schedule_seed"]
    seeded, summary_seeded = run("seeded", schedule_seed=drawn)
    assert summary_seeded["schedule_seed"] == drawn
    assert _same(seeded, entropy_a)
    assert summary_seeded["losses"] == summary_a["losses"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad_flags, message",
    [(["--batch_size=0"], "batch_size"),
     (["--max_vocab_size=5", "--dataset=csv:/x"], "synthetic data only")],
)
def test_worker_command_line_rejects_bad_flags_without_traceback(bad_flags, message):
    completed = subprocess.run(
        [sys.executable, "-m", "tf_smelu.training.distributed", *bad_flags],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
    )
    assert completed.returncode != 0 and message in completed.stderr, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
