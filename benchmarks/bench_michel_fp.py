"""Where the Michel false positives and the missed Michel hits are: for every hit above the
Michel cut that is not a Michel hit, its truth label and its distance to the nearest true
Michel hit of the same TPC and plane (wire pitch x wire, drift speed x tick); for every
Michel hit, its distance to the nearest track hit (the muon's end) and whether it passes
the cut; from the shipped model or another model.onnx. Near a Michel electron (a few cm) a
false positive is mostly the electron's own bremsstrahlung photons and their blips, which
LArSoft's label calls em; far from every Michel electron it is a hit the network mistakes
for one. A Michel hit far from the muon's end has no track in its 48x48 patch (~23 cm).

    python benchmarks/bench_michel_fp.py --events val.h5 [--model model.onnx] [--cut 0.6] [--context]

``--context``: the scores after the MichelContext stage (argonic.reco.michel_context), the chain's
output, instead of the network's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import harness
import numpy as np
import onnxruntime as ort
from scipy.spatial import cKDTree

from argonic.detector.event import EM, NONE, TRACK
from argonic.detector.eventfile import EventFile
from argonic.patches import event_patches
from argonic.reco.michel_context import MichelContext
from argonic.repository import onnx_path

WIRE_CM, TICK_CM = 0.48, 0.08  # ~wire pitch; 0.5 us x 1.6 mm/us of drift
BINS_CM = (0.0, 2.0, 5.0, 10.0, 25.0, np.inf)
TRACK_BINS_CM = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0, np.inf)


def network_scores(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """[N, 4] track, em, none, michel scores of the patches ``x``."""
    return np.concatenate(
        [
            np.concatenate(session.run(None, {"main_input": x[i : i + 1024]}), axis=1)
            for i in range(0, len(x), 1024)
        ]
    )


def nearest_cm(hits, targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Distance (cm) of each hit in ``targets`` (indices) to the nearest hit of ``sources``
    (a mask) in its TPC and plane (inf where that plane has none)."""
    pos = np.stack([hits.wire * WIRE_CM, hits.peak_tick * TICK_CM], 1)
    out = np.full(len(targets), np.inf)
    for key in set(zip(hits.tpc[targets].tolist(), hits.plane[targets].tolist(), strict=True)):
        near = sources & (hits.tpc == key[0]) & (hits.plane == key[1])
        if not near.any():
            continue
        here = (hits.tpc[targets] == key[0]) & (hits.plane[targets] == key[1])
        out[here] = cKDTree(pos[near]).query(pos[targets[here]])[0]
    return out


def by_distance(d: np.ndarray, bins: tuple, key: str, row: Callable[[np.ndarray], dict]) -> list:
    """One table row per distance bin [lo, hi): ``{key: [lo, hi], **row(mask of the bin)}``."""
    return [
        {key: [lo, hi], **row((d >= lo) & (d < hi))}
        for lo, hi in zip(bins[:-1], bins[1:], strict=True)
    ]


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None, help="model.onnx (default: shipped)")
    p.add_argument("--cut", type=float, default=0.6)
    p.add_argument(
        "--context", action="store_true", help="the chain's output: after the MichelContext stage"
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    context = MichelContext.load() if a.context else None
    session = ort.InferenceSession(str(a.model or onnx_path()), providers=["CPUExecutionProvider"])
    labels, dist, tp, michel_hits = [], [], 0, 0
    to_track, tagged = [], []  # per Michel hit: cm to the nearest track hit, above the cut
    with EventFile(a.events) as f:
        for i in range(len(f)):
            event = f[i]
            hits = event.hits
            scores = network_scores(session, event_patches(event, f.detector))
            if context is not None:
                scores = context.apply(hits, scores, f.detector)
            score = scores[:, 3]
            fp = np.flatnonzero((score > a.cut) & ~hits.michel)
            tp += int(np.sum((score > a.cut) & hits.michel))
            michel_hits += int(hits.michel.sum())
            labels.append(hits.label[fp])
            dist.append(nearest_cm(hits, fp, hits.michel))
            michel = np.flatnonzero(hits.michel)
            to_track.append(nearest_cm(hits, michel, hits.label == TRACK))
            tagged.append(score[michel] > a.cut)
    label, d = np.concatenate(labels), np.concatenate(dist)
    rows = by_distance(
        d,
        BINS_CM,
        "nearest_michel_cm",
        lambda s: {
            "false_positives": int(s.sum()),
            "track": int(np.sum(s & (label == TRACK))),
            "em": int(np.sum(s & (label == EM))),
            "none": int(np.sum(s & (label == NONE))),
        },
    )
    d_track, hit = np.concatenate(to_track), np.concatenate(tagged)
    missed = by_distance(
        d_track,
        TRACK_BINS_CM,
        "nearest_track_cm",
        lambda s: {
            "michel_hits": int(s.sum()),
            "efficiency": float(hit[s].mean()) if s.any() else float("nan"),
        },
    )
    summary = {
        "events_file": str(a.events),
        "model": str(a.model or onnx_path()),
        "michel_context": None if context is None else context.sha256,
        "cut": a.cut,
        "michel_hits": michel_hits,
        "true_positives": tp,
        "false_positives": len(label),
        "by_distance": rows,
        "michel_hits_by_distance_to_track": missed,
    }
    harness.report(summary, a)
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
    print(f"Michel hits by distance to the nearest track hit: efficiency at {a.cut}")
    for r in missed:
        lo, hi = r["nearest_track_cm"]
        print(f"{lo:5.0f}-{hi:<5.0f} cm    {r['michel_hits']:6d}   {r['efficiency']:.3f}")


if __name__ == "__main__":
    main()
