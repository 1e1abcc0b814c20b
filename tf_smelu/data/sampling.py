"""A seeded uniform random sample of a stream of rows, in bounded memory.

Loaders of files larger than memory (`tf_smelu.data.tfrecord`) keep at most
`max_train_examples` rows of a split without knowing its size in advance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tf_smelu.validation import require_positive_int


class ReservoirSample:
    """A seeded uniform random sample of at most `capacity` rows of a stream.

    Algorithm R (Vitter, 1985): the first `capacity` rows fill the sample;
    the row at 0-based position `t` then replaces a uniformly drawn slot with
    probability `capacity / (t + 1)`, so every row of the stream ends up in
    the sample with probability `capacity / rows seen`, in memory bounded by
    `capacity` rows.  Rows come in batches: dicts of equally long arrays
    (first dimension: rows) with the same keys each time.  `capacity=None`
    keeps every row.

    Args:
        capacity: Largest sample, `>= 1`; `None`: no cap.
        rng: The random generator (seeded for a reproducible sample).
    """

    def __init__(self, capacity: int | None, rng: np.random.Generator) -> None:
        if capacity is not None:
            require_positive_int("capacity", capacity)
        self.capacity = capacity
        self.seen = 0
        self._rng = rng
        self._parts: list[dict[str, np.ndarray]] = []
        self._sample: dict[str, np.ndarray] | None = None

    def add(self, rows: dict[str, np.ndarray]) -> None:
        """Offers a batch of rows to the sample."""
        count = len(next(iter(rows.values())))
        if self._sample is None:
            room = count if self.capacity is None else min(count, self.capacity - self.seen)
            self._parts.append({name: values[:room] for name, values in rows.items()})
            self.seen += room
            if self.capacity is None or self.seen < self.capacity:
                return
            self._sample = concatenate_rows(self._parts)
            self._parts = []
            rows = {name: values[room:] for name, values in rows.items()}
            count -= room
        positions = self.seen + np.arange(count)
        slots = self._rng.integers(0, positions + 1)
        chosen = np.flatnonzero(slots < self.capacity)
        # Two rows of one batch may draw the same slot: the later one wins,
        # as in the one-row-at-a-time algorithm.
        _, last_from_end = np.unique(slots[chosen][::-1], return_index=True)
        chosen = chosen[len(chosen) - 1 - last_from_end]
        for name, values in self._sample.items():
            values[slots[chosen]] = rows[name][chosen]
        self.seen += count

    def rows(self) -> dict[str, np.ndarray] | None:
        """The sample (in no particular order); `None` if no row was added."""
        if self._sample is not None:
            return self._sample
        return concatenate_rows(self._parts) if self._parts else None


def concatenate_rows(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch of rows from several (dicts with the same keys)."""
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
