"""The cluster a worker belongs to: start-up, strategy, place, collectives, data shards.

`meet_peers` runs before TensorFlow's runtime starts: every worker connects
to the chief (on the chief's own port, which TensorFlow binds only after),
says which worker it is and with which flags it was started. The chief
compares them and answers: go, or one line naming the differing flags,
which every worker prints before exiting, instead of a collective's shape
error half a minute into training. A worker whose peers do not come up says
which ones it waits for, and stops after a timeout (TensorFlow itself waits
silently and holds the GIL while it does, so nothing in the process could
report it later).

`create_strategy` picks `tf.distribute.MultiWorkerMirroredStrategy` exactly
when `TF_CONFIG` describes a cluster, so the same program runs alone or as
one worker of many. The collectives here are all-reduces and all-gathers run
under `strategy.run`, so they need nothing beyond what MWMS offers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable, Mapping

import tensorflow as tf

from tf_smelu.common import UserError, field_differences
from tf_smelu.data.features import CTRExamples
from tf_smelu.data.in_memory import batched_dataset

DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]
"""`dataset_fn(input_context, per_replica_batch_size)` -> this worker's
`(features, labels)` batches of `per_replica_batch_size` rows (repeated by the
trainer, so it may be finite)."""

@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """This process's place in the cluster (index 0 is the chief)."""

    index: int
    num_workers: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


STARTUP_REPORT_SECONDS = (10.0, 30.0)
"""When a waiting worker first says what it waits for, then how often."""


class ShardTooSmallError(UserError, ValueError):
    """A worker's share of the training rows is smaller than one batch."""


class ClusterStartupError(UserError):
    """The workers did not all start, or were started with different flags."""


@dataclasses.dataclass(frozen=True)
class ClusterPlace:
    """This process's place in the cluster that `TF_CONFIG` describes.

    Attributes:
        addresses: `host:port` of every worker, chief first (index order).
        index: This worker's index (0: the chief).
    """

    addresses: tuple[str, ...]
    index: int

    @classmethod
    def from_tf_config(cls, environ: Mapping[str, str] = os.environ) -> ClusterPlace | None:
        """The place `TF_CONFIG` gives; None for one process alone."""
        config = json.loads(environ.get("TF_CONFIG") or "{}")
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        if len(chiefs) + len(workers) < 2:
            return None
        offset = 0 if task.get("type") == "chief" else len(chiefs)
        return cls(tuple(chiefs + workers), offset + int(task.get("index", 0)))


def _send(connection: socket.socket, message: dict) -> None:
    """Sends one JSON line; a peer that went away is found out by its reader."""
    with contextlib.suppress(OSError):
        connection.sendall(json.dumps(message).encode("utf-8") + b"\n")


def _receive(connection: socket.socket, deadline: float) -> dict | None:
    """One JSON line, or None when the peer closed or went silent past `deadline`."""
    data = b""
    while not data.endswith(b"\n"):
        connection.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = connection.recv(65536)
        except (OSError, socket.timeout):
            return None
        if not chunk:
            return None
        data += chunk
    try:
        return json.loads(data)
    except ValueError:
        return None


class _Reporter:
    """Says what a worker waits for: first after a while, then now and then."""

    def __init__(self, timeout: float, log: Callable[[str], None]):
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.timeout = timeout
        self.log = log
        self.next_report = self.start + STARTUP_REPORT_SECONDS[0]

    def waiting(self, what: str) -> None:
        now = time.monotonic()
        if now >= self.next_report:
            self.log(f"waiting for {what} to start ({now - self.start:.0f} s of "
                     f"--startup_timeout={self.timeout:g})")
            self.next_report = now + STARTUP_REPORT_SECONDS[1]

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


def _flag_differences(chief: Mapping[str, object], peer: Mapping[str, object],
                      index: int) -> str:
    return "; ".join(f"--{name}: {old!r} on worker 0, {new!r} on worker {index}"
                     for name, old, new in field_differences(chief, peer))


def _describe_workers(indices: list[int]) -> str:
    return f"worker{'s' if len(indices) > 1 else ''} {', '.join(map(str, indices))}"


def _listen(place: ClusterPlace) -> socket.socket:
    """The chief's listening socket on its own port (IPv4 and IPv6 where possible)."""
    port = int(place.addresses[0].rsplit(":", 1)[1])
    dual = socket.has_dualstack_ipv6()
    try:
        # create_server sets SO_REUSEADDR: TensorFlow binds this port right after.
        return socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                                    backlog=len(place.addresses), dualstack_ipv6=dual)
    except OSError as error:
        raise ClusterStartupError(f"worker 0 (the chief) cannot listen on port {port} of its "
                                  f"address {place.addresses[0]}: {error.strerror}") from None


def _accept_peers(server: socket.socket, place: ClusterPlace, flags: Mapping[str, object],
                  reporter: _Reporter, peers: dict[int, socket.socket]) -> list[str]:
    """Adds every peer that says hello to `peers` until all are there; returns the errors."""
    errors = []
    server.settimeout(0.5)
    missing = list(range(1, len(place.addresses)))
    while missing and not reporter.expired():
        reporter.waiting(_describe_workers(missing))
        try:
            connection, _ = server.accept()
        except socket.timeout:
            continue
        hello = _receive(connection, time.monotonic() + 10.0) or {}
        index = hello.get("index")
        if index not in missing:
            if index in peers:
                errors.append(f"two processes started as worker {index} connected to the chief "
                              f"at {place.addresses[0]}")
            connection.close()  # anything else that knocked on the port is ignored
            continue
        peers[index] = connection
        missing.remove(index)
        differences = _flag_differences(flags, hello.get("flags", {}), index)
        if differences:
            errors.append(f"worker {index} was started with other flags than worker 0: "
                          f"{differences}")
    if missing:
        errors.append(f"{_describe_workers(missing)} did not start within --startup_timeout="
                      f"{reporter.timeout:g} s (the chief at {place.addresses[0]} waited; "
                      "started with the same TF_CONFIG cluster?)")
    return errors


def _chief_meets_peers(place: ClusterPlace, flags: Mapping[str, object], timeout: float,
                       log: Callable[[str], None]) -> None:
    """Accepts every peer's hello, compares its flags, answers everyone alike."""
    peers: dict[int, socket.socket] = {}
    try:
        with _listen(place) as server:
            errors = _accept_peers(server, place, flags, _Reporter(timeout, log), peers)
        answer = {"error": errors[0]} if errors else {"go": True}
        for connection in peers.values():
            _send(connection, answer)
        for connection in peers.values():  # peers close first: no TIME_WAIT on this port
            _receive(connection, time.monotonic() + 5.0)
    finally:
        for connection in peers.values():
            connection.close()
    if errors:
        raise ClusterStartupError(errors[0])


def _peer_meets_chief(place: ClusterPlace, flags: Mapping[str, object], timeout: float,
                      log: Callable[[str], None]) -> None:
    """Connects to the chief, says hello, waits for its answer."""
    host, port = place.addresses[0].rsplit(":", 1)
    reporter = _Reporter(timeout, log)
    while True:
        try:
            connection = socket.create_connection((host.strip("[]"), int(port)), timeout=2.0)
            break
        except OSError:
            if reporter.expired():
                raise ClusterStartupError(
                    f"worker {place.index}: the chief (worker 0 at {place.addresses[0]}) did "
                    f"not start within --startup_timeout={timeout:g} s") from None
            reporter.waiting(f"worker 0 (the chief, {place.addresses[0]})")
            time.sleep(0.5)
    with connection:
        _send(connection, {"index": place.index, "flags": dict(flags)})
        # The chief answers once every worker is there, at its own timeout.
        answer = _receive(connection, reporter.deadline + 30.0)
    if answer is None:
        raise ClusterStartupError(
            f"worker {place.index}: the chief (worker 0 at {place.addresses[0]}) ended or "
            "did not answer before training started")
    if "error" in answer:
        raise ClusterStartupError(answer["error"])


def meet_peers(place: ClusterPlace, flags: Mapping[str, object], timeout: float,
               log: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """Returns once every worker of `place`'s cluster started with the same `flags`.

    Call before `create_strategy`, from every worker with the flags it was
    started with (JSON values).

    Args:
        place: This worker's place (`ClusterPlace.from_tf_config()`).
        flags: Flag name -> value; every worker's must be equal.
        timeout: Seconds to wait for the others.
        log: Where "waiting for ..." lines go.

    Raises:
        ClusterStartupError: One line: the workers that did not start in
            time, or the flags that differ (every worker raises the same).
    """
    meet = _chief_meets_peers if place.index == 0 else _peer_meets_chief
    meet(place, flags, timeout, log)


def create_strategy() -> tf.distribute.Strategy:
    """MWMS when `TF_CONFIG` names a cluster, else the default strategy.

    Call before creating any other TF op: MWMS configures the runtime.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_info(strategy: tf.distribute.Strategy) -> WorkerInfo:
    """Index and count of workers; a chief task, if any, counts as worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return WorkerInfo(index=0, num_workers=1)
    num_chiefs = len(cluster.get("chief", []))
    num_workers = num_chiefs + len(cluster.get("worker", []))
    if resolver.task_type == "chief":
        return WorkerInfo(index=0, num_workers=num_workers)
    return WorkerInfo(index=num_chiefs + int(resolver.task_id), num_workers=num_workers)


def _first_local_result(strategy: tf.distribute.Strategy, values):
    return tf.nest.map_structure(
        lambda value: strategy.experimental_local_results(value)[0], values
    )


def broadcast_from_chief(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's `value` on every worker (others' arguments are ignored).

    An all-reduce sum to which only global replica 0 (on the chief)
    contributes: no extra communication primitive is needed.
    """

    @tf.function
    def broadcast():
        def contribute():
            context = tf.distribute.get_replica_context()
            is_first = tf.equal(context.replica_id_in_sync_group, 0)
            mine = tf.where(is_first, tf.constant(value, tf.int64), tf.constant(0, tf.int64))
            return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        return strategy.run(contribute)

    return int(_first_local_result(strategy, broadcast()))


def gather_from_workers(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """`value` of every replica, in global replica order (chief first)."""

    @tf.function
    def gather():
        def contribute():
            context = tf.distribute.get_replica_context()
            return context.all_gather(tf.constant([value], tf.int64), axis=0)

        return strategy.run(contribute)

    return [int(v) for v in _first_local_result(strategy, gather()).numpy()]


def in_memory_dataset_fn(examples: CTRExamples, order_seed: int | None = None) -> DatasetFn:
    """A `DatasetFn` over in-memory examples, sharded by input pipeline.

    Worker `i` of `n` reads rows `i, i + n, i + 2n, ...` (as
    `tf.data.Dataset.shard(n, i)` would), in an order permuted by
    `order_seed`, in full batches only (every replica steps the same number
    of times).
    """

    def dataset_fn(input_context: tf.distribute.InputContext, batch_size: int) -> tf.data.Dataset:
        shard = examples.take(
            slice(input_context.input_pipeline_id, None, input_context.num_input_pipelines)
        )
        if len(shard) < batch_size:
            raise ShardTooSmallError(
                f"worker {input_context.input_pipeline_id}'s shard of the training rows has "
                f"{len(shard)} rows, fewer than one batch of {batch_size} per worker: give more "
                "--train_examples or a smaller --batch_size")
        return batched_dataset(
            shard.features, shard.labels, batch_size, order_seed=order_seed, drop_remainder=True
        )

    return dataset_fn
