"""Starts N TensorFlow worker processes on localhost and watches them.

`launch_workers` gives each worker its own `TF_CONFIG`
(`{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}`,
ports from `portpicker`, addresses on 127.0.0.1 only), streams every line a
worker prints with a `[worker i]` prefix, and fails fast:

* a worker that exits non-zero makes the launcher stop all the others and
  raise `WorkerFailedError`, naming the worker, its exit code and the last
  lines of its log. This matters because `MultiWorkerMirroredStrategy`
  workers block in collectives when a peer dies, so waiting for them would
  hang until some collective timeout, if any;
* past `timeout` seconds everything is killed and `WorkerTimeoutError` is
  raised;
* every worker is started by `tf_smelu.processes.start_process`: in its own
  session (process group), killed as a whole in a `finally` (also on Ctrl-C
  and SIGTERM), and on Linux killed by the kernel when the launcher dies,
  even by SIGKILL. Neither the workers nor anything they started outlive
  the launcher, whatever happens.

Command line (everything after `--` is the worker command, run once per
worker):

    python -m tf_smelu.training.launcher --num_workers=2 --timeout=600 -- \
        python -m tf_smelu.training.distributed --steps=100 --output=/tmp/w.npz
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TextIO
from collections.abc import Mapping, Sequence

import portpicker
from absl import app, flags

from tf_smelu.common import run_program
from tf_smelu.processes import signal_process_group, start_process

LOCALHOST = "127.0.0.1"
"""The address every worker listens on."""
LOG_TAIL_LINES = 30
"""Last output lines kept per worker, for error messages."""
TERMINATION_GRACE_SECONDS = 5.0
"""Seconds a worker gets between SIGTERM and SIGKILL."""
_POLL_SECONDS = 0.05


class LauncherError(RuntimeError):
    """A launch that did not end with every worker exiting 0.

    Args:
        message: What happened, for the error's text.
        exit_codes: See the attributes.
        pids: See the attributes.
        log_tails: See the attributes.

    Attributes:
        exit_codes: Per-worker exit code (negative: killed by that signal,
            e.g. by the launcher stopping the workers).
        pids: Per-worker process id.
        log_tails: Per-worker last lines of output.
    """

    def __init__(
        self,
        message: str,
        exit_codes: list[int | None],
        pids: list[int],
        log_tails: list[list[str]],
    ):
        super().__init__(message)
        self.exit_codes = exit_codes
        self.pids = pids
        self.log_tails = log_tails


class WorkerFailedError(LauncherError):
    """A worker exited with a non-zero code; the others were stopped.

    Args:
        worker_index: See the attributes.
        exit_code: See the attributes.
        **kwargs: `exit_codes`, `pids` and `log_tails` of `LauncherError`.

    Attributes:
        worker_index: The worker that failed first (its peers usually fail
            next, with collective errors).
        exit_code: Its exit code (negative: killed by that signal).
    """

    def __init__(self, worker_index: int, exit_code: int, **kwargs: list):
        tail = "\n".join(kwargs["log_tails"][worker_index]) or "(no output)"
        super().__init__(
            f"worker {worker_index} failed with exit code {exit_code}; stopped the "
            f"other workers. Last lines of worker {worker_index}:\n{tail}",
            **kwargs,
        )
        self.worker_index = worker_index
        self.exit_code = exit_code


class WorkerTimeoutError(LauncherError):
    """The workers did not all finish within the timeout; all were killed."""


def cluster_spec(num_workers: int) -> list[str]:
    """`num_workers` localhost `host:port` addresses on currently unused ports.

    Args:
        num_workers: Number of workers, `>= 1`.

    Returns:
        One `127.0.0.1:port` address per worker.

    Raises:
        ValueError: if `num_workers < 1`.
    """
    if num_workers < 1:
        raise ValueError(f"`num_workers` must be >= 1. Received: num_workers={num_workers}")
    return [f"{LOCALHOST}:{portpicker.pick_unused_port()}" for _ in range(num_workers)]


def tf_config(workers: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` JSON of worker `index` in a workers-only cluster.

    Args:
        workers: Every worker's `host:port`, in index order.
        index: This worker's index into `workers`.

    Returns:
        The JSON text to put in the worker's `TF_CONFIG` environment variable.
    """
    return json.dumps(
        {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}
    )


@dataclasses.dataclass
class _Worker:
    """A started worker; `exit_code`/`exited_at` are set by its exit watcher."""

    index: int
    process: subprocess.Popen
    tail: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES)
    )
    exit_code: int | None = None
    exited_at: float | None = None


def _stream_output(worker: _Worker, sink: TextIO | None, lock: threading.Lock) -> None:
    """Copies a worker's output to `sink` line by line, remembering the tail."""
    prefix = f"[worker {worker.index}] "
    for line in worker.process.stdout:
        line = line.rstrip("\n")
        worker.tail.append(line)
        if sink is not None:
            with lock:  # whole lines from concurrent workers, never interleaved
                sink.write(f"{prefix}{line}\n")
                sink.flush()


def _decode_wait_status(status: os.waitid_result) -> int:
    if status.si_code == os.CLD_EXITED:
        return status.si_status
    return -status.si_status  # killed by a signal, as Popen reports it


def _watch_exit(worker: _Worker, changed: threading.Event) -> None:
    """Records when and how the worker exits, WITHOUT reaping it.

    Timestamps let the launcher blame the worker that failed first (its
    peers then fail too, with collective errors). Not reaping keeps an
    exited worker a zombie, which keeps its pid, and so its process-group
    id, reserved: signalling the group later can never hit an unrelated
    process that was given the same id.
    """
    try:
        status = os.waitid(os.P_PID, worker.process.pid, os.WEXITED | os.WNOWAIT)
        exit_code = _decode_wait_status(status)
    except ChildProcessError:  # already reaped by `_stop_all`
        exit_code = worker.process.returncode
    # Time first: whoever sees an exit code also sees its time.
    worker.exited_at = time.monotonic()
    worker.exit_code = exit_code
    changed.set()


def _stop_all(workers: Sequence[_Worker], threads: Sequence[threading.Thread]) -> None:
    """Stops every worker's process group, reaps the workers, joins `threads`.

    SIGTERM first, SIGKILL after a grace period. Groups are signalled even
    when their leader already exited, in case it left children behind.
    Idempotent.
    """
    for worker in workers:
        signal_process_group(worker.process, signal.SIGTERM)
    deadline = time.monotonic() + TERMINATION_GRACE_SECONDS
    while time.monotonic() < deadline and any(w.exited_at is None for w in workers):
        time.sleep(_POLL_SECONDS)
    for worker in workers:
        signal_process_group(worker.process, signal.SIGKILL)
    for worker in workers:
        worker.process.wait()
    for thread in threads:
        thread.join(timeout=TERMINATION_GRACE_SECONDS)
    for worker in workers:
        if worker.process.stdout is not None:
            worker.process.stdout.close()


def launch_workers(
    command: Sequence[str],
    num_workers: int,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    output: TextIO | None = None,
    quiet: bool = False,
) -> list[int]:
    """Runs `command` as `num_workers` localhost workers of one TF cluster.

    Args:
        command: Program and arguments, identical for every worker; the
            worker learns its role from `TF_CONFIG`.
        num_workers: Number of worker processes, `>= 1`.
        timeout: Seconds before everything is killed.
        env: Base environment (default `os.environ`). `TF_CONFIG` is set per
            worker; `TF_CPP_MIN_LOG_LEVEL` defaults to 2 and
            `PYTHONUNBUFFERED` to 1 so that logs stream as they are written.
        cwd: Working directory of the workers.
        output: Where prefixed worker lines go (default: the current
            `sys.stdout`).
        quiet: Do not copy worker lines anywhere (the last ones are still
            kept for error messages).

    Returns:
        The exit codes, all 0.

    Raises:
        WorkerFailedError: A worker exited non-zero (the first one to do so
            is named).
        WorkerTimeoutError: `timeout` elapsed first.
        ValueError: `command` is empty, `timeout` is not `> 0` or
            `num_workers < 1`.
    """
    if not command:
        raise ValueError("`command` must not be empty.")
    if not timeout > 0:
        raise ValueError(f"`timeout` must be > 0. Received: timeout={timeout}")
    addresses = cluster_spec(num_workers)
    base_env = dict(os.environ if env is None else env)
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    base_env.setdefault("PYTHONUNBUFFERED", "1")
    sink = None if quiet else (output or sys.stdout)
    output_lock = threading.Lock()
    changed = threading.Event()
    workers: list[_Worker] = []
    threads: list[threading.Thread] = []

    def stop_and_describe() -> dict:
        _stop_all(workers, threads)  # joins the readers: complete log tails
        return dict(
            exit_codes=[w.process.returncode for w in workers],
            pids=[w.process.pid for w in workers],
            log_tails=[list(w.tail) for w in workers],
        )

    try:
        for index in range(num_workers):
            worker = _Worker(
                index,
                start_process(
                    command,
                    env={**base_env, "TF_CONFIG": tf_config(addresses, index)},
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                ),
            )
            workers.append(worker)
            for target, args in ((_stream_output, (worker, sink, output_lock)),
                                 (_watch_exit, (worker, changed))):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()
                threads.append(thread)

        deadline = time.monotonic() + timeout
        while True:
            changed.clear()  # before reading the state: no exit goes unseen
            failures = [w for w in workers if w.exit_code not in (None, 0)]
            if failures:
                first = min(failures, key=lambda w: w.exited_at)
                raise WorkerFailedError(first.index, first.exit_code, **stop_and_describe())
            if all(w.exit_code == 0 for w in workers):
                stop_and_describe()  # reaps, joins the log readers
                return [0] * num_workers
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                running = [w.index for w in workers if w.exit_code is None]
                raise WorkerTimeoutError(
                    f"workers {running} still running after {timeout:.0f} s; killed all workers.",
                    **stop_and_describe(),
                )
            changed.wait(timeout=remaining)
    finally:
        # Also covers Ctrl-C, SIGTERM and failures while starting workers.
        _stop_all(workers, threads)


def define_flags() -> None:
    """The launcher's own flags (defined when run as a program)."""
    flags.DEFINE_integer("num_workers", 2, "Worker processes to start.", lower_bound=1)
    flags.DEFINE_float("timeout", 3600.0, "Seconds before all workers are killed.",
                       lower_bound=0.0)


def main(argv: Sequence[str]) -> int:
    """Runs `argv[1:]` (the command after `--`) as `--num_workers` workers.

    Args:
        argv: The program's arguments; those after `--` are the worker command.

    Returns:
        The exit code: 0 when every worker exits 0; the first failing
        worker's code (1 if it was killed by a signal); 124 on timeout (as
        coreutils' `timeout`).

    Raises:
        app.UsageError: if no worker command is given.
    """
    command = list(argv[1:])
    if not command:
        raise app.UsageError("Give the worker command after `--`, e.g. "
                             "`-- python -m tf_smelu.training.distributed --steps=100`.")
    try:
        launch_workers(command, flags.FLAGS.num_workers, flags.FLAGS.timeout)
    except WorkerFailedError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code if error.exit_code > 0 else 1
    except WorkerTimeoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 124
    return 0


if __name__ == "__main__":
    define_flags()
    run_program(main)
