"""Energy deposits and the world particles live in, with path-stepping helpers.

``Deposits`` collects charge with truth labels; ``World`` holds the active box, the rng
and the collector; the helpers walk a multiple-scattered path in fixed steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from argonic.detector.physics.constants import STEP, X0, _unit

# --- deposits ------------------------------------------------------------------------------


@dataclass
class Deposits:
    """Energy deposits being collected: position (cm), time (us), charge (ke-), truth."""

    parts: list[tuple[np.ndarray, ...]] = field(default_factory=list)

    def add(
        self,
        pos: np.ndarray,
        q: np.ndarray,
        t: float | np.ndarray,
        cat: int,
        michel_id: int | np.ndarray = 0,
    ) -> None:
        """Append deposits; ``michel_id`` > 0 marks the own deposits of that Michel electron."""
        n = len(q)
        if n == 0:
            return
        self.parts.append(
            (
                np.asarray(pos, np.float64).reshape(n, 3),
                np.asarray(q, np.float32),
                np.broadcast_to(np.asarray(t, np.float64), (n,)).copy(),
                np.full(n, cat, np.uint8),
                np.broadcast_to(np.asarray(michel_id, np.int32), (n,)).copy(),
            )
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Concatenated columns: pos [N,3], q, t, cat, michel (bool), michel_id (int32, 0: none)."""
        if not self.parts:
            return {
                "pos": np.zeros((0, 3)),
                "q": np.zeros(0, np.float32),
                "t": np.zeros(0),
                "cat": np.zeros(0, np.uint8),
                "michel": np.zeros(0, bool),
                "michel_id": np.zeros(0, np.int32),
            }
        cols = list(zip(*self.parts, strict=True))
        michel_id = np.concatenate(cols[4])
        return {
            "pos": np.concatenate(cols[0]),
            "q": np.concatenate(cols[1]),
            "t": np.concatenate(cols[2]),
            "cat": np.concatenate(cols[3]),
            "michel": michel_id > 0,
            "michel_id": michel_id,
        }


@dataclass
class World:
    """Where particles live: the active box, the rng, the deposit collector."""

    lo: np.ndarray
    hi: np.ndarray
    rng: np.random.Generator
    dep: Deposits = field(default_factory=Deposits)
    n_michel: int = 0  # Michel electrons made so far (their ids are 1..n_michel)

    def new_michel_id(self) -> int:
        """A fresh Michel-electron id (1, 2, ...)."""
        self.n_michel += 1
        return self.n_michel

    def inside(self, p: np.ndarray) -> np.ndarray:
        return np.all((p >= self.lo) & (p < self.hi), axis=-1)


def _walk(
    world: World, start: np.ndarray, d0: np.ndarray, n: int, theta0: np.ndarray, ds: float = STEP
) -> tuple[np.ndarray, np.ndarray]:
    """Path of n steps with multiple-scattering angles theta0 [n]: (step midpoints, directions)."""
    kick = world.rng.standard_normal((n, 3)) * theta0[:, None]
    kick[0] = 0.0
    dirs = _unit(d0[None, :] + np.cumsum(kick, axis=0))
    ends = start + np.cumsum(dirs * ds, axis=0)
    mids = ends - 0.5 * ds * dirs
    return mids, dirs


def _highland(p: np.ndarray, beta: np.ndarray, ds: float = STEP) -> np.ndarray:
    r = ds / X0
    theta = 13.6 / np.maximum(p * beta, 1e-3) * math.sqrt(r) * (1 + 0.038 * math.log(r))
    return np.minimum(theta, 1.0)


def _truncate_inside(world: World, mids: np.ndarray) -> int:
    """Number of leading path points inside the active box."""
    out = ~world.inside(mids)
    return int(np.argmax(out)) if out.any() else len(mids)
