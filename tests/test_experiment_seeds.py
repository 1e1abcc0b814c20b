"""Sources of irreproducibility and the seeds they vary."""

import pytest

from tf_smelu import experiment


def test_replica_seeds_vary_only_what_is_switched_on():
    def distinct(rows, field):
        return len({getattr(r, field) for r in rows})

    off = experiment.replica_seeds((), 4, 0)
    assert all(distinct(off, f) == 1 for f in ("embedding_seed", "tower_seed", "schedule_seed"))
    assert {r.order_seed for r in off} == {None}
    tower = experiment.replica_seeds(("tower_init",), 4, 0)
    assert distinct(tower, "tower_seed") == 4 and distinct(tower, "embedding_seed") == 1
    both = experiment.replica_seeds(("init",), 4, 0)
    assert distinct(both, "tower_seed") == 4 and distinct(both, "embedding_seed") == 4
    order = experiment.replica_seeds(("order",), 4, 0)
    assert distinct(order, "order_seed") == 4 and distinct(order, "tower_seed") == 1
    # Replica 0 of any setting equals the shared seeds (comparable baselines).
    assert tower[0].embedding_seed == off[0].embedding_seed


def test_parse_sources():
    assert experiment.parse_sources("tower_init+order") == ("order", "tower_init")
    assert experiment.parse_sources("none") == ()
    with pytest.raises(ValueError, match="Unknown source"):
        experiment.parse_sources("tower+order")
