"""The processes a job starts, the output directory it owns, the machine it needs.

Three rules, one function each, for every tf_smelu command line:

* `start_process`: every child runs in its own session (process group), so
  that stopping it reaches everything it started, and on Linux the kernel
  kills it when the thread that started it dies (`PR_SET_PDEATHSIG`), also
  when that parent is killed with SIGKILL and never runs its cleanup.
* `directory_lock`: one job per output directory. A second job on the same
  directory stops with one line naming the running one (pid, host, start
  time, command). The lock is an `flock` on `<dir>/.tf_smelu.lock`, which the
  kernel releases when its holder dies however it dies, so a killed job's
  lock is recognised as stale and taken over.
* `check_resources`: the workers and replicas a job asks for, against this
  machine's cores and available memory (container limits included), before
  anything starts; refused with the estimate in the message.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence

from tf_smelu.common import UserError

LOCK_FILE = ".tf_smelu.lock"
"""Name of the lock file in a locked directory."""

_PR_SET_PDEATHSIG = 1
_MB = 2**20


def _find_prctl() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, before any fork: the child between fork and exec only calls it.
_PRCTL = _find_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: die when the parent does."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def start_process(command: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """`subprocess.Popen(command, ...)` under the one process rule of tf_smelu.

    The child leads its own session (process group): `stop_process_group`
    reaches everything it starts, and Ctrl-C in a terminal reaches only the
    parent, which stops its children itself. On Linux the child is also
    killed (SIGKILL, kept across `exec`) when the thread that started it
    ends, so call this from a thread that outlives the child (the main
    thread does).

    Args:
        command: Program and arguments.
        **popen_kwargs: More `subprocess.Popen` arguments (not
            `start_new_session` or `preexec_fn`, which this function sets).

    Returns:
        The started process.
    """
    parent = os.getpid()
    return subprocess.Popen(list(command), start_new_session=True,
                            preexec_fn=lambda: _die_with_parent(parent), **popen_kwargs)


def signal_process_group(process: subprocess.Popen, sig: int) -> None:
    """Sends `sig` to the process group of a `start_process` child.

    Does nothing once the child was reaped (its group id may then belong to
    someone else) or when the whole group already exited.
    """
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


# ---------------------------------------------------------------------------
# One job per output directory.
# ---------------------------------------------------------------------------


class DirectoryInUseError(UserError):
    """Another running job holds the directory's lock."""


def _holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S UTC"),
            "command": shlex.join([os.path.basename(sys.executable), *sys.argv])}


def describe_holder(record: dict) -> str:
    """`pid 12 on host h, started <time>: <command>` of a lock file's record."""
    if not record:  # locked, its record not yet written
        return "a job that is just starting"
    command = str(record.get("command", "?")).replace("\n", " ")
    if len(command) > 200:
        command = command[:197] + "..."
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, started "
            f"{record.get('started', '?')}: {command}")


def _read_record(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {"command": "(unreadable lock record)"}
    return record if isinstance(record, dict) else {"command": "(unreadable lock record)"}


@contextlib.contextmanager
def directory_lock(directory: str, flag: str = "output_dir",
                   log: Callable[[str], None] = print) -> Iterator[None]:
    """Holds `directory`'s lock for the block; creates the directory.

    Args:
        directory: The directory one job at a time may write.
        flag: The flag that named it, for the message.
        log: Where a note about a stale lock taken over goes.

    Raises:
        DirectoryInUseError: Another running job holds the lock (one line
            naming it).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _try_lock(fd, directory, flag, log):
            stale = _read_record(fd)  # a holder that died without releasing it
            if stale is not None:
                log(f"Note: took over the lock {path} of a job that ended without releasing "
                    f"it ({describe_holder(stale)}).")
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder_record()).encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released cleanly: nothing stale left behind
    finally:
        os.close(fd)  # releases the flock


def _try_lock(fd: int, directory: str, flag: str, log: Callable[[str], None]) -> bool:
    """Locks `fd`: True; False on a file system without locks (said in a warning)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_record(fd) or {}
        raise DirectoryInUseError(
            f"--{flag}={directory} is in use by another job ({describe_holder(holder)}); "
            f"wait for it to end, or choose another --{flag}") from None
    except OSError as error:
        log(f"Warning: cannot lock --{flag}={directory} ({error.strerror}); make sure no "
            "other job writes there at the same time.")
        return False
    return True


# ---------------------------------------------------------------------------
# Resources, checked before anything starts.
# ---------------------------------------------------------------------------

WORKER_MB = 450
"""Memory of its own (peak USS, 440-448 MB measured) of one worker process
(TensorFlow, MWMS, a tiny model) on Linux x86-64 with TF 2.21
(`docs/guide/reliability.md`); the shared TensorFlow libraries come on top once. A lower
bound: bigger models and data need more."""

REPLICA_MB = 30
"""Memory one in-process replica adds with the smallest model (its weights,
optimizer slots, Keras objects and traced steps; 33 MB measured), alike: a
lower bound."""


@dataclasses.dataclass(frozen=True)
class Machine:
    """What this process may use: cores and available memory (None: unknown)."""

    cores: int
    available_mb: float | None


def _read_first(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _available_mb() -> float | None:
    """MemAvailable, or less when a cgroup (container) limit leaves less."""
    meminfo = _read_first("/proc/meminfo") or ""
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    available = None
    if "MemAvailable" in fields:
        available = int(fields["MemAvailable"].split()[0]) / 1024
    limit, usage = _read_first("/sys/fs/cgroup/memory.max"), _read_first(
        "/sys/fs/cgroup/memory.current")
    if limit and limit.isdigit() and usage and usage.isdigit():
        in_cgroup = (int(limit) - int(usage)) / _MB
        available = in_cgroup if available is None else min(available, in_cgroup)
    return available


def this_machine() -> Machine:
    """The cores this process may run on and the memory it may still use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return Machine(cores=cores, available_mb=_available_mb())


class InsufficientResourcesError(UserError):
    """A job needs more memory than this machine has available."""


def peak_rss(reset: bool = False) -> int:
    """This process's peak resident set size in bytes (Linux: `VmHWM` of /proc/self/status).

    Not `resource.getrusage(...).ru_maxrss`: Linux carries the parent's peak over
    fork and exec into it, so a child of a large process reads the parent's
    size. `reset=True` first restarts the peak from the current RSS (Linux >=
    4.0; where that is refused, the peak since the start is returned, an
    upper bound).
    """
    if reset:
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("VmHWM:"))


def check_resources(workers: int, replicas: int, replicas_flag: str = "replicas",
                    machine: Machine | None = None,
                    warn: Callable[[str], None] = print) -> None:
    """Refuses a job that cannot fit into memory; warns when workers outnumber cores.

    Multi-worker jobs (`workers > 1`) run one replica job at a time, so
    `workers` processes of `WORKER_MB` each run at once; in process, all
    `replicas` live in this process (`REPLICA_MB` each). Both estimates are
    lower bounds of what comes on top of this process as it is now (it has
    imported TensorFlow), so a refused job could not have run.

    Args:
        workers: Worker processes per replica job (1: in process).
        replicas: Most replicas one row may get.
        replicas_flag: The flag that set `replicas`, for the message.
        machine: Default: `this_machine()`.
        warn: Where the warning about more workers than cores goes.

    Raises:
        InsufficientResourcesError: One line with the estimate and what is
            available.
    """
    machine = machine or this_machine()
    if workers > 1:
        need = workers * WORKER_MB
        what = f"--workers={workers} needs at least {need / 1024:.1f} GB of memory " \
               f"({workers} x {WORKER_MB} MB per TensorFlow worker process)"
        remedy = "use fewer --workers"
    else:
        need = replicas * REPLICA_MB
        what = f"--{replicas_flag}={replicas} needs at least {need / 1024:.1f} GB of memory " \
               f"({replicas} x {REPLICA_MB} MB per in-process replica with the smallest model)"
        remedy = f"use fewer --{replicas_flag}"
    if machine.available_mb is not None and need > machine.available_mb:
        raise InsufficientResourcesError(
            f"{what}, but {machine.available_mb / 1024:.1f} GB is available; {remedy}")
    if workers > machine.cores:
        warn(f"Warning: --workers={workers} on {machine.cores} core(s): the workers share "
             f"them, so each job runs about {workers / machine.cores:.0f}x slower than on "
             "enough cores.")
