"""Energy loss in liquid argon: dE/dx, range tables, recombination and charge.

Bethe-Bloch (heavy particles) and Rohrlich-Carlson (electrons) stopping powers with the
density effect, cached CSDA range tables, the modified Box recombination model and
Moyal (Landau-like) fluctuations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from argonic.detector.physics.constants import (
    BOX_ALPHA,
    BOX_BETA,
    E_FIELD,
    I_AR,
    K_BB,
    K_HARD,
    K_SOFT,
    ME,
    MMU,
    MP,
    MPI,
    STERNHEIMER,
    W_ION,
    X0,
)

# --- energy loss --------------------------------------------------------------------------


def _density_effect(bg: np.ndarray) -> np.ndarray:
    x0, x1, c, a, k = STERNHEIMER
    x = np.log10(np.maximum(bg, 1e-6))
    d = 2 * math.log(10) * x - c
    return np.where(x >= x1, d, np.where(x >= x0, d + a * np.clip(x1 - x, 0, None) ** k, 0.0))


def bethe_dedx(t: np.ndarray, mass: float, tcut: float | None = None) -> np.ndarray:
    """Mean (or, with tcut, restricted) collision dE/dx in MeV/cm of a heavy charged particle."""
    t = np.maximum(np.asarray(t, float), 1e-3 * mass)
    g = 1 + t / mass
    b2 = 1 - 1 / g**2
    bg2 = b2 * g * g
    tmax = 2 * ME * bg2 / (1 + 2 * g * ME / mass + (ME / mass) ** 2)
    delta = _density_effect(np.sqrt(bg2))
    if tcut is None:
        br = 0.5 * np.log(2 * ME * bg2 * tmax / I_AR**2) - b2 - delta / 2
    else:
        tup = np.minimum(tcut, tmax)
        br = 0.5 * np.log(2 * ME * bg2 * tup / I_AR**2) - b2 / 2 * (1 + tup / tmax) - delta / 2
    return K_BB / b2 * np.maximum(br, 0.5)


def electron_dedx(t: np.ndarray) -> np.ndarray:
    """Collision dE/dx (MeV/cm) of an electron (Rohrlich-Carlson with density effect)."""
    tau = np.maximum(np.asarray(t, float), 0.005) / ME
    b2 = 1 - 1 / (1 + tau) ** 2
    f = 1 - b2 + (tau**2 / 8 - (2 * tau + 1) * math.log(2)) / (1 + tau) ** 2
    delta = _density_effect(np.sqrt(tau * (tau + 2)))
    br = np.log(tau**2 * (tau + 2) / (2 * (I_AR / ME) ** 2)) + f - delta
    return K_BB / 2 / b2 * np.maximum(br, 1.0)


@dataclass(frozen=True)
class RangeTable:
    """CSDA range R(T) and its inverse, from a dE/dx function on a log grid."""

    t: np.ndarray
    r: np.ndarray

    @classmethod
    def build(cls, dedx, t_min: float, t_max: float, n: int = 600) -> RangeTable:
        t = np.geomspace(t_min, t_max, n)
        inv = 1 / dedx(t)
        steps = np.cumsum(np.diff(t) * 0.5 * (inv[1:] + inv[:-1]))
        r = t_min * inv[0] + np.concatenate([[0.0], steps])
        return cls(np.concatenate([[0.0], t]), np.concatenate([[0.0], r]))

    def range(self, t: np.ndarray | float) -> np.ndarray:
        return np.interp(t, self.t, self.r)

    def energy(self, r: np.ndarray | float) -> np.ndarray:
        return np.interp(r, self.r, self.t)


_TABLES: dict[str, RangeTable] = {}


def range_table(particle: str) -> RangeTable:
    """Range table of 'e', 'mu', 'pi' or 'p' (cached)."""
    if particle not in _TABLES:
        if particle == "e":  # collision loss plus the soft photons radiated on the way
            _TABLES[particle] = RangeTable.build(
                lambda t: electron_dedx(t) + soft_brems_dedx(t), 1e-3, 1e5
            )
        else:
            mass = {"mu": MMU, "pi": MPI, "p": MP}[particle]
            _TABLES[particle] = RangeTable.build(lambda t: bethe_dedx(t, mass), 1e-3, 1e6)
    return _TABLES[particle]


def soft_brems_dedx(t: np.ndarray) -> np.ndarray:
    """Energy (MeV/cm) an electron radiates as soft photons between K_SOFT and K_HARD."""
    return 4 / 3 * np.clip(np.asarray(t, float) - K_SOFT, 0, K_HARD - K_SOFT) / X0


def recombination(dedx: np.ndarray) -> np.ndarray:
    """Modified Box model survival fraction R(dE/dx) at 500 V/cm (0.70 for a MIP)."""
    xi = BOX_BETA * np.maximum(dedx, 0.1) / (1.383 * E_FIELD)
    return np.log(BOX_ALPHA + xi) / xi


def charge_ke(de: np.ndarray, ds: np.ndarray | float) -> np.ndarray:
    """Ionisation charge (ke-) escaping recombination for energy de (MeV) over length ds (cm)."""
    dedx = de / np.maximum(ds, 0.05)
    return de * recombination(dedx) / W_ION * 1e-3


def moyal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Standard Moyal variates (a Landau approximation): mean 1.270, mode 0."""
    z = rng.standard_normal(n)
    return -np.log(np.maximum(z * z, 1e-30))
