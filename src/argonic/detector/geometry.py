"""Detector description: ProtoDUNE-SP and a small test detector, selectable by name.

Coordinates follow LArSoft: x is the drift axis, y is vertical (up), z is along the beam.
Units: cm, microseconds, ticks, ke- (kilo-electrons).

ProtoDUNE-SP has 6 APAs (3 on each side of the central cathode) and 12 TPCs: each APA
has an active drift volume of 3.6 m towards the cathode and a thin volume behind it,
towards the cryostat wall. Every TPC is read out by three planes: U and V (induction,
wires at +-35.7 deg from vertical, 4.669 mm pitch, 800 channels each, wrapped around
the APA so that a channel number repeats along the plane) and W (collection, vertical
wires, 4.792 mm pitch, 480 per face).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from argonic import ArgonicError

PLANE_NAMES = ("U", "V", "W")


@dataclass(frozen=True)
class Plane:
    """One wire plane of a TPC."""

    name: str
    index: int
    n_wires: int
    pitch_cm: float
    angle_deg: float  # wire direction, from vertical (y) towards +z
    induction: bool
    calib_c: float  # PointIdAlg per-plane calibration constant c_p (gain = 1.2e-3 / c_p)
    wrapped: bool  # channel numbers repeat along the plane (wrapped induction wires)


@dataclass(frozen=True)
class TPC:
    """One drift volume: charge drifts along x from the cathode side to the anode plane."""

    index: int
    apa: int
    x_anode: float
    x_far: float  # the other end of the drift volume (cathode, or cryostat wall)
    y_min: float
    y_max: float
    z_min: float
    z_max: float

    @property
    def drift_length(self) -> float:
        return abs(self.x_far - self.x_anode)

    @property
    def x_min(self) -> float:
        return min(self.x_anode, self.x_far)

    @property
    def x_max(self) -> float:
        return max(self.x_anode, self.x_far)

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside this TPC."""
        return (
            (x >= self.x_min)
            & (x < self.x_max)
            & (y >= self.y_min)
            & (y < self.y_max)
            & (z >= self.z_min)
            & (z < self.z_max)
        )


@dataclass(frozen=True)
class Detector:
    """A liquid-argon TPC detector: TPCs, wire planes and the readout window."""

    name: str
    tpcs: tuple[TPC, ...]
    planes: tuple[Plane, ...]
    n_ticks: int
    tick_us: float
    drift_velocity_cm_per_us: float
    trigger_tick: int  # tick at which charge deposited at the anode by an in-time particle arrives

    def plane(self, name: str) -> Plane:
        """The plane called ``name`` (U, V or W)."""
        for p in self.planes:
            if p.name == name:
                return p
        raise ArgonicError(f"unknown plane {name!r}: choose from {', '.join(PLANE_NAMES)}")

    @property
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        """((x_min, x_max), (y_min, y_max), (z_min, z_max)) of all TPCs together."""
        return (
            (min(t.x_min for t in self.tpcs), max(t.x_max for t in self.tpcs)),
            (min(t.y_min for t in self.tpcs), max(t.y_max for t in self.tpcs)),
            (min(t.z_min for t in self.tpcs), max(t.z_max for t in self.tpcs)),
        )

    @property
    def cm_per_tick(self) -> float:
        return self.drift_velocity_cm_per_us * self.tick_us

    def wire(self, tpc: TPC, plane: Plane, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Continuous wire number in ``plane`` of ``tpc`` for points (y, z).

        Wire 0 lies at the corner where the measuring direction starts; for wrapped
        induction planes the number is taken modulo the channel count, as the wrapped
        wires of a ProtoDUNE-SP APA read the same channel at several heights.
        """
        a = math.radians(plane.angle_deg)
        s = (np.asarray(z) - tpc.z_min) * math.cos(a) - (np.asarray(y) - tpc.y_min) * math.sin(a)
        if a > 0:  # measuring direction points down-right: start from the top edge
            s = s + (tpc.y_max - tpc.y_min) * math.sin(a)
        w = s / plane.pitch_cm
        if plane.wrapped:
            w = np.mod(w, plane.n_wires)
        return w


def _planes(n_u: int, n_v: int, n_w: int, wrapped: bool) -> tuple[Plane, ...]:
    return (
        Plane("U", 0, n_u, 0.4669, 35.7, True, 0.9033e-3, wrapped),
        Plane("V", 1, n_v, 0.4669, -35.7, True, 1.0287e-3, wrapped),
        Plane("W", 2, n_w, 0.4792, 0.0, False, 0.8800e-3, False),
    )


def protodune_sp() -> Detector:
    """ProtoDUNE-SP: 6 APAs, 12 TPCs, 15,360 channels, 6000 ticks of 0.5 us."""
    apa_width = 480 * 0.4792  # 230.0 cm, one W face
    drift = 360.0
    thin = 5.0  # drift volume behind each APA, towards the cryostat wall
    y_min, y_max = 0.0, 607.0
    tpcs = []
    for apa in range(6):
        side = -1.0 if apa < 3 else 1.0  # APAs 0-2 at x = -360 cm, 3-5 at x = +360 cm
        z_min = (apa % 3) * apa_width
        x_anode = side * drift
        # TPC 2*apa: the thin outer volume; TPC 2*apa+1: the active volume towards the cathode
        tpcs.append(
            TPC(
                2 * apa, apa, x_anode, x_anode + side * thin, y_min, y_max, z_min, z_min + apa_width
            )
        )
        tpcs.append(TPC(2 * apa + 1, apa, x_anode, 0.0, y_min, y_max, z_min, z_min + apa_width))
    return Detector(
        name="protodune-sp",
        tpcs=tuple(tpcs),
        planes=_planes(800, 800, 480, wrapped=True),
        n_ticks=6000,
        tick_us=0.5,
        drift_velocity_cm_per_us=0.16,
        trigger_tick=500,
    )


def mini() -> Detector:
    """A one-TPC detector for fast tests: 240 U, 240 V, 200 W wires, 1500 ticks, 80 cm drift."""
    width = 200 * 0.4792
    tpc = TPC(0, 0, 0.0, 80.0, 0.0, 100.0, 0.0, width)
    return Detector(
        name="mini",
        tpcs=(tpc,),
        planes=_planes(240, 240, 200, wrapped=True),
        n_ticks=1500,
        tick_us=0.5,
        drift_velocity_cm_per_us=0.16,
        trigger_tick=250,
    )


DETECTORS = {"protodune-sp": protodune_sp, "mini": mini}


def get_detector(name: str) -> Detector:
    """The detector called ``name``; an ArgonicError names the choices if it is unknown."""
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ArgonicError(
            f"unknown detector {name!r}: choose from {', '.join(DETECTORS)}"
        ) from None
