"""tf_smelu.training.replica_jobs and the multi-worker path of the experiment."""

from __future__ import annotations

import os

import numpy as np
import pytest
from absl import flags

from tf_smelu.experiment import CTRExperimentConfig, run_ctr_experiment
from tf_smelu.training import distributed
from tf_smelu.training.replica_jobs import (
    ClusterTraining,
    ReplicaJob,
    ReplicaJobError,
    run_replica_job,
)

TINY = ClusterTraining(
    workers=2, steps=10, per_replica_batch_size=8, hidden_units=(16,), embedding_dim=4,
    max_vocab_size=50, train_examples=256, eval_examples=100, seed=3, timeout=120,
)


def _flag(command, name):
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}="))


def test_replicas_differ_only_in_outputs_and_given_seeds(tmp_path):
    jobs = [ReplicaJob("relu", "stale", r, str(tmp_path), tower_seed=10 + r) for r in range(2)]
    first, second = (job.command(TINY) for job in jobs)
    differing = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert all("--output" in a or "_out=" in a or "--tower_seed" in a for a, _ in differing)
    assert (_flag(first, "tower_seed"), _flag(second, "tower_seed")) == ("10", "11")
    assert not any(arg.startswith(("--schedule_seed", "--embedding_seed")) for arg in first)
    assert _flag(first, "activation") == "relu" and _flag(first, "update_mode") == "stale"
    assert _flag(first, "predictions_out") == jobs[0].path(".predictions.npy")
    assert jobs[0].name == "relu.stale.r0"
    assert ReplicaJob("smelu:0.4", "sync", 2, "d", tag="order").name == "smelu_0.4.sync.order.r2"


def test_worker_flags_parse_as_the_worker_defines_them(tmp_path):
    """Every flag the jobs pass exists in the worker and passes its validators."""
    training = ClusterTraining(epochs=2, dataset="csv:data/rows.csv#clicked", hidden_units=(8, 4))
    command = ReplicaJob("smelu:0.4", "local_sgd", 0, str(tmp_path)).command(training)
    flag_values = flags.FlagValues()
    names = distributed.define_flags(flag_values)
    flag_values([command[2], *command[3:]])
    assert flag_values.epochs == 2 and flag_values.update_mode == "local_sgd"
    assert flag_values.hidden_units == ["8", "4"]
    # Relative paths are resolved here: the workers may run elsewhere.
    assert flag_values.dataset == f"csv:{os.path.abspath('data/rows.csv')}#clicked"
    assert {"epochs", "order_seed", "dataset", "schedule_seed"} <= set(names)


@pytest.mark.parametrize(
    "bad",
    [dict(workers=0), dict(max_delay=-1), dict(model="rnn"), dict(hidden_units=()),
     dict(learning_rate=0.0), dict(epochs=0)],
)
def test_cluster_training_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ClusterTraining(**bad)


def test_replica_job_rejects_unknown_update_mode():
    with pytest.raises(ValueError, match="update_mode"):
        ReplicaJob("relu", "async", 0, "d")


@pytest.mark.parametrize(
    "bad, message",
    [(dict(sources=("stale",)), "in-process harness"),
     (dict(sources=("tower_init+op_nondeterminism",)), "in-process harness"),
     (dict(batch_size=511), "multiple of `workers`"),
     (dict(jit_compile=True), "jit_compile"),
     (dict(update_mode=("sync", "async")), "update_mode"),
     (dict(dataset="criteo:/x.tsv", max_vocab_size=100), "synthetic data only")],
)
def test_experiment_config_rejects_bad_multi_worker_settings(bad, message):
    config = CTRExperimentConfig(workers=2, **bad)
    assert config.multi_worker
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_multi_worker_is_chosen_by_workers_or_update_modes():
    assert not CTRExperimentConfig().multi_worker
    assert CTRExperimentConfig(workers=2).update_modes == ("sync",)
    config = CTRExperimentConfig(update_mode=("stale",))
    assert config.multi_worker and config.workers == 1 and config.update_modes == ("stale",)
    # In-process-only sources are fine without multi-worker jobs.
    CTRExperimentConfig(sources=("stale",)).validate()


def test_worker_derives_steps_from_epochs(tmp_path):
    """One worker in this process (default strategy): --epochs sets the steps."""
    flag_values = flags.FlagValues()
    names = distributed.define_flags(flag_values)
    flag_values(["worker", "--epochs=2", "--num_examples=320", "--per_replica_batch_size=32",
                 "--hidden_units=8", "--embedding_dim=4", "--max_vocab_size=20",
                 "--log_every=0", "--eval_examples=50",
                 f"--predictions_out={tmp_path / 'p.npy'}", f"--labels_out={tmp_path / 'l.npy'}"])
    result = distributed.run_worker({name: flag_values[name].value for name in names})
    assert result.final_step == len(result.losses) == 20  # 2 x 320 rows / 32
    probabilities = np.load(tmp_path / "p.npy")
    assert probabilities.shape == (50,) and np.all((probabilities > 0) & (probabilities < 1))
    assert set(np.unique(np.load(tmp_path / "l.npy"))) <= {0.0, 1.0}


@pytest.mark.slow
def test_failing_job_names_its_log_and_cleans_up(tmp_path):
    training = ClusterTraining(**{**TINY.__dict__, "dataset": "csv:/no/such/file.csv",
                                  "max_vocab_size": 0})
    job = ReplicaJob("relu", "sync", 0, str(tmp_path))
    with pytest.raises(ReplicaJobError) as failure:
        run_replica_job(training, job)
    message = str(failure.value)
    assert "relu.sync.r0 failed" in message and job.path(".log") in message
    assert "/no/such/file.csv" in open(job.path(".log"), encoding="utf-8").read()


@pytest.mark.slow
def test_experiment_runs_replicas_as_two_worker_jobs(tmp_path):
    config = CTRExperimentConfig(
        activations=("relu",), sources=("none",), workers=2,
        update_mode=("sync", "stale"), replicas=2, train_examples=1024, eval_examples=300,
        batch_size=32, hidden_units=(16,), embedding_dim=4, max_vocab_size=50,
        job_timeout=240, work_dir=str(tmp_path), progress=False,
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
    "bad_flag",
    ["--learning_rate=0", "--activation=smelu:-1", "--hidden_units=64,x", "--steps=0",
     "--dataset=parquet:/x", "--predictions_out=p.npy", "--update_mode=async"],
)
def test_worker_rejects_bad_flags(bad_flag):
    flag_values = flags.FlagValues()
    distributed.define_flags(flag_values)
    with pytest.raises(flags.Error):
        flag_values(["worker", bad_flag])
