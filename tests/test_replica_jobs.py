"""tf_smelu.training.replica_jobs and the multi-worker path of the experiment."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from absl import flags

from tf_smelu.experiment import CTRExperimentConfig, run_ctr_experiment
from tf_smelu.training import distributed
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.replica_jobs import ReplicaJob, ReplicaJobError, run_replica_job
from tf_smelu.training.trainer import TrainerOptions

TINY = TrainingConfig(
    steps=10, batch_size=16, hidden_units=(16,), embedding_dim=4, max_vocab_size=50,
    train_examples=256, eval_examples=100, seed=3,
)
"""With 2 workers each steps on 8 rows."""


def _flag(command, name):
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}="))


def _parse_worker_flags(argv):
    """The worker's `(TrainingConfig, TrainerOptions, WorkerJob)` of `argv` (argv[0]: program)."""
    flag_values = flags.FlagValues()
    distributed.define_flags(flag_values)
    flag_values(list(argv))
    return distributed.parse_flags(flag_values)


def test_replicas_differ_only_in_outputs_and_given_seeds(tmp_path):
    jobs = [ReplicaJob("relu", "stale", r, str(tmp_path), tower_seed=10 + r) for r in range(2)]
    first, second = (job.command(TINY) for job in jobs)
    differing = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert all("--output" in a or "_out=" in a or "--tower_seed" in a for a, _ in differing)
    assert (_flag(first, "tower_seed"), _flag(second, "tower_seed")) == ("10", "11")
    assert not any(arg.startswith(("--schedule_seed", "--embedding_seed")) for arg in first)
    assert _flag(first, "activation") == "relu" and _flag(first, "update_mode") == "stale"
    assert _flag(first, "batch_size") == "16"  # the global batch, whatever the workers
    assert _flag(first, "predictions_out") == jobs[0].path(".predictions.npy")
    assert jobs[0].name == "relu.stale.r0"
    assert ReplicaJob("smelu:0.4", "sync", 2, "d", tag="order").name == "smelu_0.4.sync.order.r2"


def test_worker_flags_parse_as_the_worker_defines_them(tmp_path):
    """Every flag the jobs pass exists in the worker, passes its validators and
    gives back the job's configuration."""
    training = TrainingConfig(epochs=2, dataset="csv:data/rows.csv#clicked", hidden_units=(8, 4))
    job = ReplicaJob("smelu:0.4", "local_sgd", 0, str(tmp_path), order_seed=5)
    command = job.command(training)
    config, options, worker_job = _parse_worker_flags([command[2], *command[3:]])
    # Relative paths are resolved here: the workers may run elsewhere.
    assert str(config.dataset) == f"csv:{os.path.abspath('data/rows.csv')}#clicked"
    assert config == dataclasses.replace(
        training, update_mode="local_sgd", dataset=training.dataset.absolute())
    assert config.steps is None and config.epochs == 2 and config.hidden_units == (8, 4)
    assert options == TrainerOptions(log_every=0)
    assert (worker_job.activation, worker_job.order_seed, worker_job.tower_seed) == (
        "smelu:0.4", 5, None)
    assert worker_job.predictions_out == job.path(".predictions.npy")


def test_run_replica_job_rejects_bad_arguments_before_launching(tmp_path):
    job = ReplicaJob("relu", "sync", 0, str(tmp_path / "jobs"))
    with pytest.raises(ValueError, match="workers"):
        run_replica_job(TINY, job, workers=0)
    with pytest.raises(ValueError, match="timeout"):
        run_replica_job(TINY, job, timeout=0)
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        run_replica_job(TINY, job, workers=3)  # 16 rows do not split over 3 workers
    assert not os.path.exists(job.run_dir)


def test_replica_job_rejects_unknown_update_mode():
    with pytest.raises(ValueError, match="update_mode"):
        ReplicaJob("relu", "async", 0, "d")


@pytest.mark.parametrize(
    "bad, message",
    [(dict(sources=("stale",)), "in-process harness"),
     (dict(sources=("tower_init+op_nondeterminism",)), "in-process harness"),
     (dict(batch_size=511), "multiple of the number of workers"),
     (dict(jit_compile=True), "jit_compile"),
     (dict(update_mode=("sync", "async")), "update_mode"),
     (dict(workers=0), "workers"),
     (dict(replicas=1), "replicas"),
     (dict(dataset="criteo:/x.tsv", max_vocab_size=100), "synthetic data only")],
)
def test_experiment_config_rejects_bad_multi_worker_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        CTRExperimentConfig.from_dict({"workers": 2, **bad})


def test_experiment_config_takes_a_training_config():
    training = TrainingConfig(batch_size=32, hidden_units=(16,))
    config = CTRExperimentConfig(workers=2, training=training)
    assert config.training is training
    assert CTRExperimentConfig.from_dict(
        {"workers": 2, "batch_size": 32, "hidden_units": [16], "output_dir": "ignored"}) == config
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        CTRExperimentConfig(workers=2, training=TrainingConfig(batch_size=33))


def test_multi_worker_is_chosen_by_workers_or_update_modes():
    assert not CTRExperimentConfig().multi_worker
    assert CTRExperimentConfig(workers=2).update_modes == ("sync",)
    config = CTRExperimentConfig(update_mode=("stale",))
    assert config.multi_worker and config.workers == 1 and config.update_modes == ("stale",)
    # In-process-only sources are fine without multi-worker jobs.
    assert not CTRExperimentConfig(sources=("stale",)).multi_worker


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_worker_derives_steps_from_epochs(tmp_path, monkeypatch):
    """One worker in this process (default strategy): --epochs sets the steps."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config, options, job = _parse_worker_flags([
        "worker", "--epochs=2", "--train_examples=320", "--batch_size=32",
        "--hidden_units=8", "--embedding_dim=4", "--max_vocab_size=20",
        "--log_every=0", "--eval_examples=50",
        f"--predictions_out={tmp_path / 'p.npy'}", f"--labels_out={tmp_path / 'l.npy'}"])
    assert config.steps is None
    result = distributed.run_worker(config, job, options)
    assert result.final_step == len(result.losses) == 20  # 2 x 320 rows / 32
    probabilities = np.load(tmp_path / "p.npy")
    assert probabilities.shape == (50,) and np.all((probabilities > 0) & (probabilities < 1))
    assert set(np.unique(np.load(tmp_path / "l.npy"))) <= {0.0, 1.0}


@pytest.mark.slow
def test_failing_job_names_its_log_and_cleans_up(tmp_path):
    training = dataclasses.replace(TINY, dataset="csv:/no/such/file.csv", max_vocab_size=0)
    job = ReplicaJob("relu", "sync", 0, str(tmp_path))
    with pytest.raises(ReplicaJobError) as failure:
        run_replica_job(training, job, workers=2, timeout=120)
    message = str(failure.value)
    assert "relu.sync.r0 failed" in message and job.path(".log") in message
    with open(job.path(".log"), encoding="utf-8") as log:
        assert "/no/such/file.csv" in log.read()


@pytest.mark.slow
def test_experiment_runs_replicas_as_two_worker_jobs(tmp_path):
    config = CTRExperimentConfig(
        activations=("relu",), sources=("none",), workers=2, update_mode=("sync", "stale"),
        replicas=2, job_timeout=240, work_dir=str(tmp_path), progress=False,
        training=TrainingConfig(train_examples=1024, eval_examples=300, batch_size=32,
                                hidden_units=(16,), embedding_dim=4, max_vocab_size=50),
    )
    rows = run_ctr_experiment(config, log=lambda line: None)
    assert [(r["update_mode"], r["activation"]) for r in rows] == [("sync", "relu"), ("stale", "relu")]
    for row in rows:
        assert row["sources"] == [f"update:{row['update_mode']}"] and row["workers"] == 2
        assert row["replicas"] == 2 and set(row["rel_pd_by_group"]) == {
            "item_head", "item_torso", "item_tail"}
    # Sync with shared seeds and no schedule: the control, replicas agree.
    assert all(r["rel_pd"] < 1e-3 for r in rows if r["update_mode"] == "sync")
    # Stale: every job drew its own delays, so its replicas differ.
    assert all(r["rel_pd"] > 0 for r in rows if r["update_mode"] == "stale")
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".log")]) == 4


@pytest.mark.parametrize(
    "bad_flags",
    ["--learning_rate=0", "--activation=smelu:-1", "--hidden_units=64,x", "--hidden_units=",
     "--steps=0", "--epochs=0", "--batch_size=0", "--train_examples=0", "--eval_examples=0",
     "--max_vocab_size=-1", "--dataset=parquet:/x", "--update_mode=async", "--model=rnn",
     "--checkpoint_every=-1", "--crash_at_step=0", "--tower_seed=-1",
     "--max_vocab_size=5 --dataset=csv:/x", "--jit_compile --sparse_gradients"],
)
def test_worker_rejects_bad_flags(bad_flags):
    # Each flag is checked as it is parsed (flags.Error); checks across flags
    # run when the configuration is built (ValueError, a usage error in `main`).
    with pytest.raises((flags.Error, ValueError)):
        _parse_worker_flags(["worker", *bad_flags.split()])


def test_worker_default_flags_parse():
    config, options, job = _parse_worker_flags(["worker"])
    assert (config, options, job) == (TrainingConfig(), TrainerOptions(), distributed.WorkerJob())
    assert config.steps is None and config.max_vocab_size == 0
