"""Where the Michel false positives are: for every hit above the Michel cut that is not a
Michel hit, its truth label and its distance to the nearest true Michel hit of the same
TPC and plane (wire pitch x wire, drift speed x tick), from the shipped model or another
model.onnx. Near a Michel electron (a few cm) a false positive is mostly the electron's own
bremsstrahlung photons and their blips, which LArSoft's label calls em; far from every
Michel electron it is a hit the network mistakes for one.

    python benchmarks/bench_michel_fp.py --events val.h5 [--model model.onnx] [--cut 0.6]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.spatial import cKDTree

from argonic.detector.event import EM, NONE, TRACK
from argonic.detector.eventfile import EventFile
from argonic.patches import event_patches
from argonic.repository import onnx_path

WIRE_CM, TICK_CM = 0.48, 0.08  # ~wire pitch; 0.5 us x 1.6 mm/us of drift
BINS_CM = (0.0, 2.0, 5.0, 10.0, 25.0, np.inf)


def michel_scores(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            session.run(None, {"main_input": x[i : i + 1024]})[1][:, 0]
            for i in range(0, len(x), 1024)
        ]
    )


def nearest_michel_cm(hits, targets: np.ndarray) -> np.ndarray:
    """Distance (cm) of each hit in ``targets`` to the nearest Michel hit of its TPC and plane
    (inf where that plane has none)."""
    pos = np.stack([hits.wire * WIRE_CM, hits.peak_tick * TICK_CM], 1)
    out = np.full(len(targets), np.inf)
    for key in set(zip(hits.tpc[targets].tolist(), hits.plane[targets].tolist(), strict=True)):
        same = (hits.tpc == key[0]) & (hits.plane == key[1])
        michel = same & hits.michel
        if not michel.any():
            continue
        here = (hits.tpc[targets] == key[0]) & (hits.plane[targets] == key[1])
        out[here] = cKDTree(pos[michel]).query(pos[targets[here]])[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None, help="model.onnx (default: shipped)")
    p.add_argument("--cut", type=float, default=0.6)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    session = ort.InferenceSession(str(a.model or onnx_path()), providers=["CPUExecutionProvider"])
    labels, dist, tp, michel_hits = [], [], 0, 0
    with EventFile(a.events) as f:
        for i in range(len(f)):
            event = f[i]
            hits = event.hits
            score = michel_scores(session, event_patches(event, f.detector))
            fp = np.flatnonzero((score > a.cut) & ~hits.michel)
            tp += int(np.sum((score > a.cut) & hits.michel))
            michel_hits += int(hits.michel.sum())
            labels.append(hits.label[fp])
            dist.append(nearest_michel_cm(hits, fp))
    label, d = np.concatenate(labels), np.concatenate(dist)
    rows = []
    for lo, hi in zip(BINS_CM[:-1], BINS_CM[1:], strict=True):
        s = (d >= lo) & (d < hi)
        rows.append(
            {
                "nearest_michel_cm": [lo, hi],
                "false_positives": int(s.sum()),
                "track": int(np.sum(s & (label == TRACK))),
                "em": int(np.sum(s & (label == EM))),
                "none": int(np.sum(s & (label == NONE))),
            }
        )
    summary = {
        "events_file": str(a.events),
        "model": str(a.model or onnx_path()),
        "cut": a.cut,
        "michel_hits": michel_hits,
        "true_positives": tp,
        "false_positives": len(label),
        "by_distance": rows,
    }
    if a.json:
        print(json.dumps(summary, indent=1))
        return
    print(f"{michel_hits} Michel hits, {tp} selected; {len(label)} false positives at {a.cut}")
    print("nearest Michel hit     FP  track     em   none")
    for r in rows:
        lo, hi = r["nearest_michel_cm"]
        print(
            f"{lo:5.0f}-{hi:<5.0f} cm    {r['false_positives']:6d} {r['track']:6d} "
            f"{r['em']:6d} {r['none']:6d}"
        )


if __name__ == "__main__":
    main()
