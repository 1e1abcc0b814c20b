"""Checkpoints that never mislead: what a run must match, and damage handled.

A checkpoint of `tf_smelu.training.trainer.DistributedTrainer` is only worth
resuming if it continues *this* run. Each one therefore records a
**fingerprint** (`run_fingerprint`): a JSON object of everything that must be
equal to resume it, stored as a string variable inside the checkpoint, so it
is written, checksummed and deleted together with the weights:

* every `TrainingConfig` field (the kind of data, sizes, seed, model,
  widths, batch, learning rate, update mode, sparse gradients, ...), except
  `RESUMABLE_FIELDS` (`steps` and `epochs` may grow: the schedules and the
  data stream do not depend on them; `eval_examples` only chooses the
  held-out rows; `jit_compile` only changes float rounding; `data_dir` and
  the file path of `dataset` say where the data is read from, not what it
  is) and except the parameters of update modes other than the run's
  (`max_delay` for `stale`; `local_sgd_period`, `local_sgd_jitter` for
  `local_sgd`; `schedule_seed` for both);
* the number of workers and of replicas in sync (each worker reads its own
  shard, so they decide which rows make up every step);
* what the caller adds, e.g. the worker program: the activation, the
  embedding, tower and order seeds, and `train_data`, a SHA-256 of the
  training rows as loaded (`examples_digest`; 0.1 s for 500k rows): the
  data's identity, so a moved file still resumes and an edited one, or a
  changed loader, does not.

A checkpoint whose fingerprint differs stops the run with one
`CheckpointMismatchError` line naming every differing field. A checkpoint
without one (written by tf_smelu before fingerprints) is refused too: it
cannot be checked, which is exactly how a ReLU checkpoint used to be resumed
as SmeLU without a word.

Which checkpoint is resumed (`CheckpointDirectory.find_resumable`): the
newest *intact* checkpoint the `checkpoint` state file lists, else (state
file missing or unreadable, or none of its checkpoints intact) the newest
intact `ckpt-<step>` files in the directory. Intact means that its index
and every tensor read back with matching checksums and that its fingerprint
parses. Every damaged or missing checkpoint passed over is named in a
warning together with the one resumed; when there is a trace of an earlier
run (a state file or checkpoint files) but no intact checkpoint, the run
stops (`CheckpointError`) rather than start again at step 0. Damaged files
are left in place for inspection (a later save of the same step replaces
them). The state file is only rewritten after a new checkpoint was written
completely, and then lists the intact checkpoints found at start plus the new
one, so no intact checkpoint is forgotten; the oldest beyond
`max_to_keep` are then deleted.

Every worker of a multi-worker job reads the same (shared) directory and
applies this deterministic rule, so all of them resume the same checkpoint
or stop with the same error; the trainer then checks with an all-gather that
they restored the same step. Only the chief writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf

from tf_smelu.common import MISSING, UserError, field_differences
from tf_smelu.data.features import CTRExamples
from tf_smelu.training.config import TrainingConfig, as_flag_dict

FINGERPRINT_FORMAT = 1
"""Version of the fingerprint's JSON layout."""

FINGERPRINT_NAME = "fingerprint"
"""Name of the fingerprint variable in the `tf.train.Checkpoint`."""

RESUMABLE_FIELDS = ("steps", "epochs", "eval_examples", "jit_compile", "data_dir")
"""`TrainingConfig` fields that a resumed run may change (`dataset` is
compared by its kind only: where the data is, is not what it is)."""

MODE_FIELDS = {
    "max_delay": ("stale",),
    "local_sgd_period": ("local_sgd",),
    "local_sgd_jitter": ("local_sgd",),
    "schedule_seed": ("stale", "local_sgd"),
}
"""Update-mode parameters, and the modes whose trajectory they change."""

STATE_FILE = "checkpoint"
"""TensorFlow's checkpoint state file (read by `tf.train.latest_checkpoint`)."""

_FINGERPRINT_KEY = f"{FINGERPRINT_NAME}/.ATTRIBUTES/VARIABLE_VALUE"
_CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)$")
# What reading a damaged checkpoint raises: TF's errors (checksum, missing
# or short files) and, for a truncated data file, IndexError.
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, RuntimeError, OSError)


class CheckpointError(UserError, ValueError):
    """A checkpoint directory that cannot be resumed from, or not written to."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint to resume was written by a run with another configuration."""


# --------------------------------------------------------------------------
# Fingerprints.
# --------------------------------------------------------------------------


def run_fingerprint(
    config: TrainingConfig, num_workers: int, num_replicas: int, **identity: object
) -> dict[str, object]:
    """What a checkpoint of a run must match to be resumed (see the module docstring).

    Args:
        config: The run's training configuration.
        num_workers: Worker processes of the run.
        num_replicas: Replicas in sync over all workers.
        **identity: More fields that must match (JSON values), e.g. the
            activation, seeds and `train_data=examples_digest(rows)`.

    Returns:
        Field name -> JSON value, in the order messages name them.
    """
    fields = as_flag_dict(config, exclude=(*RESUMABLE_FIELDS, "dataset"))
    fields = {"dataset_kind": config.dataset.kind, **fields}
    for name, modes in MODE_FIELDS.items():
        if config.update_mode not in modes:
            del fields[name]
    return {**fields, "workers": num_workers, "replicas": num_replicas, **identity}


def examples_digest(examples: CTRExamples) -> str:
    """`"<rows> rows, sha256 <16 hex digits>"` of the features and labels of `examples`.

    Names, dtypes and shapes are hashed with the values, so equal digests
    mean the same training rows in the same order.
    """
    digest = hashlib.sha256()
    arrays = [*sorted(examples.features.items()), ("<labels>", examples.labels)]
    for name, array in arrays:
        # Object arrays (strings) would hash pointers: hash their text.
        array = np.ascontiguousarray(array.astype(str) if array.dtype.hasobject else array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.data)
    return f"{len(examples)} rows, sha256 {digest.hexdigest()[:16]}"


def encode_fingerprint(fingerprint: Mapping[str, object]) -> str:
    """The JSON text stored in a checkpoint."""
    return json.dumps({"format": FINGERPRINT_FORMAT, "fields": dict(fingerprint)},
                      sort_keys=True)


def decode_fingerprint(text: str | bytes) -> dict[str, object]:
    """The fields of `encode_fingerprint`'s text.

    Raises:
        ValueError: The text is not a fingerprint of this format.
    """
    try:
        content = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"garbled fingerprint ({error})") from None
    if not (isinstance(content, dict) and isinstance(content.get("fields"), dict)):
        raise ValueError("garbled fingerprint (no fields)")
    if content.get("format") != FINGERPRINT_FORMAT:
        raise ValueError(
            f"fingerprint format {content.get('format')!r}, this tf_smelu reads "
            f"{FINGERPRINT_FORMAT} (written by another version?)")
    return content["fields"]


def _flag_text(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return "unset" if value is None else str(value)


def fingerprint_differences(
    written: Mapping[str, object], current: Mapping[str, object]
) -> list[str]:
    """`name=written, this run has name=current` for each field that differs.

    Fields in the current fingerprint come first, in its order; a field on
    one side only is named as missing on the other.
    """
    def text(name, value):
        return f"no {name}" if value is MISSING else f"{name}={_flag_text(value)}"

    return [f"{text(name, old)}, this run has {text(name, new)}"
            for name, old, new in field_differences(written, current)]


# --------------------------------------------------------------------------
# The directory.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FoundCheckpoint:
    """The checkpoint a run resumes from.

    Attributes:
        prefix: Its path prefix (`<directory>/ckpt-<step>`).
        step: The step in its name (the trainer's step counter at saving).
    """

    prefix: str
    step: int


def _step_of(prefix: str) -> int | None:
    match = _CHECKPOINT_NAME.match(os.path.basename(prefix))
    return int(match.group(1)) if match else None


def _first_line(error: BaseException) -> str:
    """`"<type>: <first line of the message>"`: TF's messages run over many lines."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def read_checkpoint(prefix: str) -> tuple[dict[str, object] | None, str | None]:
    """Reads every tensor of a checkpoint (checksums checked) and its fingerprint.

    Returns:
        `(fingerprint, None)` for an intact checkpoint (`fingerprint` is
        `None` if it has none), `(None, problem)` for a damaged one.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
        if not reader.has_tensor(_FINGERPRINT_KEY):
            return None, None
        return decode_fingerprint(reader.get_tensor(_FINGERPRINT_KEY)), None
    except _READ_ERRORS as error:
        return None, _first_line(error)


class CheckpointDirectory:
    """The checkpoints of one run in one directory (see the module docstring).

    Args:
        directory: The checkpoint directory, shared by all workers.
        max_to_keep: Checkpoints kept; older ones are deleted after a save.
        writer: Whether this process writes (the chief). A writer creates
            the directory and checks at once that it can write there, rather
            than after the first `checkpoint_every` steps.

    Raises:
        CheckpointError: `directory` is a file, or a writer cannot create or
            write to it.
    """

    def __init__(self, directory: str, max_to_keep: int, writer: bool):
        self.directory = os.fspath(directory)
        self.max_to_keep = max_to_keep
        self.writer = writer
        self._kept: list[str] = []  # intact checkpoints, oldest first
        if tf.io.gfile.exists(self.directory) and not tf.io.gfile.isdir(self.directory):
            raise CheckpointError(
                f"`checkpoint_dir` must be a directory; {self.directory} is a file. "
                f"Received: checkpoint_dir={self.directory!r}")
        if writer:
            probe = os.path.join(self.directory, f".write_probe_{uuid.uuid4().hex}")
            try:
                tf.io.gfile.makedirs(self.directory)
                with tf.io.gfile.GFile(probe, "w") as f:
                    f.write("")
                tf.io.gfile.remove(probe)
            except _READ_ERRORS as error:
                raise CheckpointError(
                    f"cannot write checkpoints to {self.directory} ({_first_line(error)}). "
                    f"Received: checkpoint_dir={self.directory!r}") from None

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE_FILE)

    def _listed(self, problems: list[str]) -> tuple[list[str], bool]:
        """The prefixes the state file lists (oldest first), and whether it exists.

        Appends what is wrong with the state file to `problems`.
        """
        if not tf.io.gfile.exists(self.state_path):
            return [], False
        try:
            state = tf.train.get_checkpoint_state(self.directory)
            problem = "not a checkpoint state file"  # TF returns None on a parse error
        except _READ_ERRORS as error:
            state, problem = None, _first_line(error)
        if state is None:
            problems.append(f"its state file {STATE_FILE!r} is unreadable ({problem})")
            return [], True
        listed = [*state.all_model_checkpoint_paths]
        latest = state.model_checkpoint_path
        listed = [p for p in listed if p != latest] + [latest]
        foreign = [os.path.basename(p) for p in listed if _step_of(p) is None]
        if foreign:
            problems.append(f"its state file lists {', '.join(foreign)}, not named "
                            "ckpt-<step> (ignored)")
        return [p for p in listed if _step_of(p) is not None], True

    def find_resumable(
        self,
        fingerprint: Mapping[str, object],
        max_step: int,
        warn: Callable[[str], None],
    ) -> FoundCheckpoint | None:
        """The checkpoint to resume from, checked against `fingerprint`.

        Reads only: the state file is rewritten by the next `save`.

        Args:
            fingerprint: This run's `run_fingerprint`.
            max_step: This run's last step; a checkpoint beyond it is refused.
            warn: Called with one line naming every problem passed over and
                the checkpoint resumed instead, if there were problems.

        Returns:
            The newest intact checkpoint (the state file's choice first), or
            `None` when the directory holds no trace of an earlier run.

        Raises:
            CheckpointError: There are traces of an earlier run but no
                intact checkpoint, or the newest intact one has no
                fingerprint.
            CheckpointMismatchError: The newest intact checkpoint was
                written with another configuration, or past `max_step`.
        """
        if not tf.io.gfile.isdir(self.directory):
            return None
        problems: list[str] = []
        listed, has_state = self._listed(problems)
        on_disk = sorted(
            (p[: -len(".index")] for p in tf.io.gfile.glob(
                os.path.join(self.directory, "ckpt-*.index"))
             if _step_of(p[: -len(".index")]) is not None),
            key=_step_of)
        existing = {os.path.basename(p) for p in on_disk}
        if on_disk and not has_state:
            problems.append(f"it has no state file {STATE_FILE!r}")
        missing = [os.path.basename(p) for p in listed if os.path.basename(p) not in existing]
        if missing:
            problems.append(f"its state file lists {', '.join(missing)}, whose files are missing")
        listed_names = {os.path.basename(p) for p in listed}
        candidates = [*(p for p in reversed(listed) if os.path.basename(p) in existing),
                      *(p for p in reversed(on_disk) if os.path.basename(p) not in listed_names)]
        for prefix in candidates:
            written, problem = read_checkpoint(prefix)
            if problem is None:
                break
            problems.append(f"{os.path.basename(prefix)} cannot be read ({problem})")
        else:
            if not (candidates or has_state):
                return None
            raise CheckpointError(
                f"no intact checkpoint in {self.directory}: {'; '.join(problems)}. Restore "
                "its files, or move the directory away to train from step 0")
        if problems:
            warn(f"checkpoint directory {self.directory}: {'; '.join(problems)}. Resuming from "
                 f"{os.path.basename(prefix)}, the newest intact checkpoint")
        self._check(prefix, written, fingerprint, max_step)
        step = _step_of(prefix)
        self._kept = [*(p for p in on_disk if _step_of(p) < step),
                      os.path.join(self.directory, os.path.basename(prefix))]
        return FoundCheckpoint(prefix, step)

    def _check(
        self,
        prefix: str,
        written: Mapping[str, object] | None,
        fingerprint: Mapping[str, object],
        max_step: int,
    ) -> None:
        if written is None:
            raise CheckpointError(
                f"checkpoint {prefix} has no configuration fingerprint (written by an "
                "older tf_smelu), so it cannot be checked against this run: resume it with "
                "the version that wrote it, or move the directory away to train from step 0")
        differences = fingerprint_differences(written, fingerprint)
        if differences:
            raise CheckpointMismatchError(
                f"checkpoint {prefix} was written with {'; '.join(differences)}. Use the "
                "flags it was written with, or another --checkpoint_dir")
        if _step_of(prefix) > max_step:
            raise CheckpointMismatchError(
                f"checkpoint {prefix} is at step {_step_of(prefix)}, past this run's "
                f"{max_step} steps. Raise --steps (or --epochs), or use another "
                "--checkpoint_dir")

    def restore(self, checkpoint: tf.train.Checkpoint, found: FoundCheckpoint) -> None:
        """Restores `found` (from `find_resumable`) into `checkpoint`.

        Raises:
            CheckpointMismatchError: Its variables do not match `checkpoint`'s
                although the fingerprints matched: another tf_smelu's model
                code wrote it.
        """
        try:
            checkpoint.restore(found.prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise CheckpointMismatchError(
                f"checkpoint {found.prefix} was written with this configuration but does not "
                f"fit this run's model (written by another tf_smelu version?): "
                f"{_first_line(error)[:300]}") from error

    def save(self, checkpoint: tf.train.Checkpoint, step: int) -> str:
        """Writes `ckpt-<step>`, then the state file, then deletes the oldest.

        `tf.train.Checkpoint.write` moves finished files into place, so the
        state file, rewritten only after it returns, never names a
        half-written checkpoint. Returns the new prefix.
        """
        if not self.writer:
            raise RuntimeError("Only the chief writes to the checkpoint directory.")
        prefix = checkpoint.write(os.path.join(self.directory, f"ckpt-{step}"))
        kept = [p for p in self._kept if _step_of(p) != step] + [prefix]
        kept, dropped = kept[-self.max_to_keep:], kept[: -self.max_to_keep]
        self._write_state(kept)
        self._kept = kept
        for old in dropped:
            for path in tf.io.gfile.glob(f"{old}.index") + tf.io.gfile.glob(f"{old}.data-*"):
                tf.io.gfile.remove(path)
        return prefix

    def _write_state(self, kept: Iterable[str]) -> None:
        # TF's text format of `CheckpointState`, with relative paths so that
        # the directory can move. Written aside and renamed into place (any
        # TF file system, unlike `tf_smelu.common.atomic_write`).
        names = [os.path.basename(p) for p in kept]
        text = "".join([f'model_checkpoint_path: "{names[-1]}"\n',
                        *(f'all_model_checkpoint_paths: "{name}"\n' for name in names)])
        temporary = f"{self.state_path}.tmp{uuid.uuid4().hex}"
        with tf.io.gfile.GFile(temporary, "w") as f:
            f.write(text)
        tf.io.gfile.rename(temporary, self.state_path, overwrite=True)
