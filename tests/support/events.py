"""Hand-made hits for tests that need many hits without simulating an event."""

from __future__ import annotations

import numpy as np

from argonic.detector.event import Hits


def random_hits(
    rng: np.random.Generator, n: int, tpcs: int = 1, wires: int = 200, ticks: float = 1500.0
) -> Hits:
    """``n`` hits on ``tpcs`` TPCs and the 3 planes at random wires and ticks, with random
    shapes, labels, Michel flags and Michel electron ids."""
    michel = rng.random(n) < 0.1
    return Hits(
        tpc=rng.integers(0, tpcs, n),
        plane=rng.integers(0, 3, n),
        wire=rng.integers(0, wires, n),
        peak_tick=rng.uniform(0, ticks, n),
        sigma=rng.uniform(1, 5, n),
        amplitude=rng.uniform(0, 30, n),
        integral=rng.uniform(0, 300, n),
        label=rng.integers(0, 3, n),
        michel=michel,
        michel_id=np.where(michel, rng.integers(1, 40, n), 0),
    )
