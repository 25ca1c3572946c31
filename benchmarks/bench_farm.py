#!/usr/bin/env python3
"""The farm model (argonic.study.farm) against an `argonic study` run on this machine.

    python benchmarks/bench_farm.py --study study/   # a finished study run's folder
    python benchmarks/bench_farm.py                  # runs the study first (~4 minutes):
        argonic study --clients 1,2,4,8,12,16,20,24,32 --events 8 --batch-size 1693
                      --max-patches 300 --cpu-scale 100

The model is fed only with what was measured outside the study's phases: the study's
workload (each event's emulated CPU time and its planes' patch counts, measured once in the
study's parent) and the server's execution time against rows per execution, probed here on
a fresh `argonic serve` (the same shipped model): ``--probe-requests`` sequential requests
of each size through argonic's client, the server's compute time per execution from
ModelStatistics, and what a request costs outside the server (the client's wall time minus
the server's request time). Then it simulates each N of the study and compares the mean module time per event
(events that ended while every client ran, as the study reports) with the measured one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import harness
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from argonic.inference.remote import RemoteInterface
from argonic.repository import MODEL_NAME
from argonic.study.farm import FarmConfig, ServiceModel, simulate, study_client

STUDY = [
    "--clients", "1,2,4,8,12,16,20,24,32", "--events", "8", "--batch-size", "1693",
    "--max-patches", "300", "--cpu-scale", "100",
]  # fmt: skip


def server_ns(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> tuple[int, int, int, int]:
    """(executions, compute ns, requests, request ns) of the model so far."""
    s = stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL_NAME)).model_stats[0]
    i = s.inference_stats
    compute = i.compute_input.ns + i.compute_infer.ns + i.compute_output.ns
    return s.execution_count, compute, i.success.count, i.success.ns


def probe_service(url: str, patches: np.ndarray, sizes: list[int], n: int) -> dict:
    """Seconds per execution and, per request, the seconds argonic's client waits beyond the
    server's own request time (protocol, copies, both ends), at each size: ``n`` requests
    one after another through RemoteInterface (what the study's clients use)."""
    points = {}
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for rows in sizes:
            x = patches[:rows]
            settings = {"batch_size": rows, "remote": {"servers": [url], "server_stats": "off"}}
            with RemoteInterface(settings) as remote:
                remote.predict(x)  # warm-up
                e0, c0, r0, t0 = server_ns(stub)
                wall = time.perf_counter()
                for _ in range(n):
                    remote.predict(x)
                wall = time.perf_counter() - wall
            e1, c1, r1, t1 = server_ns(stub)
            per_exec = (c1 - c0) / 1e9 / (e1 - e0)
            outside = (wall - (t1 - t0) / 1e9) / n
            points[rows] = {"execution_s": per_exec, "outside_s": outside}
            print(f"  {rows:4d} rows: {per_exec * 1e3:6.1f} ms per execution, "
                  f"{outside * 1e3:5.1f} ms per request outside the server")  # fmt: skip
    return points


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--study", type=Path, default=None, help="a finished study run's folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 150, 200, 256])
    p.add_argument("--probe-requests", type=int, default=30)
    p.add_argument("--seeds", type=int, default=5, help="model runs per N (mean reported)")
    args = p.parse_args()

    study = args.study
    if study is None:
        study = Path("study-farm")
        cmd = [sys.executable, "-m", "argonic.cli", "study", "-o", str(study), "-q", *STUDY]
        subprocess.run(cmd, check=True)
    summary = json.loads((study / "summary.json").read_text())
    workload = json.loads((study / "workload.json").read_text())
    config = summary["config"]

    events = study / "events.h5"
    with harness.served() as server:
        print(f"probing the server's execution time ({args.probe_requests} requests per size)")
        x = harness.event_patches_sample(events, max(args.sizes), seed=0) if events.exists() else (
            np.random.default_rng(0).exponential(1.0, (max(args.sizes), 48, 48, 1)).astype(np.float32)
        )  # fmt: skip
        points = probe_service(server.url, x, args.sizes, args.probe_requests)
    sizes = sorted(points)
    service = ServiceModel.fit(
        sizes, [points[s]["execution_s"] for s in sizes], max_rows=max(args.sizes)
    )
    overhead = float(np.median([points[s]["outside_s"] for s in sizes]))
    cores = len(os.sched_getaffinity(0))
    client = study_client(workload, config["batch_size"], config["cpu_scale"], overhead)
    print(
        f"service: {service.overhead_s * 1e3:.1f} ms + rows / {service.rows_per_s:.0f} per "
        f"execution (<= {service.max_rows} rows); {overhead * 1e3:.1f} ms per request outside it"
    )

    rows = []
    print("| N | measured module s | model module s | error |")
    print("|---:|---:|---:|---:|")
    for point in summary["per_n"]:
        n = point["n_clients"]
        farm = FarmConfig(
            n, 1, client, service, events=config["events"], stagger_s=0.0, host_cores=cores
        )
        modelled = float(np.mean([
            simulate(FarmConfig(**{**farm.__dict__, "seed": s}))["module_s"] for s in range(args.seeds)
        ]))  # fmt: skip
        measured = point["module_s_steady_mean"]
        error = (modelled - measured) / measured
        rows.append({"clients": n, "measured_s": measured, "model_s": modelled, "error": error})
        print(f"| {n} | {measured:.3f} | {modelled:.3f} | {error:+.1%} |")
    worst = max(abs(r["error"]) for r in rows)
    print(f"largest error {worst:.1%} (goal: within 15% at every N)")
    harness.report(
        {
            "study": str(study),
            "service_probe": points,
            "service": service.__dict__,
            "request_overhead_s": overhead,
            "points": rows,
            "max_relative_error": worst,
        },
        args,
    )


if __name__ == "__main__":
    main()
