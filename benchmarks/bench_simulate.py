"""Benchmark: simulation and hit finding per event, and hits per event.

    python benchmarks/bench_simulate.py --events 10 --seed 1 [--detector protodune-sp]

Per event: seconds (wall and CPU) for ``simulate_event`` (which includes hit finding and labelling),
seconds for ``find_hits`` alone over the event's frames (run again on the same frames),
and the hit count by truth label. Prints one line per event and a JSON summary.
"""

from __future__ import annotations

import json
import time

import harness
import numpy as np

from argonic.detector.geometry import get_detector
from argonic.reco.hits import find_hits
from argonic.reco.simulation import simulate_event


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--detector", default="protodune-sp")
    a = ap.parse_args()
    det = get_detector(a.detector)
    sim_s, sim_cpu, hit_s, n_hits, labels, michel, pixels = [], [], [], [], [], [], []
    for i in range(a.events):
        t0, c0 = time.perf_counter(), time.process_time()
        ev = simulate_event(det, np.random.default_rng([a.seed, i]), 1, 0, i)
        t1, c1 = time.perf_counter(), time.process_time()
        for f in ev.frames:
            find_hits(f)
        t2 = time.perf_counter()
        sim_s.append(t1 - t0)
        sim_cpu.append(c1 - c0)
        hit_s.append(t2 - t1)
        n_hits.append(len(ev.hits))
        labels.append(np.bincount(ev.hits.label, minlength=3).tolist())
        michel.append(int(ev.hits.michel.sum()))
        pixels.append(int(sum(len(f.value) for f in ev.frames)))
        print(
            f"event {i}: {t1 - t0:.2f} s ({c1 - c0:.2f} s CPU) simulate (incl. hits), "
            f"{t2 - t1:.3f} s find_hits, "
            f"{n_hits[-1]} hits [track, em, none] = {labels[-1]}, michel {michel[-1]}, "
            f"{pixels[-1]} ROI pixels",
            flush=True,
        )
    lab = np.array(labels)
    summary = {
        "detector": det.name,
        "events": a.events,
        "seed": a.seed,
        "seconds_simulate_mean": float(np.mean(sim_s)),
        "seconds_simulate_max": float(np.max(sim_s)),
        "cpu_seconds_simulate_mean": float(np.mean(sim_cpu)),
        "seconds_find_hits_mean": float(np.mean(hit_s)),
        "hits_mean": float(np.mean(n_hits)),
        "hits_std": float(np.std(n_hits)),
        "hits_min": int(np.min(n_hits)),
        "hits_max": int(np.max(n_hits)),
        "label_fractions_track_em_none": (lab.sum(0) / lab.sum()).round(4).tolist(),
        "michel_hits_mean": float(np.mean(michel)),
        "roi_pixels_mean": float(np.mean(pixels)),
    }
    print(json.dumps(summary, indent=2))
    harness.report(summary, a)


if __name__ == "__main__":
    main()
