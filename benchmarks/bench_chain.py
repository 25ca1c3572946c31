"""Per full ProtoDUNE-SP event: the reco chain's module times with local inference (the
paper's CPU-only baseline, Table 2), patch building alone (the paper's 7 s "preprocessing"),
and the event file's bytes.

    python benchmarks/bench_chain.py --events 2 [--events-file ev.h5] [--json]

Simulates the events first unless --events-file is given; reports wall and CPU seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import harness

from argonic.detector.eventfile import EventFile
from argonic.patches import plane_patches
from argonic.reco.chain import format_table
from argonic.reco.executors import run_reco
from argonic.reco.simulation import simulate_file
from argonic.settings import load_settings


def patch_seconds(events_file: Path) -> list[tuple[int, float, float]]:
    """(hits, wall s, CPU s) of building every patch of each event."""
    out = []
    with EventFile(events_file) as f:
        for event in f:
            w0, c0 = time.perf_counter(), time.process_time()
            n = sum(len(idx) for idx, _ in plane_patches(event, f.detector))
            out.append((n, time.perf_counter() - w0, time.process_time() - c0))
    return out


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--events", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--events-file", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = a.events_file or Path(tmp) / "ev.h5"
        if a.events_file is None:
            simulate_file(
                events, detector="protodune-sp", n_events=a.events, seed=a.seed, show_progress=False
            )
        patches = patch_seconds(events)
        reco = run_reco(events, Path(tmp) / "reco.h5", load_settings(), show_progress=False)
        result = {
            "events": reco["events"],
            "hits_per_event": reco["hits_per_event"],
            "file_bytes_per_event": os.path.getsize(events) / reco["events"],
            "patch_building": [{"hits": n, "wall_s": w, "cpu_s": c} for n, w, c in patches],
            "modules": reco["modules"],
            "emtrackmichelid_patches_s_per_event": reco["emtrackmichelid_patches_s_per_event"],
            "emtrackmichelid_inference_s_per_event": reco["emtrackmichelid_inference_s_per_event"],
        }
    harness.report(result, a)
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['events']} events, {result['hits_per_event']:.0f} hits/event, "
        f"{result['file_bytes_per_event'] / 1e6:.1f} MB/event in the file"
    )
    for p in result["patch_building"]:
        print(f"patches for {p['hits']} hits: {p['wall_s']:.3f} s wall, {p['cpu_s']:.3f} s CPU")
    print(format_table(reco))


if __name__ == "__main__":
    main()
