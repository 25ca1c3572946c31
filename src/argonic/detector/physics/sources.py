"""Particle sources: decays, hadrons, muons, and cosmic, beam and 39Ar generators.

Michel electrons from stopping muons, a simple inelastic model for pions and protons
(with pi0 -> 2 photons), cosmic muons and EM particles, the test beam and 39Ar betas.
"""

from __future__ import annotations

import math

import numpy as np

from argonic.detector.event import EM
from argonic.detector.physics.constants import (
    AR39_ACTIVITY,
    AR39_Q,
    EM_EMAX,
    EM_EMIN,
    EM_PER_MUON,
    ME,
    MICHEL_EMAX,
    MMU,
    MP,
    MPI,
    MU_CHARGE_RATIO,
    MU_MINUS_DECAY_FRACTION,
    MUON_EC,
    MUON_RATE_HZ_M2,
    RHO,
    TAU_MU_MINUS_AR,
    TAU_MU_PLUS,
    _unit,
    box_entry,
    isotropic,
    rotate_from,
)
from argonic.detector.physics.deposits import World
from argonic.detector.physics.energy_loss import charge_ke, range_table
from argonic.detector.physics.showers import em_cascade
from argonic.detector.physics.tracks import TrackEnd, heavy_track

# --- decays, hadrons ----------------------------------------------------------------------


def michel_energy(rng: np.random.Generator) -> float:
    """Kinetic energy (MeV) of a Michel electron: x^2 (3 - 2x) spectrum, x = E / 52.8 MeV."""
    while True:
        x = rng.random()
        if rng.random() < x * x * (3 - 2 * x):
            return max(x * MICHEL_EMAX - ME, 0.05)


def muon(
    world: World, start: np.ndarray, d0: np.ndarray, kinetic: float, charge: int, time: float
) -> TrackEnd:
    """A muon and, if it stops, its Michel electron (mu+ always, mu- 25%)."""
    end = heavy_track(world, start, d0, kinetic, "mu", time)
    if end.stopped:
        rng = world.rng
        decays = charge > 0 or rng.random() < MU_MINUS_DECAY_FRACTION
        if decays:
            tau = TAU_MU_PLUS if charge > 0 else TAU_MU_MINUS_AR
            em_cascade(
                world,
                end.pos,
                isotropic(rng),
                michel_energy(rng),
                "e",
                time + rng.exponential(tau),
                michel=True,
            )
        else:  # nuclear capture: a de-excitation photon of a few MeV
            em_cascade(world, end.pos, isotropic(rng), float(rng.uniform(1, 6)), "g", time)
    return end


NUCLEAR_LENGTH = {"pi": 115.0, "p": 85.7}  # cm in liquid argon


def hadron(
    world: World,
    start: np.ndarray,
    d0: np.ndarray,
    kinetic: float,
    particle: str,
    time: float,
    depth: int = 0,
) -> None:
    """A pion or proton with one inelastic interaction (protons, pions, pi0 -> 2 photons)."""
    rng = world.rng
    ell = rng.exponential(NUCLEAR_LENGTH[particle])
    end = heavy_track(world, start, d0, kinetic, particle, time, max_len=ell)
    if end.stopped:
        if particle == "pi":  # pi+ -> mu+ (4.1 MeV, ~1.5 mm) -> Michel
            mu_end = heavy_track(world, end.pos, isotropic(rng), 4.12, "mu", time)
            em_cascade(
                world,
                mu_end.pos,
                isotropic(rng),
                michel_energy(rng),
                "e",
                time + rng.exponential(TAU_MU_PLUS),
                michel=True,
            )
        return
    if end.kinetic < 20 or not world.inside(end.pos[None])[0] or depth > 2:
        return
    avail = end.kinetic * rng.uniform(0.6, 0.95)  # the rest: binding, neutrons, nuclear
    n_p = rng.poisson(1.5)
    n_pi = rng.poisson(0.6) + (1 if particle == "pi" and rng.random() < 0.6 else 0)
    n_pi0 = int(rng.random() < (0.35 if avail > 300 else 0.1))
    kinds = ["p"] * n_p + ["pi"] * n_pi + ["pi0"] * n_pi0
    if not kinds:
        return
    share = rng.dirichlet(np.ones(len(kinds))) * avail
    for kind, t in zip(kinds, share, strict=True):
        cos_t = np.array([rng.uniform(0.3, 1.0) if kind != "p" else rng.uniform(-0.2, 1.0)])
        d = rotate_from(end.dir, cos_t, rng.uniform(0, 2 * np.pi, 1))[0]
        if kind == "p":
            t = min(t, 500.0)
            if t > 5:
                hadron(world, end.pos, d, float(t), "p", time, depth + 1)
        elif kind == "pi":
            if t > 5:
                hadron(world, end.pos, d, float(t), "pi", time, depth + 1)
        else:
            _pi0(world, end.pos, d, float(t) + 135.0, time)


def _pi0(world: World, pos: np.ndarray, d: np.ndarray, energy: float, time: float) -> None:
    """pi0 -> 2 photons (isotropic in the pi0 frame, boosted)."""
    rng = world.rng
    m = 134.977
    g = max(energy / m, 1.0)
    b = math.sqrt(1 - 1 / g**2)
    c = rng.uniform(-1, 1)
    e1 = 0.5 * m * g * (1 + b * c)
    e2 = energy - e1
    cos1 = (c + b) / (1 + b * c)
    cos2 = (-c + b) / (1 - b * c)
    phi = rng.uniform(0, 2 * np.pi)
    for e, cos_t, ph in ((e1, cos1, phi), (e2, cos2, phi + np.pi)):
        dg = rotate_from(d, np.array([cos_t]), np.array([ph]))[0]
        em_cascade(world, pos, dg, float(e), "g", time)


# --- sources -------------------------------------------------------------------------------


def sample_cosmic_muons(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directions [n, 3] (downwards), kinetic energies (MeV) and charges (+-1) of cosmic muons.

    Flux through a horizontal plane ~ cos^3(zenith) (intensity ~ cos^2);
    dN/dT ~ (T + MUON_EC)^-2.7 up to 1 PeV; mu+/mu- = MU_CHARGE_RATIO.
    """
    cos_t = rng.random(n) ** 0.25
    phi = rng.uniform(0, 2 * np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    dirs = np.stack([sin_t * np.cos(phi), -cos_t, sin_t * np.sin(phi)], axis=1)
    kin = np.minimum(MUON_EC * (rng.random(n) ** (-1 / 1.7) - 1), 1e9)
    charge = np.where(rng.random(n) < MU_CHARGE_RATIO / (1 + MU_CHARGE_RATIO), 1, -1)
    return dirs, kin, charge


def cosmic_muons(
    world: World,
    window_us: tuple[float, float],
    rate_hz_m2: float = MUON_RATE_HZ_M2,
    margin_cm: float = 300.0,
) -> int:
    """Cosmic muons crossing a horizontal plane above the detector during ``window_us``.

    Zenith angle: intensity ~ cos^2(theta), i.e. flux through a horizontal plane ~ cos^3;
    kinetic energy dN/dT ~ (T + 2.8 GeV)^-2.7 (mean ~4 GeV); mu+/mu- = 1.25.
    Returns the number of muons that enter the active volume.
    """
    rng = world.rng
    lo, hi = world.lo, world.hi
    area_m2 = (hi[0] - lo[0] + 2 * margin_cm) * (hi[2] - lo[2] + 2 * margin_cm) * 1e-4
    n = rng.poisson(rate_hz_m2 * area_m2 * (window_us[1] - window_us[0]) * 1e-6)
    dirs, kin, charge = sample_cosmic_muons(rng, n)
    x = rng.uniform(lo[0] - margin_cm, hi[0] + margin_cm, n)
    z = rng.uniform(lo[2] - margin_cm, hi[2] + margin_cm, n)
    starts = np.stack([x, np.full(n, hi[1] - 1e-6), z], axis=1)
    t0 = rng.uniform(*window_us, n)
    # the plane lies at the top face, extended: move the start back along the direction so that
    # side-entering muons also start outside, then find the entry point
    entered = 0
    for i in range(n):
        hit = box_entry(starts[i] - dirs[i] * 2000.0, dirs[i], lo, hi)
        if hit is None:
            continue
        p_in = starts[i] - dirs[i] * 2000.0 + dirs[i] * (hit[0] + 1e-4)
        # keep the muons whose line crosses the extended plane at y = top (they came from the sky)
        muon(world, p_in, dirs[i], float(kin[i]), int(charge[i]), float(t0[i]))
        entered += 1
    return entered


def cosmic_em(world: World, window_us: tuple[float, float], n_muons: int) -> None:
    """Cosmic electrons and photons entering from the top (EM_PER_MUON per muon, E^-2)."""
    rng = world.rng
    lo, hi = world.lo, world.hi
    n = rng.poisson(EM_PER_MUON * n_muons)
    for _ in range(n):
        cos_t = rng.random() ** 0.25
        phi = rng.uniform(0, 2 * np.pi)
        s = math.sqrt(1 - cos_t**2)
        d = np.array([s * math.cos(phi), -cos_t, s * math.sin(phi)])
        p = np.array([rng.uniform(lo[0], hi[0]), hi[1] - 1e-6, rng.uniform(lo[2], hi[2])])
        u = rng.random()
        e = 1 / (1 / EM_EMIN - u * (1 / EM_EMIN - 1 / EM_EMAX))
        kind = "e" if rng.random() < 0.4 else "g"
        em_cascade(world, p, d, float(e), kind, float(rng.uniform(*window_us)))


BEAM_START = np.array([-27.0, 424.0, 0.0])  # ProtoDUNE-SP beam entry on the upstream face
BEAM_DIR = np.array([-0.178, -0.197, 0.964])


def beam_particle(
    world: World, start: np.ndarray = BEAM_START, direction: np.ndarray = BEAM_DIR
) -> str:
    """One in-time test-beam particle (e+, pi+, p, mu+) of 1, 2, 3, 6 or 7 GeV/c; its kind."""
    rng = world.rng
    p_mom = float(rng.choice([1000.0, 2000.0, 3000.0, 6000.0, 7000.0]))
    kind = str(rng.choice(["e", "pi", "p", "mu"], p=[0.3, 0.4, 0.2, 0.1]))
    start = np.asarray(start, float) + np.array([rng.normal(0, 3), rng.normal(0, 3), 0.0])
    d = _unit(np.asarray(direction, float) + rng.normal(0, 0.02, 3))
    if not world.inside(start[None])[0]:
        return kind
    if kind == "e":
        em_cascade(world, start, d, p_mom, "e", 0.0)
    else:
        mass = {"pi": MPI, "p": MP, "mu": MMU}[kind]
        kin = math.sqrt(p_mom**2 + mass**2) - mass
        if kind == "mu":
            muon(world, start, d, kin, 1, 0.0)
        else:
            hadron(world, start, d, kin, kind, 0.0)
    return kind


def ar39_betas(world: World, window_us: tuple[float, float]) -> int:
    """39Ar beta decays (1 Bq/kg) in the active volume during ``window_us``: point-like blips."""
    rng = world.rng
    vol_cm3 = float(np.prod(world.hi - world.lo))
    mass_kg = vol_cm3 * RHO * 1e-3
    n = rng.poisson(AR39_ACTIVITY * mass_kg * (window_us[1] - window_us[0]) * 1e-6)
    # allowed beta shape p E (Q - T)^2 by rejection (its maximum is ~0.047 MeV^4)
    te = np.zeros(0)
    while len(te) < n:
        t = rng.uniform(0, AR39_Q, 2 * n + 10)
        e = t + ME
        f = np.sqrt(t * (t + 2 * ME)) * e * (AR39_Q - t) ** 2
        te = np.concatenate([te, t[rng.random(len(t)) * 0.05 < f]])
    te = te[:n]
    pos = world.lo + rng.random((n, 3)) * (world.hi - world.lo)
    q = charge_ke(te, np.maximum(range_table("e").range(te), 0.02))
    world.dep.add(pos, q, rng.uniform(*window_us, n), EM)
    return n
