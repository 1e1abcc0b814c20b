"""Checkpoints that never mislead: fingerprints, damaged directories, one error line.

In process (default strategy): a module fixture trains a tiny ReLU model for
30 steps once, saving `ckpt-10`, `ckpt-20` and `ckpt-30`; every test copies
that directory, changes the run or damages the copy, and resumes. The `slow`
tests run the worker program as a subprocess for its command-line behaviour;
the two-worker case (every worker makes the same choice) is in
`test_distributed.py`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from tf_smelu.data.features import CTRExamples
from tf_smelu.training.checkpoints import (
    RESUMABLE_FIELDS,
    CheckpointDirectory,
    CheckpointError,
    CheckpointMismatchError,
    examples_digest,
    fingerprint_differences,
    run_fingerprint,
)
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.distributed import WorkerJob, build_trainer, worker_args
from tf_smelu.training.problem import load_training_data
from tf_smelu.training.trainer import TrainerOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TrainingConfig(hidden_units=(16,), embedding_dim=4, max_vocab_size=50,
                      train_examples=1024, eval_examples=64, batch_size=16, steps=30)
OPTIONS = TrainerOptions(checkpoint_every=10, log_every=0)
OPTION_FIELDS = {f.name for f in dataclasses.fields(TrainerOptions)}


@pytest.fixture(scope="module")
def tiny_data():
    return load_training_data(TINY)


def _trainer(data, directory, job: WorkerJob | None = None, **fields):
    """A `TINY` trainer with `fields` (training or trainer options) checkpointing to `directory`."""
    options = dataclasses.replace(OPTIONS, checkpoint_dir=str(directory),
                                  **{k: v for k, v in fields.items() if k in OPTION_FIELDS})
    config = dataclasses.replace(TINY, **{k: v for k, v in fields.items()
                                          if k not in OPTION_FIELDS})
    return build_trainer(config, job or WorkerJob(), data, options, tf.distribute.get_strategy())


@pytest.fixture(scope="module")
def written(tiny_data, tmp_path_factory):
    """`ckpt-10`, `ckpt-20`, `ckpt-30` of a 30-step ReLU sync run."""
    directory = tmp_path_factory.mktemp("written") / "ckpt"
    _trainer(tiny_data, directory).train()
    return directory


@pytest.fixture
def ckpt_dir(written, tmp_path):
    """A fresh copy of `written` to change or damage."""
    copy = tmp_path / "ckpt"
    shutil.copytree(written, copy)
    return copy


def _snapshot(directory) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def _listed(directory) -> list[str]:
    state = tf.train.get_checkpoint_state(str(directory))
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths]


def _data_file(directory, step: int) -> str:
    (path,) = glob.glob(str(directory / f"ckpt-{step}.data-*"))
    return path


def _rewrite(data, directory, step: int, fingerprint: str | None, **fields) -> None:
    """Overwrites `ckpt-<step>` with a checkpoint of a fresh trainer (of `fields`)
    whose fingerprint text is `fingerprint` (`None`: no fingerprint, as older
    tf_smelu wrote)."""
    trainer = _trainer(data, directory.parent / "unused", **fields)
    trainer.step.assign(step)
    checkpoint = trainer.checkpoint
    if fingerprint is None:
        checkpoint = tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer,
                                         step=trainer.step, schedule_seed=trainer.schedule_seed)
    else:
        checkpoint.fingerprint.assign(fingerprint)
    checkpoint.write(str(directory / f"ckpt-{step}"))


# --------------------------------------------------------------------------
# The fingerprint.
# --------------------------------------------------------------------------


def test_fingerprint_holds_what_changes_the_run_and_only_that():
    stale = dataclasses.replace(TINY, update_mode="stale", dataset="csv:data.csv", max_vocab_size=0)
    fingerprint = run_fingerprint(stale, num_workers=2, num_replicas=2, activation="relu")
    assert not set(RESUMABLE_FIELDS) & set(fingerprint)
    assert fingerprint["dataset_kind"] == "csv" and "dataset" not in fingerprint  # not the path
    assert (fingerprint["max_delay"], fingerprint["schedule_seed"]) == (4, None)
    assert "local_sgd_period" not in fingerprint
    assert (fingerprint["workers"], fingerprint["replicas"], fingerprint["activation"]) == (
        2, 2, "relu")
    assert "max_delay" not in run_fingerprint(TINY, 1, 1)  # sync: no delays
    moved = dataclasses.replace(stale, dataset="csv:/elsewhere/data.csv")
    assert run_fingerprint(moved, 2, 2, activation="relu") == fingerprint


def test_differences_name_each_field_in_flag_form():
    written = dict(activation="relu", hidden_units=[16], max_delay=4)
    current = dict(activation="smelu:0.3", hidden_units=[32, 16])
    assert fingerprint_differences(written, current) == [
        "activation=relu, this run has activation=smelu:0.3",
        "hidden_units=16, this run has hidden_units=32,16",
        "max_delay=4, this run has no max_delay",
    ]
    assert fingerprint_differences(current, dict(current)) == []


def test_examples_digest_sees_one_changed_label(tiny_data):
    train = tiny_data.train
    labels = train.labels.copy()
    labels[7] = 1 - labels[7]
    changed = CTRExamples(train.features, labels, train.true_logits)
    assert examples_digest(train) == examples_digest(train.take(slice(None)))
    assert examples_digest(train) != examples_digest(changed)
    assert examples_digest(train).startswith("1024 rows, sha256 ")


# --------------------------------------------------------------------------
# Resuming another configuration.
# --------------------------------------------------------------------------


def _flip_labels(data):
    train = data.train
    return dataclasses.replace(data, train=CTRExamples(train.features, 1 - train.labels,
                                                       train.true_logits))


@pytest.mark.parametrize(
    "job, fields, change_data, expected",
    [(WorkerJob(activation="smelu:0.3"), {}, False,
      "activation=relu, this run has activation=smelu:0.3"),
     (WorkerJob(), dict(update_mode="stale"), False,
      "update_mode=sync, this run has update_mode=stale; no max_delay, this run has max_delay=4"),
     (WorkerJob(), dict(hidden_units=(32,)), False, "hidden_units=16, this run has hidden_units=32"),
     (WorkerJob(), dict(learning_rate=0.003), False, "learning_rate=0.01, this run has "),
     (WorkerJob(), dict(batch_size=32), False, "batch_size=16, this run has batch_size=32"),
     (WorkerJob(), dict(sparse_gradients=True), False, "sparse_gradients=False, this run has "),
     (WorkerJob(tower_seed=5), {}, False, "tower_seed=1, this run has tower_seed=5"),
     (WorkerJob(order_seed=3), {}, False, "order_seed=0, this run has order_seed=3"),
     (WorkerJob(), {}, True, "train_data=1024 rows, sha256 "),
     (WorkerJob(), dict(steps=20), False, "is at step 30, past this run's 20 steps")],
    ids=["activation", "update_mode", "widths", "learning_rate", "batch", "sparse",
         "tower_seed", "order_seed", "data_content", "fewer_steps"],
)
def test_another_configuration_stops_with_one_line(tiny_data, ckpt_dir, job, fields,
                                                   change_data, expected):
    before = _snapshot(ckpt_dir)
    data = _flip_labels(tiny_data) if change_data else tiny_data
    with pytest.raises(CheckpointMismatchError) as raised:
        _trainer(data, ckpt_dir, job, **fields).train()
    message = str(raised.value)
    assert expected in message and f"{ckpt_dir}/ckpt-30" in message
    assert "\n" not in message and isinstance(raised.value, ValueError)
    assert _snapshot(ckpt_dir) == before  # nothing written, nothing forgotten


@pytest.mark.parametrize(
    "fields, start, trained",
    [(dict(steps=40), 30, 10), (dict(epochs=3), 30, 0), (dict(eval_examples=32), 30, 0),
     (dict(jit_compile=True), 30, 0), (dict(checkpoint_every=5, log_every=1), 30, 0)],
    ids=["more_steps", "epochs", "eval_examples", "jit_compile", "trainer_options"],
)
def test_resumable_changes_resume(tiny_data, ckpt_dir, fields, start, trained):
    result = _trainer(tiny_data, ckpt_dir, **fields).train()
    assert (result.start_step, len(result.losses)) == (start, trained)


def test_same_fingerprint_but_other_variables_is_refused_in_one_line(tiny_data, ckpt_dir):
    """What another tf_smelu's model code would write: the fingerprint matches, the weights do not."""
    text = _trainer(tiny_data, ckpt_dir).checkpoint.fingerprint.numpy().decode()
    _rewrite(tiny_data, ckpt_dir, 30, text, hidden_units=(8,))
    with pytest.raises(CheckpointMismatchError, match="does not fit this run's model") as raised:
        _trainer(tiny_data, ckpt_dir).train()
    assert "\n" not in str(raised.value)


# --------------------------------------------------------------------------
# Damaged directories.
# --------------------------------------------------------------------------


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))


def _write_state(directory, *names):
    lines = [f'model_checkpoint_path: "{names[-1]}"', *(
        f'all_model_checkpoint_paths: "{name}"' for name in names)]
    (directory / "checkpoint").write_text("\n".join(lines) + "\n")


DAMAGES = {
    # name: (damage(data, directory), step resumed, words of the warning)
    "truncated_data": (lambda data, d: _truncate(_data_file(d, 30)), 20,
                       "ckpt-30 cannot be read (IndexError"),
    "flipped_byte": (lambda data, d: _flip_byte(_data_file(d, 30)), 20,
                     "ckpt-30 cannot be read (OpError: TensorBundle"),
    "garbage_index": (lambda data, d: (d / "ckpt-30.index").write_bytes(b"garbage"), 20,
                      "ckpt-30 cannot be read (OpError"),
    "deleted_index": (lambda data, d: (d / "ckpt-30.index").unlink(), 20,
                      "its state file lists ckpt-30, whose files are missing"),
    "deleted_data": (lambda data, d: os.remove(_data_file(d, 30)), 20, "No such file"),
    "garbled_fingerprint": (lambda data, d: _rewrite(data, d, 30, "not json"), 20,
                            "ckpt-30 cannot be read (ValueError: garbled fingerprint"),
    "two_damaged": (lambda data, d: (_truncate(_data_file(d, 30)), _flip_byte(_data_file(d, 20))),
                    10, "; ckpt-20 cannot be read"),
    "garbage_state": (lambda data, d: (d / "checkpoint").write_text("garbage {"), 30,
                      "its state file 'checkpoint' is unreadable"),
    "empty_state": (lambda data, d: (d / "checkpoint").write_text(""), 30, "is unreadable"),
    "deleted_state": (lambda data, d: (d / "checkpoint").unlink(), 30,
                      "it has no state file 'checkpoint'"),
    "state_names_missing": (lambda data, d: _write_state(d, "ckpt-20", "ckpt-30", "ckpt-40"), 30,
                            "its state file lists ckpt-40, whose files are missing"),
}


@pytest.fixture(scope="module")
def fingerprint(tiny_data, tmp_path_factory):
    """The fingerprint of a run of `TINY` (that of `written`)."""
    return _trainer(tiny_data, tmp_path_factory.mktemp("unused")).fingerprint


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damage_is_passed_over_in_one_warning_without_writing(
        tiny_data, ckpt_dir, fingerprint, damage):
    damage_fn, step, words = DAMAGES[damage]
    damage_fn(tiny_data, ckpt_dir)
    before = _snapshot(ckpt_dir)
    warnings = []
    found = CheckpointDirectory(str(ckpt_dir), 3, writer=True).find_resumable(
        fingerprint, 30, warnings.append)
    assert (found.prefix, found.step) == (str(ckpt_dir / f"ckpt-{step}"), step)
    assert len(warnings) == 1 and words in warnings[0], warnings
    # Names the damage and the checkpoint resumed instead.
    assert warnings[0].endswith(f"Resuming from ckpt-{step}, the newest intact checkpoint")
    assert _snapshot(ckpt_dir) == before  # the state file is left for the next save


@pytest.mark.parametrize("damage", ["truncated_data", "two_damaged",
                                    "garbage_state", "deleted_state"])
def test_resumed_run_forgets_no_intact_checkpoint(tiny_data, ckpt_dir, capsys, damage):
    damage_fn, step, words = DAMAGES[damage]
    damage_fn(tiny_data, ckpt_dir)
    result = _trainer(tiny_data, ckpt_dir, steps=40).train()
    assert (result.start_step, result.final_step, len(result.losses)) == (step, 40, 40 - step)
    stderr = capsys.readouterr().err
    assert "worker 0: warning: checkpoint directory" in stderr and words in stderr, stderr
    # The saves list every intact checkpoint found at start (none is
    # orphaned); keeping 3, the oldest is deleted.
    assert _listed(ckpt_dir) == ["ckpt-20", "ckpt-30", "ckpt-40"]
    assert not glob.glob(str(ckpt_dir / "ckpt-10.*"))
    again = _trainer(tiny_data, ckpt_dir, steps=40).train()
    assert again.start_step == 40 and capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "damage, message",
    [(lambda data, d: [_truncate(_data_file(d, s)) for s in (10, 20, 30)],
      "no intact checkpoint in"),
     (lambda data, d: [os.remove(p) for p in glob.glob(str(d / "ckpt-*"))],
      "whose files are missing"),
     (lambda data, d: _rewrite(data, d, 30, None), "has no configuration fingerprint")],
    ids=["all_damaged", "state_file_only", "no_fingerprint"],
)
def test_unusable_directory_stops_instead_of_starting_over(tiny_data, ckpt_dir, damage, message):
    damage(tiny_data, ckpt_dir)
    before = _snapshot(ckpt_dir)
    with pytest.raises(CheckpointError, match=message) as raised:
        _trainer(tiny_data, ckpt_dir).train()
    assert "\n" not in str(raised.value)
    assert _snapshot(ckpt_dir) == before


def test_empty_directory_starts_at_step_zero_and_says_so(tiny_data, tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    result = _trainer(tiny_data, tmp_path / "ckpt", steps=10).train()
    assert result.start_step == 0
    assert "no checkpoint in" in capsys.readouterr().out
    assert _listed(tmp_path / "ckpt") == ["ckpt-10"]


@pytest.fixture
def unwritable_dir(tmp_path):
    """An existing directory this process cannot create files in (root ignores modes)."""
    if os.geteuid() != 0:
        directory = tmp_path / "read_only"
        directory.mkdir()
        directory.chmod(0o500)
        yield str(directory)
        directory.chmod(0o700)
        return
    try:
        open("/sys/.tf_smelu_probe", "w").close()
    except OSError:
        yield "/sys"
    else:
        os.remove("/sys/.tf_smelu_probe")
        pytest.skip("no directory that root cannot write to")


@pytest.mark.parametrize(
    "path, message",
    [("a_file", "must be a directory; .*a_file is a file"),
     ("a_file/ckpt", "cannot write checkpoints to .*a_file/ckpt")],
)
def test_a_path_that_is_no_directory_fails_before_training(tiny_data, tmp_path, path, message):
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(CheckpointError, match=message) as raised:
        _trainer(tiny_data, tmp_path / path)
    assert "\n" not in str(raised.value)


def test_an_unwritable_directory_fails_before_training(tiny_data, unwritable_dir):
    with pytest.raises(CheckpointError, match="cannot write checkpoints to"):
        _trainer(tiny_data, unwritable_dir)


# --------------------------------------------------------------------------
# The worker program.
# --------------------------------------------------------------------------


def _run_worker(config, job, options):
    return subprocess.run(
        [sys.executable, "-m", "tf_smelu.training.distributed",
         *worker_args(config, job, options)],
        capture_output=True, text=True, timeout=240, cwd=REPO, check=False,
        env={**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
             "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.mark.slow
def test_worker_program_refuses_another_activation_in_one_line(ckpt_dir, tmp_path):
    options = dataclasses.replace(OPTIONS, checkpoint_dir=str(ckpt_dir))
    output = str(tmp_path / "w.npz")
    completed = _run_worker(TINY, WorkerJob(activation="smelu:0.3", output=output), options)
    assert completed.returncode == 1, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in completed.stderr
    assert "activation=relu, this run has activation=smelu:0.3" in errors[0]
    assert not os.path.exists(output)

    # The same flags as the checkpoint's (through the same worker program) resume.
    _truncate(_data_file(ckpt_dir, 30))
    completed = _run_worker(TINY, WorkerJob(output=output), options)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Resuming from ckpt-20, the newest intact checkpoint" in completed.stderr
    assert "steps 20->30" in completed.stdout
