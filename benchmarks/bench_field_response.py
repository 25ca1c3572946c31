"""argonic's field response (own 2D electrostatics, argonic.detector.response) against
Wire-Cell's Garfield-based ProtoDUNE-SP field response.

The reference is ``dune-garfield-1d565.json.bz2`` of the public WireCell/wire-cell-data
repository (it carries no license, so argonic does not ship it: pass its path). For each
readout plane, the central wire's current averaged over one pitch of electron positions
(trapezoid weights over the 6 impact positions of each half pitch, mirrored), in both:
the peak times (from the paths' start 100 mm above the collection plane), the lobes'
areas and peak heights, the largest correlation after a time shift, and the shift.

    python benchmarks/bench_field_response.py --garfield dune-garfield-1d565.json.bz2
"""

from __future__ import annotations

import bz2
import json
import time
from pathlib import Path

import harness
import numpy as np

from argonic.detector.response import IMPACTS, PERIOD_US, PITCH_MM, WirePlanes

PLANES = ("U", "V", "W")


def garfield_average(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(times us, plane -> central wire's current averaged over a pitch, electrons/us)."""
    with bz2.open(path) as f:
        response = json.loads(f.read())["FieldResponse"]
    period_us = response["period"] / 1000.0  # ns in the file
    out = {}
    for plane, name in zip(response["planes"], PLANES, strict=True):
        plane = plane["PlaneResponse"]
        pitch = plane["pitch"]
        half = {}  # pitchpos in [-p/2, 0] -> current on the central wire
        for entry in plane["paths"]:
            entry = entry["PathResponse"]
            if -pitch / 2 - 1e-6 <= entry["pitchpos"] <= 1e-6:
                half[entry["pitchpos"]] = np.array(entry["current"]["array"]["elements"])
        currents = np.stack([half[k] for k in sorted(half)])
        weights = np.ones(len(currents))
        weights[[0, -1]] = 0.5
        # per electron charge and ns in the file -> electrons per us (sign kept)
        out[name] = weights @ currents / weights.sum() * 1000.0
    n = max(len(v) for v in out.values())
    return np.arange(n) * period_us, out


def figures(times: np.ndarray, current: np.ndarray) -> dict:
    dt = times[1] - times[0]
    return {
        "integral_electrons": float(current.sum() * dt),
        "positive_area": float(current[current > 0].sum() * dt),
        "negative_area": float(current[current < 0].sum() * dt),
        "max_us": float(times[np.argmax(current)]),
        "min_us": float(times[np.argmin(current)]),
        "max": float(current.max()),
        "min": float(current.min()),
    }


def best_shift(a: np.ndarray, b: np.ndarray, dt: float) -> tuple[float, float]:
    """(shift of b onto a in us, correlation there), both on the same time grid."""
    n = max(len(a), len(b))
    a, b = np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))
    lags = np.arange(-300, 301)
    corr = [np.corrcoef(a, np.roll(b, lag))[0, 1] for lag in lags]
    i = int(np.argmax(corr))
    return float(lags[i] * dt), float(corr[i])


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--garfield", type=Path, required=True, help="dune-garfield-1d565.json.bz2")
    a = p.parse_args()
    t0 = time.process_time()
    ours = WirePlanes().response()
    cpu_s = time.process_time() - t0
    g_times, garfield = garfield_average(a.garfield)
    assert abs(g_times[1] - PERIOD_US) < 1e-4, "both on 0.1 us bins"
    result: dict = {"argonic_cpu_s": cpu_s, "impacts_per_half_pitch": IMPACTS, "planes": {}}
    for name in PLANES:
        mine = ours.average(name)[ours.currents[name].shape[0] // 2]
        shift, corr = best_shift(garfield[name], mine, PERIOD_US)
        result["planes"][name] = {
            "pitch_mm": PITCH_MM[name],
            "argonic": figures(ours.times_us, mine),
            "garfield": figures(g_times, garfield[name]),
            "shift_us_onto_garfield": shift,
            "correlation_after_shift": corr,
        }
    print(json.dumps(result, indent=1))
    harness.report(result, a)


if __name__ == "__main__":
    main()
