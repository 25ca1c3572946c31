"""Liquid argon and particle constants, and small vector helpers.

Units: cm, MeV, microseconds. The helpers draw and rotate unit vectors and intersect
lines with the active box; they depend on numpy only.
"""

from __future__ import annotations

import numpy as np

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
