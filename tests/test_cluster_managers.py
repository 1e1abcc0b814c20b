"""TF_CONFIG from Kubernetes and Slurm environments, and the examples that use it.

The environments are faked: a dict per process. The `slow` tests run the
Slurm batch script (with a fake `srun` that starts two tasks on this machine)
and the Kubernetes manifest's container command (two pods' environments) as
real two-worker `MultiWorkerMirroredStrategy` clusters on localhost, bounded
by a timeout, every process group killed afterwards.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import time

import portpicker
import pytest
import tensorflow as tf
from absl import flags

from tf_smelu.training import cluster_managers, distributed
from tf_smelu.training.cluster_managers import (
    ClusterEnvironmentError,
    detect_cluster_manager,
    kubernetes_placement,
    resolve_placement,
    slurm_placement,
    tf_config_placement,
)

REPO = pathlib.Path(__file__).resolve().parent.parent
MANIFEST = REPO / "examples" / "kubernetes" / "multiworker-job.yaml"
BATCH_SCRIPT = REPO / "examples" / "slurm" / "multiworker.sbatch"
RUN_TIMEOUT = 240  # seconds per 2-worker run; 40-70 s on 2 busy cores, mostly TF imports
TINY_WORKER_FLAGS = [
    "--steps=6", "--train_examples=1024", "--hidden_units=16", "--embedding_dim=4",
    "--max_vocab_size=50", "--batch_size=32", "--eval_examples=64", "--checkpoint_every=3",
    "--log_every=0",
]
"""Appended to the examples' worker flags (the last value of a flag wins)."""

POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "smelu-train-1",
       "JOB_COMPLETION_INDEX": "1", "TF_SMELU_NUM_WORKERS": "3",
       "TF_SMELU_SERVICE": "smelu-workers", "POD_NAMESPACE": "ml"}
"""Pod 1 of a 3-pod Indexed Job."""

TASK = {"SLURM_JOB_ID": "77", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
        "SLURMD_NODENAME": "node03", "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NODELIST": "node[01-03],gpu7", "SLURM_STEP_TASKS_PER_NODE": "1(x4)"}
"""Task 2 of `srun --ntasks-per-node=1` on four nodes."""


def _workers(placement):
    return list(placement.cluster["worker"])


def _tf_config(placement):
    return json.loads(placement.tf_config)


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, workers",
    [({}, [f"smelu-train-{i}.smelu-workers.ml.svc.cluster.local:2222" for i in range(3)]),
     ({"POD_NAMESPACE": ""}, [f"smelu-train-{i}.smelu-workers:2222" for i in range(3)]),
     ({"TF_SMELU_CLUSTER_DOMAIN": "corp.internal"},
      [f"smelu-train-{i}.smelu-workers.ml.svc.corp.internal:2222" for i in range(3)]),
     ({"TF_SMELU_WORKER_ADDRESSES": "a:1,b:2,c:3"}, ["a:1", "b:2", "c:3"])],
    ids=["fqdn", "short_names", "cluster_domain", "override"],
)
def test_indexed_job_pod(changes, workers):
    placement = kubernetes_placement({**POD, **changes})
    assert _workers(placement) == workers and placement.task_index == 1
    assert _tf_config(placement) == {"cluster": {"worker": workers},
                                     "task": {"type": "worker", "index": 1}}


def test_statefulset_pod_index_from_hostname():
    pod = {**POD, "HOSTNAME": "trainer-2"}
    del pod["JOB_COMPLETION_INDEX"]
    placement = kubernetes_placement(pod, port=3000)
    assert placement.task_index == 2
    assert _workers(placement)[0] == "trainer-0.smelu-workers.ml.svc.cluster.local:3000"
    assert placement.describe() == (
        "kubernetes: worker 2 of 3 (trainer-2.smelu-workers.ml.svc.cluster.local:3000)")


@pytest.mark.parametrize(
    "changes, message",
    [({"TF_SMELU_NUM_WORKERS": None}, "TF_SMELU_NUM_WORKERS is not set"),
     ({"TF_SMELU_NUM_WORKERS": "three"}, "`TF_SMELU_NUM_WORKERS` must be an integer >= 1"),
     ({"TF_SMELU_NUM_WORKERS": "0"}, "Received: TF_SMELU_NUM_WORKERS='0'"),
     ({"TF_SMELU_NUM_WORKERS": "1"}, "Pod index 1 is out of range for TF_SMELU_NUM_WORKERS=1"),
     ({"TF_SMELU_SERVICE": None}, "TF_SMELU_SERVICE is not set"),
     ({"JOB_COMPLETION_INDEX": "2"}, "ends in -1 but JOB_COMPLETION_INDEX=2"),
     ({"JOB_COMPLETION_INDEX": "-1"}, "`JOB_COMPLETION_INDEX` must be an integer >= 0"),
     ({"JOB_COMPLETION_INDEX": None, "HOSTNAME": "trainer"}, "Cannot tell this pod's index"),
     ({"HOSTNAME": "trainer"}, "the other pods' names are unknown"),
     ({"TF_SMELU_WORKER_ADDRESSES": "a:1,b:2"}, "lists 2 addresses but TF_SMELU_NUM_WORKERS"),
     ({"TF_SMELU_WORKER_ADDRESSES": "a:1,b,c:3"}, "must be host:port. Received: 'b'"),
     ({"TF_SMELU_WORKER_ADDRESSES": "a:1,a:1,c:3"}, "names ['a:1'] more than once"),
     ({"TF_SMELU_WORKER_ADDRESSES": "a:1,b:2,c:70000"}, "must be a port in 1..65535")],
)
def test_incomplete_or_inconsistent_pod_environment(changes, message):
    pod = {k: v for k, v in {**POD, **changes}.items() if v is not None}
    with pytest.raises(ClusterEnvironmentError) as error:
        kubernetes_placement(pod)
    assert message in str(error.value) and "\n" not in str(error.value)


# --------------------------------------------------------------------------
# Slurm
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, workers, index",
    [(TASK, ["node01:2222", "node02:2222", "node03:2222", "gpu7:2222"], 2),
     # 2 tasks on each node: ports 2222 and 2223. Slurm's order, not string
     # order: SLURM_PROCID 0 and 1 run on n9.
     ({**TASK, "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURMD_NODENAME": "n10",
       "SLURM_STEP_NODELIST": "n[9-10]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"},
      ["n9:2222", "n9:2223", "n10:2222", "n10:2223"], 3),
     ({**TASK, "SLURM_STEP_NUM_TASKS": "3", "SLURM_PROCID": "2", "SLURM_LOCALID": "1",
       "SLURMD_NODENAME": "b", "SLURM_STEP_NODELIST": "a,b", "SLURM_STEP_TASKS_PER_NODE": "1,2"},
      ["a:2222", "b:2222", "b:2223"], 2),
     ({**TASK, "TF_SMELU_WORKER_ADDRESSES": "h1:5,h2:5,h3:5,h4:5"},
      ["h1:5", "h2:5", "h3:5", "h4:5"], 2)],
    ids=["one_per_node", "two_per_node", "uneven", "override"],
)
def test_srun_task(task, workers, index):
    placement = slurm_placement(task)
    assert (_workers(placement), placement.task_index) == (workers, index)
    assert _tf_config(placement)["task"] == {"type": "worker", "index": index}


def _tensorflow_slurm_resolver(monkeypatch, task, port, tasks_per_node):
    for name, value in task.items():
        monkeypatch.setenv(name, value)
    # GPU counts given: TensorFlow's resolver runs nvidia-smi otherwise.
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=port, gpus_per_node=tasks_per_node, gpus_per_task=1, auto_set_gpu=False)
    return resolver.cluster_spec().as_dict()["worker"], resolver.task_id


def test_agrees_with_tensorflow_resolver_where_host_names_sort_in_slurm_order(monkeypatch):
    task = {**TASK, "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURMD_NODENAME": "c02",
            "SLURM_STEP_NODELIST": "c[01-02]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    ours = slurm_placement(task, port=9000)
    assert (_workers(ours), ours.task_index) == _tensorflow_slurm_resolver(
        monkeypatch, task, 9000, tasks_per_node=2)
    # Where string order differs, TensorFlow gives task 0 (on n9) n10's address.
    task = {**TASK, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "SLURMD_NODENAME": "n9",
            "SLURM_STEP_NODELIST": "n[9-10]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    assert _workers(slurm_placement(task, port=9000))[0] == "n9:9000"
    assert _tensorflow_slurm_resolver(monkeypatch, task, 9000, 1)[0][0] == "n10:9000"


@pytest.mark.parametrize(
    "changes, message",
    [({"SLURM_STEP_NODELIST": None, "SLURM_STEP_NUM_TASKS": None},
      "SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST not set: run the worker command under srun"),
     ({"SLURM_PROCID": "4"}, "SLURM_PROCID=4 is out of range for SLURM_STEP_NUM_TASKS=4"),
     ({"SLURM_PROCID": "x"}, "`SLURM_PROCID` must be an integer >= 0. Received: SLURM_PROCID='x'"),
     ({"SLURM_STEP_TASKS_PER_NODE": "1(x3)"}, "names 4 nodes but SLURM_STEP_TASKS_PER_NODE"),
     ({"SLURM_STEP_TASKS_PER_NODE": "2,1(x3)"}, "adds up to 5 tasks but SLURM_STEP_NUM_TASKS=4"),
     ({"SLURM_STEP_TASKS_PER_NODE": "many"}, "`SLURM_STEP_TASKS_PER_NODE` must look like"),
     ({"SLURM_STEP_NODELIST": "rack[1-2]-n[1-2]"}, "Cannot expand SLURM_STEP_NODELIST"),
     # Cyclic distribution: task 2 runs on another node than block order says.
     ({"SLURMD_NODENAME": "gpu7"},
      "puts it on node03 as local task 0: run srun with --distribution=block"),
     ({"SLURM_LOCALID": "1"}, "runs on node03 as local task 1"),
     ({"TF_SMELU_WORKER_ADDRESSES": "a:1"}, "lists 1 addresses but SLURM_STEP_NUM_TASKS says 4")],
)
def test_incomplete_or_inconsistent_srun_environment(changes, message):
    task = {k: v for k, v in {**TASK, **changes}.items() if v is not None}
    with pytest.raises(ClusterEnvironmentError) as error:
        slurm_placement(task)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_slurm_ports_must_fit():
    task = {**TASK, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "SLURMD_NODENAME": "a",
            "SLURM_STEP_NODELIST": "a", "SLURM_STEP_TASKS_PER_NODE": "2"}
    assert _workers(slurm_placement(task, port=65534)) == ["a:65534", "a:65535"]
    with pytest.raises(ClusterEnvironmentError, match="port \\+ tasks per node - 1"):
        slurm_placement(task, port=65535)
    with pytest.raises(ClusterEnvironmentError, match="`port` must be a port"):
        slurm_placement(task, port=0)


# --------------------------------------------------------------------------
# An existing TF_CONFIG, detection, the command line
# --------------------------------------------------------------------------


def test_existing_tf_config_is_checked_and_kept_verbatim():
    text = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                       "task": {"type": "worker", "index": 1}, "environment": "cloud"})
    placement = tf_config_placement({"TF_CONFIG": text})
    assert placement.tf_config == text
    assert (placement.task_type, placement.task_index) == ("worker", 1)


@pytest.mark.parametrize(
    "text, message",
    [("", "TF_CONFIG is not set"),
     ("{cluster:", "TF_CONFIG is not valid JSON"),
     ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG must have a "cluster"'),
     ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', '"cluster"'),
     ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}',
      "must be host:port. Received: 'a'"),
     ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
      'TF_CONFIG "task" must name a type of its cluster'),
     ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "['worker']"),
     ('{"cluster": {"worker": ["a:1"]}}', "Received: task=None")],
)
def test_bad_tf_config(text, message):
    with pytest.raises(ClusterEnvironmentError) as error:
        tf_config_placement({"TF_CONFIG": text})
    assert message in str(error.value)


@pytest.mark.parametrize(
    "environ, manager",
    [(POD, "kubernetes"), (TASK, "slurm"),
     ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}'},
      "tf_config")],
)
def test_auto_detects_the_one_cluster_manager(environ, manager):
    assert detect_cluster_manager(environ) == manager
    assert resolve_placement("auto", environ).manager == manager


@pytest.mark.parametrize(
    "environ, message",
    [({}, "No cluster manager found: none of TF_CONFIG (tf_config), SLURM_JOB_ID (slurm)"),
     ({**POD, "TF_CONFIG": "{}"},
      "(tf_config, kubernetes): pass --cluster_manager=tf_config|kubernetes")],
)
def test_auto_refuses_to_guess(environ, message):
    with pytest.raises(ClusterEnvironmentError) as error:
        resolve_placement("auto", environ)
    assert message in str(error.value)


def test_reads_os_environ_by_default(monkeypatch):
    for name, value in TASK.items():
        monkeypatch.setenv(name, value)
    for name in ("TF_CONFIG", "KUBERNETES_SERVICE_HOST", "TF_SMELU_WORKER_ADDRESSES"):
        monkeypatch.delenv(name, raising=False)
    assert _workers(resolve_placement())[2] == "node03:2222"
    with pytest.raises(ValueError, match="`cluster_manager` must be one of"):
        resolve_placement("mpi")


def test_run_execs_the_command_with_tf_config(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cluster_managers.os, "execvpe",
                        lambda *args: calls.append(args) or sys.exit(0))
    with pytest.raises(SystemExit):
        cluster_managers.run(["python", "-m", "worker"], "slurm", environ=TASK)
    (program, argv, env), = calls
    assert (program, argv) == ("python", ["python", "-m", "worker"])
    assert env == {**TASK, "TF_CONFIG": slurm_placement(TASK).tf_config}
    assert capsys.readouterr().err == "cluster_managers: slurm: worker 2 of 4 (node03:2222)\n"


def test_run_without_command_prints_and_on_error_says_one_line(capsys):
    assert cluster_managers.run([], "kubernetes", environ=POD) == 0
    assert json.loads(capsys.readouterr().out)["task"] == {"type": "worker", "index": 1}
    assert cluster_managers.run(["true"], "slurm", environ=POD) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cluster_managers: SLURM_PROCID, ") and err.count("\n") == 1
    assert cluster_managers.run(["/nonexistent/program"], "kubernetes", environ=POD) == 127
    assert "cannot run '/nonexistent/program'" in capsys.readouterr().err


# --------------------------------------------------------------------------
# The examples: their flags, their consistency
# --------------------------------------------------------------------------


def _parse_helper_flags(args):
    flag_values = flags.FlagValues()
    cluster_managers.define_flags(flag_values)
    assert flag_values(["cluster_managers", *args]) == ["cluster_managers"]
    return flag_values


def _parse_worker_flags(args):
    """The worker's three dataclasses, or the error a worker would stop with."""
    flag_values = flags.FlagValues()
    distributed.define_flags(flag_values)
    assert flag_values(["distributed", *args]) == ["distributed"], args
    return distributed.parse_flags(flag_values)


def _split_command(argv):
    """`(helper flags, worker flags)` of `python -m <helper> F -- python -m <worker> W`."""
    separator = argv.index("--")
    helper, worker = argv[:separator], argv[separator + 1:]
    assert helper[1:3] == ["-m", "tf_smelu.training.cluster_managers"]
    assert worker[1:3] == ["-m", "tf_smelu.training.distributed"]
    return helper[3:], worker[3:]


@pytest.fixture(scope="module")
def manifest():
    import yaml  # a test dependency

    documents = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8"))}
    assert sorted(documents) == ["Job", "PersistentVolumeClaim", "Service"]
    return documents


def _container(manifest):
    (container,) = manifest["Job"]["spec"]["template"]["spec"]["containers"]
    return container


def test_kubernetes_manifest_is_one_consistent_cluster(manifest):
    claim, service, job = (manifest[k] for k in ("PersistentVolumeClaim", "Service", "Job"))
    pod = job["spec"]["template"]["spec"]
    container = _container(manifest)
    env = {e["name"]: e.get("value") for e in container["env"]}
    helper_args, worker_args = _split_command(container["command"] + container["args"])
    helper = _parse_helper_flags(helper_args)
    config, options, job_flags = _parse_worker_flags(worker_args)

    num_workers = int(env["TF_SMELU_NUM_WORKERS"])
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == num_workers
    assert config.batch_size % num_workers == 0
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert pod["subdomain"] == service["metadata"]["name"] == env["TF_SMELU_SERVICE"]
    assert helper.cluster_manager == "kubernetes"
    assert (helper.port == service["spec"]["ports"][0]["port"]
            == container["ports"][0]["containerPort"])
    assert pod["restartPolicy"] == "OnFailure"
    # Checkpoints and outputs on the volume every pod mounts.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (volume,) = pod["volumes"]
    (mount,) = container["volumeMounts"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mount["name"] == volume["name"]
    for path in (options.checkpoint_dir, job_flags.output, job_flags.predictions_out):
        assert path.startswith(mount["mountPath"] + "/")
    # What pod 0 would export.
    pod_env = {**{k: v for k, v in env.items() if v is not None}, "POD_NAMESPACE": "default",
               "HOSTNAME": f"{job['metadata']['name']}-0", "JOB_COMPLETION_INDEX": "0"}
    workers = _workers(kubernetes_placement(pod_env, helper.port))
    assert workers[-1] == (f"smelu-train-{num_workers - 1}.smelu-workers.default.svc."
                           "cluster.local:2222")


def _fake_srun(directory: pathlib.Path) -> pathlib.Path:
    """A `srun` that records its arguments and starts FAKE_SRUN_TASKS local tasks."""
    srun = directory / "srun"
    srun.write_text(f"""#!{sys.executable}
import json, os, subprocess, sys
args = sys.argv[1:]
options = []
while args[0].startswith("-"):
    options.append(args.pop(0))
tasks = int(os.environ.get("FAKE_SRUN_TASKS", "0"))
step = {{"SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_STEP_TASKS_PER_NODE": str(tasks), "SLURMD_NODENAME": "localhost"}}
processes = [subprocess.Popen(args, env={{**os.environ, **step, "SLURM_PROCID": str(rank),
                                         "SLURM_LOCALID": str(rank)}})
             for rank in range(tasks)]
with open(os.environ["FAKE_SRUN_RECORD"], "w") as f:
    json.dump({{"options": options, "command": args, "pids": [p.pid for p in processes]}}, f)
sys.exit(max([abs(p.wait()) for p in processes], default=0))
""")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return srun


def _batch_environment(tmp_path, **variables):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _fake_srun(bin_dir)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM", "TF_CONFIG", "KUBERNETES"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHON": sys.executable,
            "PYTHONPATH": str(REPO), "SLURM_JOB_ID": "4242", "RUN_DIR": str(tmp_path / "run"),
            "FAKE_SRUN_RECORD": str(tmp_path / "srun.json"), **variables}


def test_slurm_batch_script_is_valid_bash():
    completed = subprocess.run(["bash", "-n", str(BATCH_SCRIPT)], capture_output=True, text=True,
                               timeout=30, check=False)
    assert completed.returncode == 0, completed.stderr


def test_slurm_batch_script_runs_the_helper_under_srun(tmp_path):
    env = _batch_environment(tmp_path)
    subprocess.run(["bash", str(BATCH_SCRIPT), "--steps=5"], env=env, cwd=tmp_path, check=True,
                   timeout=60, capture_output=True)
    srun = json.loads((tmp_path / "srun.json").read_text(encoding="utf-8"))
    assert {"--kill-on-bad-exit=1", "--distribution=block"} <= set(srun["options"])
    helper_args, worker_args = _split_command(srun["command"])
    helper = _parse_helper_flags(helper_args)
    assert helper.cluster_manager == "slurm" and helper.port == 20000 + 4242 % 20000
    config, options, job = _parse_worker_flags(worker_args)
    assert config.steps == 5  # the script's arguments come last and win
    assert options.checkpoint_dir == f"{env['RUN_DIR']}/checkpoints"
    assert job.output == f"{env['RUN_DIR']}/weights.npz" and os.path.isdir(env["RUN_DIR"])


# --------------------------------------------------------------------------
# Two workers on localhost, started as Slurm and as Kubernetes would.
# --------------------------------------------------------------------------


def _run_to_completion(commands, log_dir: pathlib.Path) -> list[int]:
    """Runs `(argv, env)` commands at once, each in its own session; returns their pids.

    Fails the test when one exits non-zero (the others are then killed) or
    when `RUN_TIMEOUT` passes; every session still running is killed.
    """
    processes, logs = [], []
    try:
        for i, (argv, env) in enumerate(commands):
            logs.append(log_dir / f"process{i}.log")
            with open(logs[-1], "w") as log:
                processes.append(subprocess.Popen(
                    argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + RUN_TIMEOUT
        while (any(p.poll() is None for p in processes)
               and not any(p.poll() for p in processes) and time.monotonic() < deadline):
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    outputs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    assert [p.returncode for p in processes] == [0] * len(processes), outputs
    return [p.pid for p in processes]


def _two_ports_in_a_row() -> int:
    for _ in range(100):
        port = portpicker.pick_unused_port()
        if port < 65535 and portpicker.is_port_free(port + 1):
            return port
    pytest.fail("no two consecutive free ports")


def _assert_two_workers_trained(run_dir: pathlib.Path, steps: int = 6):
    output = str(run_dir / "weights.npz")
    assert os.path.exists(output)
    for index in range(2):
        with open(distributed.worker_output_path(output, index, ".json"), encoding="utf-8") as f:
            summary = json.load(f)
        assert summary["worker"] == {"index": index, "num_workers": 2}
        assert summary["final_step"] == steps
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith(f"ckpt-{steps}")


@pytest.mark.slow
def test_slurm_batch_script_trains_two_workers_on_localhost(tmp_path, assert_processes_gone):
    env = _batch_environment(tmp_path, FAKE_SRUN_TASKS="2", PORT=str(_two_ports_in_a_row()))
    (script_pid,) = _run_to_completion(
        [(["bash", str(BATCH_SCRIPT), *TINY_WORKER_FLAGS], env)], tmp_path)
    task_pids = json.loads((tmp_path / "srun.json").read_text(encoding="utf-8"))["pids"]
    assert_processes_gone([script_pid, *task_pids])
    _assert_two_workers_trained(tmp_path / "run")


@pytest.mark.slow
def test_kubernetes_container_command_trains_two_workers_on_localhost(
        manifest, tmp_path, assert_processes_gone):
    container = _container(manifest)
    run_dir = tmp_path / "run"
    argv = [sys.executable if arg == "python" else arg
            for arg in container["command"] + container["args"]]
    argv += [*TINY_WORKER_FLAGS, f"--checkpoint_dir={run_dir}/checkpoints",
             f"--output={run_dir}/weights.npz", f"--predictions_out={run_dir}/p.npy",
             f"--labels_out={run_dir}/y.npy"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "TF_CONFIG"))}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    addresses = ",".join(f"127.0.0.1:{portpicker.pick_unused_port()}" for _ in range(2))
    env.update(PYTHONPATH=str(REPO), TF_SMELU_NUM_WORKERS="2", POD_NAMESPACE="default",
               TF_SMELU_WORKER_ADDRESSES=addresses)
    pods = [(argv, {**env, "HOSTNAME": f"smelu-train-{i}", "JOB_COMPLETION_INDEX": str(i)})
            for i in range(2)]
    assert_processes_gone(_run_to_completion(pods, tmp_path))
    _assert_two_workers_trained(run_dir)
    log = (tmp_path / "process1.log").read_text()
    assert f"cluster_managers: kubernetes: worker 1 of 2 ({addresses.split(',')[1]})" in log
