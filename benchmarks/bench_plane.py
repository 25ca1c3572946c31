"""EmTrackMichelId module time on full events: local ONNX Runtime against remote plane mode
to `argonic serve` on the same host, interleaved (local, remote, local, remote, ...), with
where the remote time goes (client CPU, server compute from its statistics).

The module is the reco chain's (argonic.reco.module.EmTrackMichelId): local cuts every
patch in the client and runs the network in-process; plane mode sends each (TPC, plane)'s
pixels and hits, the server cuts the same patches and runs the same network. Both must give
bit-identical scores (checked). The server is started as `argonic serve` on the shipped
repository (or ``--model-repository``) in a child process.

    python benchmarks/bench_plane.py --events-file ev.h5 --rounds 3
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import harness
import numpy as np

from argonic.detector.eventfile import EventFile
from argonic.inference import make_interface
from argonic.inference.local_server import LocalServer
from argonic.reco.module import EmTrackMichelId
from argonic.reco.simulation import simulate_file
from argonic.repository import MODEL_NAME, shipped_repository


def cpu_s() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(interface, detector, event) -> tuple[float, float, np.ndarray]:
    """(wall s, client CPU s, scores) of one produce() call."""
    module = EmTrackMichelId(interface, detector)
    w0, c0 = time.perf_counter(), cpu_s()
    scores = module.produce(event, event.hits)
    return time.perf_counter() - w0, cpu_s() - c0, scores


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events-file", type=Path, help="default: 1 event simulated with --seed")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--events", type=int, default=1, help="events used from the file")
    p.add_argument("--rounds", type=int, default=3, help="local/remote pairs per event")
    p.add_argument("--batch-size", type=int, default=256, help="local batch size")
    p.add_argument("--model-repository", type=Path, default=None)
    a = p.parse_args()
    events_file = a.events_file or Path(f"plane_bench_seed{a.seed}.h5")
    if not events_file.exists():
        simulate_file(events_file, "protodune-sp", n_events=a.events, seed=a.seed)
    server = LocalServer(a.model_repository or shipped_repository(), MODEL_NAME)
    address = server.start()
    local_config = {"interface": "local", "batch_size": a.batch_size}
    remote_config = {
        "interface": "remote",
        "remote": {
            "servers": [address],
            "request_mode": "plane",
            "server_stats": "off",
            "timeout_s": 600.0,
        },
    }
    rows = []
    try:
        with (
            EventFile(events_file) as f,
            make_interface(local_config) as local,
            make_interface(remote_config) as remote,
        ):
            for i in range(min(a.events, len(f))):
                event = f[i]
                timed(local, f.detector, event)  # warm-up of both
                timed(remote, f.detector, event)
                for r in range(a.rounds):
                    lw, lc, ls = timed(local, f.detector, event)
                    rw, rc, rs = timed(remote, f.detector, event)
                    if not np.array_equal(ls, rs):
                        raise SystemExit(f"plane mode differs: {np.abs(ls - rs).max()}")
                    rows.append(
                        {
                            "event": i,
                            "round": r,
                            "hits": len(event.hits),
                            "local_s": lw,
                            "local_cpu_s": lc,
                            "plane_s": rw,
                            "plane_client_cpu_s": rc,
                            "ratio": rw / lw,
                        }
                    )
                    print(
                        f"event {i} round {r}: {len(event.hits)} hits, local {lw:.2f} s "
                        f"(CPU {lc:.2f}), plane {rw:.2f} s (client CPU {rc:.2f}), "
                        f"ratio {rw / lw:.3f}",
                        flush=True,
                    )
    finally:
        server.stop()
    ratios = [r["ratio"] for r in rows]
    summary = {
        "machine": harness.machine()["cpu"],
        "events_file": str(events_file),
        "rows": rows,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print(
        f"plane / local module time: median {summary['ratio_median']:.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} pairs)"
    )
    harness.report(summary, a)


if __name__ == "__main__":
    main()
