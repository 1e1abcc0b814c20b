"""tf_smelu.training.launcher: N localhost workers, fail fast, nothing left behind.

The workers here are plain Python one-liners (no TensorFlow), so a launch
takes well under a second; the 2-worker training runs are in
`test_distributed.py`. Every test that starts a process is marked `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tf_smelu.training.launcher import (
    WorkerFailedError,
    WorkerTimeoutError,
    cluster_spec,
    launch_workers,
    tf_config,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_worker(code: str) -> list[str]:
    prelude = (
        "import json, os, subprocess, sys, time; "
        "i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
    )
    return [sys.executable, "-c", prelude + code]


def test_launcher_rejects_bad_arguments_before_starting_anything():
    with pytest.raises(ValueError, match="command"):
        launch_workers([], 2, timeout=60)
    with pytest.raises(ValueError, match="timeout"):
        launch_workers(["true"], 2, timeout=0)
    with pytest.raises(ValueError, match="num_workers"):
        cluster_spec(0)
    config = json.loads(tf_config(["127.0.0.1:1", "127.0.0.1:2"], 1))
    assert config == {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                      "task": {"type": "worker", "index": 1}}


@pytest.mark.slow
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


@pytest.mark.slow
def test_launcher_fails_fast_and_kills_process_groups(tmp_path, assert_processes_gone):
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
    assert_processes_gone(error.pids + [int(pid_file.read_text())])


@pytest.mark.slow
def test_launcher_timeout_kills_everything(assert_processes_gone):
    with pytest.raises(WorkerTimeoutError) as failure:
        launch_workers(_python_worker("time.sleep(60)"), 2, timeout=1, quiet=True)
    assert "still running" in str(failure.value)
    assert_processes_gone(failure.value.pids)


@pytest.mark.slow
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
    assert "error: worker 1 failed with exit code 7" in completed.stderr


@pytest.mark.slow
def test_launcher_command_line_needs_a_command():
    completed = subprocess.run(
        [sys.executable, "-m", "tf_smelu.training.launcher", "--num_workers=2"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert completed.returncode != 0 and "worker command after `--`" in completed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_stopped_launcher_takes_its_workers_with_it(stop, tmp_path):
    import psutil

    code = "print('up', i, os.getpid(), flush=True); time.sleep(120)"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tf_smelu.training.launcher", "--num_workers=2", "--timeout=600",
         "--", *_python_worker(code)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pids = [int(launcher.stdout.readline().split()[-1]) for _ in range(2)]
        workers = [psutil.Process(pid) for pid in pids]
        launcher.send_signal(getattr(signal, stop))
        stderr = launcher.communicate(timeout=30)[1]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
            time.sleep(0.1)
        alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"workers {alive} outlived the launcher ({stop})"
    finally:
        launcher.kill()
    if stop == "SIGTERM":
        assert launcher.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
        assert stderr.strip().splitlines()[-1].startswith("error: terminated (SIGTERM)")
