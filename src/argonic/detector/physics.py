"""Particle generation in liquid argon: energy deposits with truth labels.

A small, fast Monte Carlo of what a ProtoDUNE-SP readout sees at the surface:

* cosmic muons (cos^2 zenith, falling energy spectrum, Bethe-Bloch energy loss with
  Landau-like fluctuations and a Bragg rise at the end, multiple scattering, explicit
  delta rays above 1 MeV, Michel electrons from stopping mu+ and ~25% of stopping mu-),
* electromagnetic cascades (electrons and photons: bremsstrahlung, pair production,
  Compton scattering), used for delta rays, Michel electrons, cosmic EM particles and
  beam electrons,
* a ProtoDUNE-SP-like test-beam particle (e+, pi+, p, mu+ of 1-7 GeV/c) with a simple
  hadronic interaction model for pions and protons,
* radiological 39Ar beta decays.

Units: cm, MeV, microseconds; charge in ke- (after recombination).
Everything is vectorised along a particle's path; Python loops run over particles only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from argonic.detector.event import EM, TRACK

# --- liquid argon and particle constants -------------------------------------------------
RHO = 1.396  # g/cm3
X0 = 14.0  # radiation length, cm
MOLIERE_RADIUS = 9.0  # cm (emerges from the cascade; quoted for reference)
W_ION = 23.6e-6  # MeV per ion pair
E_FIELD = 0.5  # kV/cm
BOX_ALPHA, BOX_BETA = 0.93, 0.212  # modified Box recombination (ArgoNeuT): R(2.1 MeV/cm) = 0.70
ME, MMU, MPI, MP = 0.51099895, 105.6584, 139.5704, 938.2721  # MeV
K_BB = 0.307075 * 18.0 / 39.948 * RHO  # K Z/A rho, MeV/cm
I_AR = 188.0e-6  # mean excitation energy, MeV
STERNHEIMER = (0.2, 3.0, 5.2146, 0.19559, 3.0)  # x0, x1, C, a, k for liquid argon
STEP = 0.3  # cm, deposit step along a path
DELTA_TCUT = 1.0  # MeV: delta rays above this are made explicitly
E_SHORT = 3.0  # MeV: electrons below this are straight, batched, without bremsstrahlung
K_HARD = 2.0  # MeV: bremsstrahlung photons above this are tracked one by one
K_SOFT = 0.1  # MeV: soft photons between K_SOFT and K_HARD become isolated blips
MICHEL_EMAX = 52.8  # MeV
TAU_MU_PLUS, TAU_MU_MINUS_AR = 2.197, 0.567  # us; mu- in argon: decay + capture
MU_MINUS_DECAY_FRACTION = 0.25
MU_CHARGE_RATIO = 1.25  # mu+/mu-
AR39_Q = 0.565  # MeV
AR39_ACTIVITY = 1.01  # Bq per kg of natural argon

# cosmics (rate tuned to ~55,000 hits per ProtoDUNE-SP event, see BENCHMARKS.md)
MUON_RATE_HZ_M2 = 174.0  # through a horizontal plane (tuned); sea level is ~167 Hz/m2 (1 /cm2/min)
MUON_EC = 2800.0  # MeV: spectrum dN/dT ~ (T + Ec)^-2.7, mean ~4 GeV
EM_PER_MUON = 0.2  # cosmic electrons+photons entering per muon (soft component after the roof)
EM_EMIN, EM_EMAX = 30.0, 3000.0  # MeV, dN/dE ~ E^-2


# --- small vector helpers ------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def isotropic(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Unit vectors drawn uniformly on the sphere ([3] or [n, 3])."""
    m = 1 if n is None else n
    c = rng.uniform(-1, 1, m)
    phi = rng.uniform(0, 2 * np.pi, m)
    s = np.sqrt(1 - c * c)
    out = np.stack([s * np.cos(phi), s * np.sin(phi), c], axis=1)
    return out[0] if n is None else out


def rotate_from(axis: np.ndarray, cos_t: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Directions at polar angle acos(cos_t), azimuth phi around ``axis`` ([3]) -> [n, 3]."""
    axis = axis / np.linalg.norm(axis)
    a = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = _unit(np.cross(axis, a))
    e2 = np.cross(axis, e1)
    sin_t = np.sqrt(np.clip(1 - cos_t**2, 0, 1))
    return (
        cos_t[:, None] * axis
        + (sin_t * np.cos(phi))[:, None] * e1
        + (sin_t * np.sin(phi))[:, None] * e2
    )


def box_exit_distance(p: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance along d from p (inside the box) to the box surface."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (hi - p) / d, np.where(d < 0, (lo - p) / d, np.inf))
    return float(max(np.min(t), 0.0))


def box_entry(
    p: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[float, float] | None:
    """(t_in, t_out) of the line p + t d through the box, or None if it misses (slab method)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - p) / d
        t2 = (hi - p) / d
    tmin = np.where(np.isnan(t1), -np.inf, np.minimum(t1, t2))
    tmax = np.where(np.isnan(t1), np.inf, np.maximum(t1, t2))
    # a coordinate with d == 0 outside the slab gives inf/-inf in the right way
    t_in, t_out = float(np.max(tmin)), float(np.min(tmax))
    if t_out <= max(t_in, 0.0):
        return None
    return max(t_in, 0.0), t_out


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
    rng = world.rng
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
            while True:
                if e < E_SHORT:
                    small_e.append((p, d, e, mid))
                    break
                rate = _brems_rate_per_cm(e, K_HARD)
                ell = rng.exponential(1 / rate) if rate > 0 else np.inf
                p, d, e_left, inside = _electron_path(world, p, d, e, ell, time, mid, EM)
                if not inside or e_left <= 1e-3:
                    break
                y = _brems_fraction(rng, K_HARD / e_left)
                kphot = y * e_left
                e = e_left - kphot
                ang = rng.normal(0, ME / max(e_left, ME))
                dg = rotate_from(d, np.array([math.cos(ang)]), rng.uniform(0, 2 * np.pi, 1))[0]
                stack.append(("g", p, dg, kphot, 0))
        else:
            if e < K_HARD:
                small_g.append((p, d, e))
                continue
            p = p + d * rng.exponential(float(photon_attenuation_cm(e)))
            if not world.inside(p[None])[0]:
                continue
            if rng.random() < np.interp(math.log(e), np.log(_G_E), _G_PAIR):
                avail = e - 2 * ME
                u = rng.random()
                for frac in (u, 1 - u):
                    ang = rng.normal(0, ME / e)
                    de_dir = rotate_from(
                        d, np.array([math.cos(ang)]), rng.uniform(0, 2 * np.pi, 1)
                    )[0]
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
    if small_e:
        ps, ds_, es, ids = zip(*small_e, strict=True)
        short_electrons(world, np.array(ps), np.array(ds_), np.array(es), time, EM, np.array(ids))
    if small_g:
        ps, ds_, es = zip(*small_g, strict=True)
        absorb_photons(world, np.array(ps), np.array(ds_), np.array(es), time)


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
