"""Electrons and photons: the electromagnetic cascade and batched low-energy particles.

Bremsstrahlung, pair production and Compton scattering for hard particles; short
electrons and soft photons are deposited in batches as stubs and blips.
"""

from __future__ import annotations

import math

import numpy as np

from argonic.detector.event import EM
from argonic.detector.physics.constants import (
    E_SHORT,
    K_BB,
    K_HARD,
    K_SOFT,
    ME,
    RHO,
    STEP,
    X0,
    _unit,
    isotropic,
    rotate_from,
)
from argonic.detector.physics.deposits import World, _highland, _truncate_inside, _walk
from argonic.detector.physics.energy_loss import (
    charge_ke,
    electron_dedx,
    moyal,
    range_table,
    soft_brems_dedx,
)

# --- electrons and photons -----------------------------------------------------------------


def short_electrons(
    world: World,
    start: np.ndarray,
    dirs: np.ndarray,
    kinetic: np.ndarray,
    time: float | np.ndarray,
    label: int = EM,
    michel_id: int | np.ndarray = 0,
) -> None:
    """Low-energy electrons, batched: straight paths of their CSDA range, Bragg-like loss.

    ``michel_id``: per electron (or one for all), > 0 for a Michel electron's own stub."""
    if len(kinetic) == 0:
        return
    table = range_table("e")
    r = table.range(kinetic)
    nstep = np.maximum(1, np.ceil(r / STEP).astype(np.int64))
    owner = np.repeat(np.arange(len(r)), nstep)
    first = np.cumsum(nstep) - nstep
    k = np.arange(len(owner)) - first[owner]
    s0 = k * STEP
    s1 = np.minimum(s0 + STEP, r[owner])
    de = table.energy(r[owner] - s0) - table.energy(np.maximum(r[owner] - s1, 0))
    pos = start[owner] + dirs[owner] * (0.5 * (s0 + s1))[:, None]
    keep = world.inside(pos)
    tt = np.broadcast_to(np.asarray(time, float), (len(r),))[owner]
    q = charge_ke(de, np.maximum(s1 - s0, 0.02))
    mid = np.broadcast_to(np.asarray(michel_id, np.int32), (len(r),))[owner]
    if keep.any():
        world.dep.add(pos[keep], q[keep], tt[keep], label, mid[keep])


def _brems_rate_per_cm(e: float, kmin: float) -> float:
    y0 = kmin / e
    if y0 >= 1:
        return 0.0
    return (4 / 3 * math.log(1 / y0) - 4 / 3 * (1 - y0) + 0.5 * (1 - y0 * y0)) / X0


def _brems_fraction(rng: np.random.Generator, y0: float) -> float:
    """Photon energy fraction y in [y0, 1] from (1/y)(4/3 - 4/3 y + y^2) (complete screening)."""
    while True:
        y = y0 ** (1 - rng.random())
        if rng.random() * (4 / 3) < 4 / 3 - 4 / 3 * y + y * y:
            return y


# photon attenuation in argon (XCOM-like): energy (MeV) -> mu/rho (cm2/g), pair fraction
_G_E = np.array([0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 1000, 1e5])
_G_MU = np.array(
    [
        0.60,
        0.18,
        0.123,
        0.0848,
        0.0618,
        0.0444,
        0.0300,
        0.0250,
        0.0236,
        0.0255,
        0.0275,
        0.0355,
        0.0398,
    ]
)
_G_PAIR = np.array([0, 0, 0, 0, 0, 0.02, 0.15, 0.35, 0.55, 0.77, 0.87, 0.98, 1.0])


def photon_attenuation_cm(e: np.ndarray | float) -> np.ndarray:
    """Mean free path (cm) of a photon of energy e (MeV); 9/7 X0 = 18 cm at high energy."""
    return 1 / (np.interp(np.log(e), np.log(_G_E), _G_MU) * RHO)


def _soft_photons(world: World, mids: np.ndarray, dirs: np.ndarray, time: float) -> None:
    """Soft bremsstrahlung photons (K_SOFT..K_HARD) along an electron path, as blips.

    They are secondaries of the electron: never Michel-flagged (LArSoft's convention)."""
    rng = world.rng
    lam = len(mids) * STEP * 4 / 3 * math.log(K_HARD / K_SOFT) / X0
    n = rng.poisson(lam)
    if n == 0:
        return
    i = rng.integers(0, len(mids), n)
    k = K_SOFT * (K_HARD / K_SOFT) ** rng.random(n)
    absorb_photons(world, mids[i], dirs[i], k, time)


def absorb_photons(
    world: World,
    start: np.ndarray,
    dirs: np.ndarray,
    e: np.ndarray,
    time: float | np.ndarray,
) -> None:
    """Low-energy photons, batched: a Compton scatter, then absorption of the rest nearby."""
    rng = world.rng
    n = len(e)
    if n == 0:
        return
    tt = np.broadcast_to(np.asarray(time, float), (n,))
    p1 = start + dirs * rng.exponential(photon_attenuation_cm(e))[:, None]
    k = e / ME
    te = e * rng.random(n) * 2 * k / (1 + 2 * k)
    photo = e < 0.15
    te[photo] = e[photo]
    rest = e - te
    step2 = rng.exponential(photon_attenuation_cm(np.maximum(rest, 0.02)))
    p2 = p1 + isotropic(rng, n) * step2[:, None]
    pos = np.concatenate([p1, p2])
    de = np.concatenate([te, rest])
    ok = (de > 0.01) & world.inside(pos)
    # an electron below 1 MeV stops within ~4 mm: one point deposit at its dE/dx
    q = charge_ke(de[ok], np.maximum(range_table("e").range(de[ok]), 0.05))
    world.dep.add(pos[ok], q, np.concatenate([tt, tt])[ok], EM)


def _electron_path(
    world: World,
    start: np.ndarray,
    d0: np.ndarray,
    e: float,
    length: float,
    time: float,
    michel_id: int,
    label: int,
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """One electron segment of ``length`` (or until it stops): (end, dir, energy left, inside)."""
    table = range_table("e")
    r0 = float(table.range(e))
    seg = min(length, r0)
    n = max(1, int(math.ceil(seg / STEP)))
    s = np.minimum(np.arange(n + 1) * STEP, seg)
    t_k = table.energy(r0 - s)
    p = np.sqrt(t_k[:-1] * (t_k[:-1] + 2 * ME))
    beta = p / (t_k[:-1] + ME)
    mids, dirs = _walk(world, start, d0, n, _highland(p, beta))
    m = _truncate_inside(world, mids)
    coll = electron_dedx(t_k[:-1])
    de_mean = (t_k[:-1] - t_k[1:]) * coll / (coll + soft_brems_dedx(t_k[:-1]))
    xi = 0.5 * K_BB * np.diff(s) / beta**2
    de = np.clip(de_mean + xi * (moyal(world.rng, n) - 1.2704), 0.0, de_mean * 4 + 0.2)
    if m:
        q = charge_ke(de[:m], np.maximum(np.diff(s)[:m], 0.02))
        world.dep.add(mids[:m], q, time, label, michel_id)
        _soft_photons(world, mids[:m], dirs[:m], time)
    end = mids[-1] + 0.5 * (s[-1] - s[-2]) * dirs[-1]
    return end, dirs[-1], float(t_k[-1]), m == n


def em_cascade(
    world: World,
    start: np.ndarray,
    direction: np.ndarray,
    energy: float,
    kind: str,
    time: float,
    michel: bool = False,
) -> None:
    """An electron ('e') or photon ('g') and its electromagnetic cascade.

    Electrons lose energy by ionisation (range tables, Moyal fluctuations, multiple
    scattering) and radiate hard photons (> K_HARD) one by one with the complete-screening
    spectrum (which makes X0 = 14 cm the radiation length); soft photons become blips.
    Photons travel their attenuation length (9/7 X0 at high energy), then pair-produce or
    Compton-scatter. The result has the longitudinal (Gamma-like) and transverse
    (Moliere) development of real showers, with stochastic branches and blips.

    ``michel``: the electron is a Michel electron. As in LArSoft's training-data labels
    (larreco TrainingDataAlg: the decay electron's own energy deposits), only the deposits
    of that electron itself carry its Michel id (a new one from ``world.new_michel_id``);
    its bremsstrahlung photons and every particle they make are ordinary EM.
    """
    own = world.new_michel_id() if michel and kind == "e" else 0
    # stack entries: kind, position, direction, energy, Michel id of the particle itself
    stack: list[tuple[str, np.ndarray, np.ndarray, float, int]] = [
        (kind, np.asarray(start, float), _unit(np.asarray(direction, float)), energy, own)
    ]
    small_e: list[tuple[np.ndarray, np.ndarray, float, int]] = []
    small_g: list[tuple[np.ndarray, np.ndarray, float]] = []
    while stack:
        k, p, d, e, mid = stack.pop()
        if k == "e":
            _electron(world, p, d, e, mid, time, stack, small_e)
        else:
            _photon(world, p, d, e, stack, small_g)
    if small_e:
        ps, ds_, es, ids = zip(*small_e, strict=True)
        short_electrons(world, np.array(ps), np.array(ds_), np.array(es), time, EM, np.array(ids))
    if small_g:
        ps, ds_, es = zip(*small_g, strict=True)
        absorb_photons(world, np.array(ps), np.array(ds_), np.array(es), time)


def _electron(
    world: World,
    p: np.ndarray,
    d: np.ndarray,
    e: float,
    mid: int,
    time: float,
    stack: list[tuple[str, np.ndarray, np.ndarray, float, int]],
    small_e: list[tuple[np.ndarray, np.ndarray, float, int]],
) -> None:
    """An electron's steps between hard photons (pushed onto ``stack``), down to E_SHORT."""
    rng = world.rng
    while True:
        if e < E_SHORT:
            small_e.append((p, d, e, mid))
            return
        rate = _brems_rate_per_cm(e, K_HARD)
        ell = rng.exponential(1 / rate) if rate > 0 else np.inf
        p, d, e_left, inside = _electron_path(world, p, d, e, ell, time, mid, EM)
        if not inside or e_left <= 1e-3:
            return
        y = _brems_fraction(rng, K_HARD / e_left)
        kphot = y * e_left
        e = e_left - kphot
        ang = rng.normal(0, ME / max(e_left, ME))
        dg = rotate_from(d, np.array([math.cos(ang)]), rng.uniform(0, 2 * np.pi, 1))[0]
        stack.append(("g", p, dg, kphot, 0))


def _photon(
    world: World,
    p: np.ndarray,
    d: np.ndarray,
    e: float,
    stack: list[tuple[str, np.ndarray, np.ndarray, float, int]],
    small_g: list[tuple[np.ndarray, np.ndarray, float]],
) -> None:
    """A photon's flight, then pair production or Compton scattering (products on ``stack``)."""
    rng = world.rng
    if e < K_HARD:
        small_g.append((p, d, e))
        return
    p = p + d * rng.exponential(float(photon_attenuation_cm(e)))
    if not world.inside(p[None])[0]:
        return
    if rng.random() < np.interp(math.log(e), np.log(_G_E), _G_PAIR):
        avail = e - 2 * ME
        u = rng.random()
        for frac in (u, 1 - u):
            ang = rng.normal(0, ME / e)
            de_dir = rotate_from(d, np.array([math.cos(ang)]), rng.uniform(0, 2 * np.pi, 1))[0]
            stack.append(("e", p, de_dir, frac * avail, 0))
        back = isotropic(rng)  # positron annihilation: two 511 keV photons
        small_g.extend([(p, back, ME), (p, -back, ME)])
    else:
        eps, cos_g = _compton(rng, e)
        te = e * (1 - eps)
        phi = rng.uniform(0, 2 * np.pi)
        dg = rotate_from(d, np.array([cos_g]), np.array([phi]))[0]
        # electron direction from momentum conservation
        pe = e * d - e * eps * dg
        stack.append(("e", p, _unit(pe), te, 0))
        stack.append(("g", p, dg, e * eps, 0))


def _compton(rng: np.random.Generator, e: float) -> tuple[float, float]:
    """Klein-Nishina: (E'/E, cos theta of the photon), by rejection."""
    k = e / ME
    eps0 = 1 / (1 + 2 * k)
    while True:
        eps = eps0 + (1 - eps0) * rng.random()
        cos_t = 1 - (1 / eps - 1) / k
        f = eps + 1 / eps - (1 - cos_t * cos_t)
        if rng.random() * (eps0 + 1 / eps0) < f:
            return eps, cos_t
