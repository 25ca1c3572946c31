"""Heavy charged particles (muons, pions, protons): tracks and their delta rays.

Range-table energy loss with Moyal fluctuations, multiple scattering, and explicit
knock-on electrons above DELTA_TCUT handed to the electromagnetic code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from argonic.detector.event import TRACK
from argonic.detector.physics.constants import (
    DELTA_TCUT,
    E_SHORT,
    K_BB,
    ME,
    MMU,
    MP,
    MPI,
    STEP,
    _unit,
    box_exit_distance,
)
from argonic.detector.physics.deposits import World, _highland, _truncate_inside, _walk
from argonic.detector.physics.energy_loss import bethe_dedx, charge_ke, moyal, range_table
from argonic.detector.physics.showers import em_cascade, short_electrons

# --- heavy charged particles ---------------------------------------------------------------


@dataclass
class TrackEnd:
    pos: np.ndarray
    dir: np.ndarray
    t: float
    stopped: bool
    kinetic: float  # kinetic energy left at the end (0 if stopped)


def heavy_track(
    world: World,
    start: np.ndarray,
    d0: np.ndarray,
    kinetic: float,
    particle: str,
    time: float,
    max_len: float | None = None,
    delta_rays: bool = True,
    label: int = TRACK,
) -> TrackEnd:
    """Deposits of a muon, pion or proton from ``start`` until it stops, leaves, or max_len."""
    rng = world.rng
    mass = {"mu": MMU, "pi": MPI, "p": MP}[particle]
    table = range_table(particle)
    r0 = float(table.range(kinetic))
    length = min(r0, box_exit_distance(start, d0, world.lo, world.hi) * 1.5 + 5.0)
    if max_len is not None:
        length = min(length, max_len)
    n = max(1, int(math.ceil(length / STEP)))
    s = np.arange(n + 1) * STEP
    s[-1] = min(s[-1], r0)
    t_k = table.energy(np.maximum(r0 - s, 0.0))
    t_k[s >= r0] = 0.0
    de_mean = t_k[:-1] - t_k[1:]
    g = 1 + t_k[:-1] / mass
    beta = np.sqrt(1 - 1 / g**2)
    p = np.sqrt(t_k[:-1] * (t_k[:-1] + 2 * mass))
    mids, dirs = _walk(world, start, d0, n, _highland(p, beta))
    m = _truncate_inside(world, mids)
    stopped = bool(m == n and s[-1] >= r0 - 1e-9)
    mids, dirs, de_mean, beta, tk = mids[:m], dirs[:m], de_mean[:m], beta[:m], t_k[:m]
    if m == 0:
        return TrackEnd(start, d0, time, False, kinetic)
    # restricted continuous loss with Landau-like (Moyal) fluctuations; delta rays explicit
    frac = bethe_dedx(tk, mass, DELTA_TCUT) / bethe_dedx(tk, mass) if delta_rays else np.ones(m)
    xi = 0.5 * K_BB * STEP / beta**2
    de = np.maximum(de_mean * frac + xi * (moyal(rng, m) - 1.2704), 0.0)
    de = np.minimum(de, de_mean * frac * 4 + 0.5)
    ds = np.full(m, STEP)
    world.dep.add(mids, charge_ke(de, ds), time, label)
    if delta_rays:
        _delta_rays(world, mids, dirs, tk, mass, time)
    end = mids[-1] + 0.5 * STEP * dirs[-1]
    return TrackEnd(end, dirs[-1], time, stopped, 0.0 if stopped else float(t_k[m]))


def _delta_rays(
    world: World, mids: np.ndarray, dirs: np.ndarray, tk: np.ndarray, mass: float, time: float
) -> None:
    """Knock-on electrons above DELTA_TCUT along a heavy track (1/T^2 spectrum)."""
    rng = world.rng
    g = 1 + tk / mass
    b2 = 1 - 1 / g**2
    tmax = 2 * ME * b2 * g * g / (1 + 2 * g * ME / mass + (ME / mass) ** 2)
    lam = np.where(tmax > DELTA_TCUT, 0.5 * K_BB * STEP / b2 * (1 / DELTA_TCUT - 1 / tmax), 0.0)
    counts = rng.poisson(lam)
    idx = np.repeat(np.arange(len(tk)), counts)
    if len(idx) == 0:
        return
    u = rng.random(len(idx))
    te = 1 / (1 / DELTA_TCUT - u * (1 / DELTA_TCUT - 1 / tmax[idx]))
    spin = rng.random(len(idx)) < 1 - b2[idx] * te / tmax[idx]  # spin-0 factor of the spectrum
    idx, te = idx[spin], te[spin]
    pe = np.sqrt(te * (te + 2 * ME))
    pmax = np.sqrt(tmax[idx] * (tmax[idx] + 2 * ME))
    cos_t = np.clip(te / pe * pmax / tmax[idx], 0, 1)
    phi = rng.uniform(0, 2 * np.pi, len(idx))
    new_dirs = _rotate_many(dirs[idx], cos_t, phi)
    start = mids[idx]
    small = te < E_SHORT
    short_electrons(world, start[small], new_dirs[small], te[small], time)
    for j in np.flatnonzero(~small):
        em_cascade(world, start[j], new_dirs[j], float(te[j]), "e", time)


def _rotate_many(axes: np.ndarray, cos_t: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Per-row rotation: direction at angle acos(cos_t), azimuth phi around each axis."""
    axes = _unit(axes)
    ref = np.where(np.abs(axes[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = _unit(np.cross(axes, ref))
    e2 = np.cross(axes, e1)
    sin_t = np.sqrt(np.clip(1 - cos_t**2, 0, 1))
    return (
        cos_t[:, None] * axes
        + (sin_t * np.cos(phi))[:, None] * e1
        + (sin_t * np.sin(phi))[:, None] * e2
    )
