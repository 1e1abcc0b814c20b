"""`TF_CONFIG` from what Kubernetes or Slurm tells each process, then the worker.

`MultiWorkerMirroredStrategy` learns its cluster from `TF_CONFIG`, which
must list every worker's `host:port` in the same order on every worker and
give each its own index. A cluster manager starts the processes and tells
each one where it is; `resolve_placement` turns that into `TF_CONFIG`:

* **Kubernetes** (an Indexed Job or a StatefulSet behind a headless
  Service): the pod's index is `JOB_COMPLETION_INDEX` (Indexed Job) or the
  ordinal at the end of `HOSTNAME` (`<name>-<ordinal>`, both kinds); worker
  `i` is `<name>-<i>.<service>[.<namespace>.svc.<domain>]:<port>`. The
  manifest sets `TF_SMELU_NUM_WORKERS` (the Job's `completions`, the
  StatefulSet's `replicas`) and `TF_SMELU_SERVICE` (the headless Service,
  the pods' `subdomain`); with `POD_NAMESPACE` set (downward API) the names
  are fully qualified, in `TF_SMELU_CLUSTER_DOMAIN` (default
  `cluster.local`).
* **Slurm** (`srun`, one task per worker): task `SLURM_PROCID` of
  `SLURM_STEP_NUM_TASKS`; `SLURM_STEP_NODELIST` (a hostlist such as
  `node[01-03],gpu7`) and `SLURM_STEP_TASKS_PER_NODE` (`2(x3),1`) place
  the tasks on nodes in block order, and the `j`-th task on a node listens
  on `port + j`. Each task checks that it really runs where block order
  puts it (`SLURMD_NODENAME`, `SLURM_LOCALID`), so a cyclic or arbitrary
  task distribution is an error instead of a cluster whose workers
  disagree about who is who.
* **tf_config**: `TF_CONFIG` is already set; it is checked and kept.

`TF_SMELU_WORKER_ADDRESSES=host:port,host:port,...` replaces the computed
addresses (same count, in worker order) for hosts whose names do not resolve
as above, and for tests on one machine.

Why not `tf.distribute.cluster_resolver.SlurmClusterResolver`: on a node
without `nvidia-smi` it fails unless told GPU counts (and 0 GPUs is an
error), and it assigns ranks to hosts in string order, so on `node[9-10]`
the task with `SLURM_PROCID=0`, which runs on `node9`, is given `node10`'s
address. Its hostlist parsers are used here.

Every inconsistency is one `ClusterEnvironmentError` naming the variable: an
environment that says "multi-worker" never quietly becomes one worker.

Command line: everything after `--` is the worker command, run with this
process's `TF_CONFIG` in place of this process (`exec`, so signals from the
cluster manager reach the worker):

    srun python -m tf_smelu.training.cluster_managers --port=2222 -- \\
        python -m tf_smelu.training.distributed --steps=1000 --checkpoint_dir=/shared/ckpt

Without a command it prints the `TF_CONFIG` it would set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence

from absl import flags

from tf_smelu.common import run_program

from tf_smelu.training.launcher import tf_config as workers_tf_config

CLUSTER_MANAGERS = ("auto", "kubernetes", "slurm", "tf_config")
DEFAULT_PORT = 2222
NUM_WORKERS_ENV = "TF_SMELU_NUM_WORKERS"
SERVICE_ENV = "TF_SMELU_SERVICE"
NAMESPACE_ENV = "POD_NAMESPACE"
CLUSTER_DOMAIN_ENV = "TF_SMELU_CLUSTER_DOMAIN"
ADDRESSES_ENV = "TF_SMELU_WORKER_ADDRESSES"
SLURM_STEP_VARIABLES = (
    "SLURM_PROCID", "SLURM_LOCALID", "SLURMD_NODENAME", "SLURM_STEP_NUM_TASKS",
    "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE",
)
"""What `srun` sets for every task and `resolve_placement` needs under Slurm."""

# What tells each manager apart in `auto` mode: set in every process it starts.
_DETECTED_BY = {"tf_config": "TF_CONFIG", "slurm": "SLURM_JOB_ID",
                "kubernetes": "KUBERNETES_SERVICE_HOST"}
_MAX_PORT = 65535


class ClusterEnvironmentError(ValueError):
    """The cluster manager's environment is missing something or contradicts itself."""


@dataclasses.dataclass(frozen=True)
class Placement:
    """This process's place in the cluster, and the `TF_CONFIG` that says so.

    Attributes:
        manager: `"kubernetes"`, `"slurm"` or `"tf_config"`.
        cluster: Task type -> `host:port` addresses, in task order.
        task_type: This process's task type (`"worker"` unless `TF_CONFIG`
            said otherwise).
        task_index: Its index among the tasks of `task_type`.
        tf_config: The `TF_CONFIG` JSON to run the worker with.
    """

    manager: str
    cluster: Mapping[str, tuple[str, ...]]
    task_type: str
    task_index: int
    tf_config: str

    @classmethod
    def of_workers(cls, manager: str, workers: Sequence[str], index: int) -> Placement:
        """Worker `index` of a workers-only cluster (worker 0 is the chief)."""
        return cls(manager, {"worker": tuple(workers)}, "worker", index,
                   workers_tf_config(workers, index))

    def describe(self) -> str:
        """One line for the worker's log, e.g. `slurm: worker 1 of 4 (b:2222)`."""
        tasks = self.cluster[self.task_type]
        return (f"{self.manager}: {self.task_type} {self.task_index} of {len(tasks)} "
                f"({tasks[self.task_index]})")


def _require(environ: Mapping[str, str], name: str, hint: str) -> str:
    value = environ.get(name, "")
    if not value.strip():
        raise ClusterEnvironmentError(f"{name} is not set: {hint}.")
    return value.strip()


def _int_variable(environ: Mapping[str, str], name: str, minimum: int,
                  hint: str = "the cluster manager sets it") -> int:
    text = _require(environ, name, hint)
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise ClusterEnvironmentError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={text!r}")
    return int(text)


def _check_port(name: str, port: int) -> None:
    if not 0 < port <= _MAX_PORT:
        raise ClusterEnvironmentError(
            f"`{name}` must be a port in 1..{_MAX_PORT}. Received: {name}={port}")


def _check_addresses(name: str, addresses: Sequence[str]) -> None:
    """Every address is `host:port`, and no two are the same."""
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not re.fullmatch(r"\d+", port):
            raise ClusterEnvironmentError(
                f"Every address in `{name}` must be host:port. Received: {address!r} "
                f"in {name}={','.join(addresses)!r}")
        _check_port(f"port of {address}", int(port))
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise ClusterEnvironmentError(
            f"`{name}` names {repeated} more than once: every worker needs its own "
            f"host:port. Received: {name}={','.join(addresses)!r}")


def _address_override(environ: Mapping[str, str], num_workers: int,
                      counted_by: str) -> list[str] | None:
    """`TF_SMELU_WORKER_ADDRESSES` as a list, or None when unset."""
    text = environ.get(ADDRESSES_ENV, "").strip()
    if not text:
        return None
    addresses = [a.strip() for a in text.split(",")]
    if len(addresses) != num_workers:
        raise ClusterEnvironmentError(
            f"{ADDRESSES_ENV} lists {len(addresses)} addresses but {counted_by} says "
            f"{num_workers} workers. Received: {ADDRESSES_ENV}={text!r}")
    _check_addresses(ADDRESSES_ENV, addresses)
    return addresses


def kubernetes_placement(environ: Mapping[str, str], port: int = DEFAULT_PORT) -> Placement:
    """The place of this pod of an Indexed Job or a StatefulSet.

    Args:
        environ: The pod's environment (see the module docstring).
        port: The port every worker listens on (the container port).

    Returns:
        Worker `index` of `TF_SMELU_NUM_WORKERS`, peers named through the
        headless Service (or `TF_SMELU_WORKER_ADDRESSES`).

    Raises:
        ClusterEnvironmentError: The index, the worker count or the Service
            is missing, or they disagree.
    """
    _check_port("port", port)
    hostname = environ.get("HOSTNAME", "").strip()
    named = re.fullmatch(r"(.+)-(\d+)", hostname)
    if environ.get("JOB_COMPLETION_INDEX", "").strip():
        index = _int_variable(environ, "JOB_COMPLETION_INDEX", 0, "set by Indexed Jobs")
        if named and int(named[2]) != index:
            raise ClusterEnvironmentError(
                f"HOSTNAME={hostname!r} ends in -{named[2]} but JOB_COMPLETION_INDEX={index}: "
                "an Indexed Job's pod is named <job>-<index>.")
    elif named:
        index = int(named[2])
    else:
        raise ClusterEnvironmentError(
            f"Cannot tell this pod's index: JOB_COMPLETION_INDEX is not set (Indexed Job) and "
            f"HOSTNAME={hostname!r} does not end in -<ordinal> (StatefulSet pod).")
    num_workers = _int_variable(
        environ, NUM_WORKERS_ENV, 1,
        "set it in the manifest to the number of workers (the Job's completions, the "
        "StatefulSet's replicas)")
    if index >= num_workers:
        raise ClusterEnvironmentError(
            f"Pod index {index} is out of range for {NUM_WORKERS_ENV}={num_workers}: set "
            f"{NUM_WORKERS_ENV} to the Job's completions (the StatefulSet's replicas).")
    workers = _address_override(environ, num_workers, NUM_WORKERS_ENV)
    if workers is None:
        if not named:
            raise ClusterEnvironmentError(
                f"HOSTNAME={hostname!r} does not end in -<index>, so the other pods' names "
                f"are unknown: run as an Indexed Job or a StatefulSet, or set {ADDRESSES_ENV}.")
        service = _require(environ, SERVICE_ENV,
                           "set it to the headless Service that names the pods (their subdomain)")
        domain = service
        namespace = environ.get(NAMESPACE_ENV, "").strip()
        if namespace:
            cluster_domain = environ.get(CLUSTER_DOMAIN_ENV, "").strip() or "cluster.local"
            domain = f"{service}.{namespace}.svc.{cluster_domain}"
        workers = [f"{named[1]}-{i}.{domain}:{port}" for i in range(num_workers)]
    return Placement.of_workers("kubernetes", workers, index)


def _expand_slurm_lists(nodelist: str, tasks_per_node: str) -> tuple[list[str], list[int]]:
    # Imported here: the module path is TensorFlow's, not its public API.
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (
        expand_hostlist,
        expand_tasks_per_node,
    )

    try:
        hosts = expand_hostlist(nodelist)
    except ValueError as error:
        raise ClusterEnvironmentError(
            f"Cannot expand SLURM_STEP_NODELIST={nodelist!r} ({error}); set {ADDRESSES_ENV} "
            "to the workers' host:port list instead.") from None
    try:
        counts = expand_tasks_per_node(tasks_per_node)
    except ValueError:
        raise ClusterEnvironmentError(
            "`SLURM_STEP_TASKS_PER_NODE` must look like 2(x3),1. "
            f"Received: SLURM_STEP_TASKS_PER_NODE={tasks_per_node!r}") from None
    if len(hosts) != len(counts):
        raise ClusterEnvironmentError(
            f"SLURM_STEP_NODELIST={nodelist!r} names {len(hosts)} nodes but "
            f"SLURM_STEP_TASKS_PER_NODE={tasks_per_node!r} gives task counts for {len(counts)}.")
    return hosts, counts


def slurm_placement(environ: Mapping[str, str], port: int = DEFAULT_PORT) -> Placement:
    """The place of this `srun` task: worker `SLURM_PROCID`.

    Args:
        environ: The task's environment (see `SLURM_STEP_VARIABLES`).
        port: The port of the first task on each node; the `j`-th task on a
            node listens on `port + j`.

    Returns:
        Worker `SLURM_PROCID` of `SLURM_STEP_NUM_TASKS`, on the step's nodes
        in block order (or at `TF_SMELU_WORKER_ADDRESSES`).

    Raises:
        ClusterEnvironmentError: A step variable is missing (e.g. the command
            ran in the batch script rather than under `srun`), the variables
            disagree, or the task is not where block distribution puts it.
    """
    _check_port("port", port)
    missing = [name for name in SLURM_STEP_VARIABLES if not environ.get(name, "").strip()]
    if missing:
        raise ClusterEnvironmentError(
            f"{', '.join(missing)} not set: run the worker command under srun, one task per "
            "worker (not directly in the batch script or an salloc shell).")
    rank = _int_variable(environ, "SLURM_PROCID", 0)
    local_rank = _int_variable(environ, "SLURM_LOCALID", 0)
    num_tasks = _int_variable(environ, "SLURM_STEP_NUM_TASKS", 1)
    if rank >= num_tasks:
        raise ClusterEnvironmentError(
            f"SLURM_PROCID={rank} is out of range for SLURM_STEP_NUM_TASKS={num_tasks}.")
    workers = _address_override(environ, num_tasks, "SLURM_STEP_NUM_TASKS")
    if workers is not None:
        return Placement.of_workers("slurm", workers, rank)
    nodelist, tasks_per_node = (environ["SLURM_STEP_NODELIST"].strip(),
                                environ["SLURM_STEP_TASKS_PER_NODE"].strip())
    hosts, counts = _expand_slurm_lists(nodelist, tasks_per_node)
    if sum(counts) != num_tasks:
        raise ClusterEnvironmentError(
            f"SLURM_STEP_TASKS_PER_NODE={tasks_per_node!r} adds up to {sum(counts)} tasks but "
            f"SLURM_STEP_NUM_TASKS={num_tasks}.")
    _check_port("port + tasks per node - 1", port + max(counts) - 1)
    tasks = [(host, j) for host, count in zip(hosts, counts) for j in range(count)]
    node = environ["SLURMD_NODENAME"].strip()
    if tasks[rank] != (node, local_rank):
        raise ClusterEnvironmentError(
            f"Task SLURM_PROCID={rank} runs on {node} as local task {local_rank}, but block "
            f"distribution over SLURM_STEP_NODELIST={nodelist!r} puts it on {tasks[rank][0]} as "
            f"local task {tasks[rank][1]}: run srun with --distribution=block (or set "
            f"{ADDRESSES_ENV}).")
    return Placement.of_workers("slurm", [f"{h}:{port + j}" for h, j in tasks], rank)


def tf_config_placement(environ: Mapping[str, str]) -> Placement:
    """The place `TF_CONFIG` already gives, checked and kept as it is.

    Raises:
        ClusterEnvironmentError: `TF_CONFIG` is unset, not JSON, has no
            cluster, or names a task that is not in its cluster.
    """
    text = _require(environ, "TF_CONFIG", "set it, or pick --cluster_manager=kubernetes|slurm")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterEnvironmentError(f"TF_CONFIG is not valid JSON: {error}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(tasks, list) and tasks and all(isinstance(a, str) for a in tasks)
            for tasks in cluster.values()):
        raise ClusterEnvironmentError(
            'TF_CONFIG must have a "cluster" mapping task types to non-empty lists of '
            f'"host:port". Received: TF_CONFIG={text!r}')
    for task_type, tasks in cluster.items():
        _check_addresses(f"TF_CONFIG cluster.{task_type}", tasks)
    task = config.get("task")
    task_type = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if task_type not in cluster or not isinstance(index, int) or isinstance(index, bool) or not (
            0 <= index < len(cluster[task_type])):
        raise ClusterEnvironmentError(
            f'TF_CONFIG "task" must name a type of its cluster {sorted(cluster)} and an index '
            f"within it. Received: task={task!r}")
    return Placement("tf_config", {k: tuple(v) for k, v in cluster.items()}, task_type, index,
                     text)


def detect_cluster_manager(environ: Mapping[str, str]) -> str:
    """`"kubernetes"`, `"slurm"` or `"tf_config"`: the one whose variable is set.

    Raises:
        ClusterEnvironmentError: None of them, or more than one, is found.
    """
    found = [name for name, variable in _DETECTED_BY.items() if environ.get(variable, "").strip()]
    if len(found) == 1:
        return found[0]
    signs = ", ".join(f"{variable} ({name})" for name, variable in _DETECTED_BY.items())
    if not found:
        raise ClusterEnvironmentError(
            f"No cluster manager found: none of {signs} is set. Run under srun or in a "
            "Kubernetes pod, or pass --cluster_manager.")
    raise ClusterEnvironmentError(
        f"Found several cluster managers ({', '.join(found)}): pass "
        f"--cluster_manager={'|'.join(found)} to pick one.")


def resolve_placement(
    cluster_manager: str = "auto",
    environ: Mapping[str, str] | None = None,
    port: int = DEFAULT_PORT,
) -> Placement:
    """This process's place in its cluster, from its cluster manager's environment.

    Args:
        cluster_manager: One of `CLUSTER_MANAGERS`; `"auto"` picks the one
            whose variable is set (`detect_cluster_manager`).
        environ: The environment to read (default `os.environ`).
        port: The workers' port (Slurm: of each node's first task).

    Returns:
        The placement, with the `TF_CONFIG` to export.

    Raises:
        ClusterEnvironmentError: See the `*_placement` functions.
    """
    if cluster_manager not in CLUSTER_MANAGERS:
        raise ValueError(f"`cluster_manager` must be one of {CLUSTER_MANAGERS}. "
                         f"Received: cluster_manager={cluster_manager!r}")
    environ = os.environ if environ is None else environ
    if cluster_manager == "auto":
        cluster_manager = detect_cluster_manager(environ)
    if cluster_manager == "tf_config":
        return tf_config_placement(environ)
    resolve = kubernetes_placement if cluster_manager == "kubernetes" else slurm_placement
    return resolve(environ, port)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The helper's own flags (defined when run as a program)."""
    flags.DEFINE_enum("cluster_manager", "auto", CLUSTER_MANAGERS,
                      "Where the cluster comes from; auto: the one whose variables are set.",
                      flag_values=flag_values)
    flags.DEFINE_integer("port", DEFAULT_PORT,
                         "Port of every worker (Slurm: of each node's first task; the j-th "
                         "task on a node uses port + j).",
                         lower_bound=1, upper_bound=_MAX_PORT, flag_values=flag_values)


def run(
    command: Sequence[str],
    cluster_manager: str = "auto",
    port: int = DEFAULT_PORT,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Replaces this process by `command` run with this process's `TF_CONFIG`.

    Args:
        command: Program and arguments; empty: print the `TF_CONFIG` instead.
        cluster_manager: See `resolve_placement`.
        port: See `resolve_placement`.
        environ: The environment to read and to run `command` in (default
            `os.environ`).

    Returns:
        Only when nothing is exec'd: 0 after printing, 2 when the
        environment does not describe a cluster (one `error:` line on
        stderr), 127 when `command` cannot be run.
    """
    environ = os.environ if environ is None else environ
    try:
        placement = resolve_placement(cluster_manager, environ, port)
    except ClusterEnvironmentError as error:
        print(f"error: cluster_managers: {error}", file=sys.stderr)
        return 2
    if not command:
        print(placement.tf_config)
        return 0
    print(f"cluster_managers: {placement.describe()}", file=sys.stderr, flush=True)
    sys.stdout.flush()  # exec drops whatever is still buffered
    try:
        os.execvpe(command[0], list(command), {**environ, "TF_CONFIG": placement.tf_config})
    except OSError as error:
        print(f"error: cluster_managers: cannot run {command[0]!r}: {error.strerror}",
              file=sys.stderr)
    return 127


def main(argv: Sequence[str]) -> int:
    """Runs `argv[1:]` (the command after `--`) with this process's `TF_CONFIG`."""
    return run(argv[1:], flags.FLAGS.cluster_manager, flags.FLAGS.port)


if __name__ == "__main__":
    define_flags()
    run_program(main)
