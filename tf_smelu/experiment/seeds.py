"""Sources of irreproducibility, the seeds they vary, and op determinism.

Sources (`SOURCES`), each independent:
  init              every initial weight differs (embedding and tower seeds)
  embedding_init    only the embedding tables' initial weights differ
  tower_init        only the dense layers' initial weights differ
  order             the data order differs
  stale             asynchronous-style stale gradients with a different
                    random delay schedule per replica
  op_nondeterminism TensorFlow's op determinism is off (it is on otherwise,
                    so that with no source on, replicas are bit-identical)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator

import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from tf_smelu.common import derived_seed

SOURCES = ("init", "embedding_init", "tower_init", "order", "stale", "op_nondeterminism")
"""Every source of irreproducibility the main job can vary (see the module docstring)."""

IN_PROCESS_ONLY_SOURCES = ("stale", "op_nondeterminism")
"""Sources the multi-worker jobs do not have (they use update_mode=stale)."""


def parse_sources(text: str) -> tuple[str, ...]:
    """`"tower_init+order"` -> `("order", "tower_init")`; `"none"` -> `()`.

    Args:
        text: Source names joined with `+` (`SOURCES`); `"none"` or empty
            for none.

    Returns:
        The sorted names without duplicates.

    Raises:
        ValueError: if a name is not in `SOURCES`.
    """
    if text.strip() in ("", "none"):
        return ()
    names = tuple(sorted({part.strip() for part in text.split("+")}))
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"Unknown source(s) {unknown} in {text!r}; expected {SOURCES}.")
    return names


@dataclasses.dataclass(frozen=True)
class ReplicaSeeds:
    """One replica's seeds (see `replica_seeds`).

    Attributes:
        embedding_seed: Initial weights of the embedding tables.
        tower_seed: Initial weights of the dense layers (and, in a
            `ReplicaStudy`, every seeded randomness of the model).
        order_seed: The data order; `None`: the data's own order.
        schedule_seed: The stale-gradient delay schedule.
    """

    embedding_seed: int
    tower_seed: int
    order_seed: int | None
    schedule_seed: int


def replica_seeds(sources: Iterable[str], replicas: int, base_seed: int) -> list[ReplicaSeeds]:
    """Seeds per replica: a source that is on gives each replica its own seed.

    Replica r's seed of a kind is `tf_smelu.common.derived_seed(base_seed,
    kind, r)` (kind 1 embeddings, 2 towers, 3 order, 4 schedule) if its source
    varies, else `derived_seed(base_seed, kind, 0)`.

    Seeds of sources that are off are the same for every replica, so those
    replicas differ in nothing else.

    Args:
        sources: The sources that vary (names of `SOURCES`; `init` varies
            embeddings and towers).
        replicas: Number of replicas R.
        base_seed: The experiment's seed.

    Returns:
        R `ReplicaSeeds`, replica r's at index r.
    """
    sources = set(sources)

    def seed(kind: int, varies: bool, replica: int) -> int:
        return derived_seed(base_seed, kind, replica if varies else 0)

    return [
        ReplicaSeeds(
            embedding_seed=seed(1, bool(sources & {"init", "embedding_init"}), r),
            tower_seed=seed(2, bool(sources & {"init", "tower_init"}), r),
            # None: the data's own order, identical for all replicas.
            order_seed=seed(3, True, r) if "order" in sources else None,
            schedule_seed=seed(4, "stale" in sources, r),
        )
        for r in range(replicas)
    ]


@contextlib.contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """Turns TensorFlow's op determinism on or off, restoring it afterwards.

    The setting is process-wide; only TF's private config module can read it
    or switch it off again (`tests/test_experiment_harness.py` guards that API).

    Args:
        enabled: Whether ops must be deterministic inside the block.
    """
    previous = tf_config.is_op_determinism_enabled()
    _set_op_determinism(enabled)
    try:
        yield
    finally:
        _set_op_determinism(previous)


def _set_op_determinism(enabled: bool) -> None:
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
