#!/usr/bin/env python3
"""Scale-out: throughput of 1..N `argonic serve` replicas behind nginx, the balancer's
overhead against direct connections, and the autoscaling metric against offered load.

    python benchmarks/bench_cluster.py [--model-repository models] [--duration 6]
        [--clients 4] [--batch 256] [--replicas 1 2 3] [--loads 1 2 4 8] [--rounds 3]
        [--json out.json]

Loads are closed loops: each client thread sends ModelInfer requests of ``--batch`` random
patches back to back (tritonclient, as perf_analyzer would) for ``--duration`` seconds
after a 1 s warm-up. Replicas get ``intra_op_thread_count`` = cores / replicas so they do
not oversubscribe the CPU (the model repository is copied to a temporary directory with
that parameter changed). The autoscaling metric is computed from each replica's /metrics
counters over the measurement window exactly as SuperSONIC's Prometheus query does:
delta(nv_inference_queue_duration_us) / (delta(nv_inference_exec_count) * 1000), in ms.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import harness
import numpy as np

from argonic.cluster import Cluster, health_check

ROOT = Path(__file__).resolve().parents[1]

HOST = "127.0.0.1"


def repository_with_threads(src: Path, dst: Path, threads: int) -> Path:
    """Copy ``src`` to ``dst`` with intra_op_thread_count set in every config.pbtxt."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for config in dst.glob("*/config.pbtxt"):
        text = config.read_text()
        text = re.sub(
            r'parameters\s*\{\s*key:\s*"intra_op_thread_count".*?\}\s*\}\s*',
            "",
            text,
            flags=re.DOTALL,
        )
        value = f'value {{ string_value: "{threads}" }}'
        text += f'\nparameters {{ key: "intra_op_thread_count" {value} }}\n'
        config.write_text(text)
    return dst


def scrape(endpoints: list[str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for ep in endpoints:
        with urllib.request.urlopen(f"http://{ep}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("nv_inference_"):
                    name = line.split("{", 1)[0].split(" ", 1)[0]
                    totals[name] = totals.get(name, 0.0) + float(line.rsplit(None, 1)[1])
    return totals


def closed_loop(
    endpoint: str, model: str, clients: int, batch: int, duration_s: float, metrics: list[str]
) -> dict[str, float]:
    """Back-to-back requests from ``clients`` threads; throughput and server-side deltas."""
    import tritonclient.grpc as tc

    x = np.random.default_rng(0).standard_normal((batch, 48, 48, 1)).astype(np.float32)
    start = threading.Barrier(clients + 1)
    measure_from = [0.0]
    stop_at = [0.0]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def run(i: int) -> None:
        client = tc.InferenceServerClient(endpoint)
        inp = tc.InferInput("main_input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        start.wait()
        while True:
            t = time.perf_counter()
            if t >= stop_at[0]:
                break
            try:
                client.infer(model, [inp], client_timeout=120)
            except tc.InferenceServerException:
                errors[i] += 1
                continue
            if t >= measure_from[0]:
                latencies[i].append(time.perf_counter() - t)
        client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    measure_from[0], stop_at[0] = now + 1.0, now + 1.0 + duration_s
    start.wait()
    time.sleep(1.0)
    before = scrape(metrics)
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    after = scrape(metrics)
    window = time.perf_counter() - t0
    lat = np.array([v for per in latencies for v in per])
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    execs = d.get("nv_inference_exec_count", 0.0)
    return {
        "clients": clients,
        "requests": int(lat.size),
        "errors": sum(errors),
        "patches_per_s": lat.size * batch / duration_s,
        "server_patches_per_s": d.get("nv_inference_count", 0.0) / window,
        "latency_ms_p50": float(np.median(lat) * 1e3) if lat.size else float("nan"),
        "latency_ms_p95": float(np.percentile(lat, 95) * 1e3) if lat.size else float("nan"),
        "queue_ms_per_execution": d.get("nv_inference_queue_duration_us", 0.0) / (execs * 1000)
        if execs
        else float("nan"),
        "mean_execution_batch": d.get("nv_inference_count", 0.0) / execs if execs else float("nan"),
    }


def run_cluster(repo: Path, replicas: int, run_dir: Path, base_port: int):
    return Cluster(
        repo,
        replicas,
        grpc_port=base_port,
        replica_port=base_port + 1,
        metrics_port=base_port + 1 + replicas,
        run_dir=run_dir,
        start_timeout_s=180,
    )


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--model-repository", default=str(ROOT / "models"))
    p.add_argument("--model", default="emtrkmichelid")
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per point")
    p.add_argument("--clients", type=int, default=4, help="client threads for the scale-out points")
    p.add_argument("--batch", type=int, default=256, help="patches per request")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument(
        "--loads",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="client counts for the autoscaling-metric curve (1 replica)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating direct/nginx rounds")
    p.add_argument("--base-port", type=int, default=31000)
    a = p.parse_args()

    cores = os.cpu_count() or 1
    src = Path(a.model_repository)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.harness.machine()['cpu']}, {cores} cores",
        "batch": a.batch,
        "duration_s": a.duration,
        "clients": a.clients,
        "scale_out": [],
        "overhead": [],
        "autoscaling_metric": [],
    }
    with tempfile.TemporaryDirectory(prefix="argonic-bench-") as tmp:
        tmp = Path(tmp)
        # 1. Balancer overhead: one replica, direct vs through nginx, same load, alternating
        #    rounds (direct, nginx, direct, nginx, ...) so drifts of a shared machine cancel.
        repo = repository_with_threads(src, tmp / "repo-1", cores)
        with run_cluster(repo, 1, tmp / "run-o", a.base_port) as c:
            scrape(c.metrics_endpoints())  # slow first scrape: warm it
            for k in range(a.rounds):
                for via, endpoint in (("direct", c.replica_endpoints()[0]), ("nginx", c.endpoint)):
                    r = closed_loop(
                        endpoint, a.model, a.clients, a.batch, a.duration / 2, c.metrics_endpoints()
                    )
                    results["overhead"].append(
                        {"via": via, "round": k, "loadavg": os.getloadavg()[0], **r}
                    )
                    print(
                        f"overhead  round {k} {via:6s}: {r['patches_per_s']:8.0f} patches/s, "
                        f"p50 {r['latency_ms_p50']:.1f} ms (load average {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
            rate = {
                v: [r["patches_per_s"] for r in results["overhead"] if r["via"] == v]
                for v in ("direct", "nginx")
            }
            ratios = [n / d for n, d in zip(rate["nginx"], rate["direct"], strict=True)]
            results["overhead_ratio_median"] = float(np.median(ratios))
            print(
                f"overhead  nginx / direct throughput, median of {a.rounds} rounds: "
                f"{np.median(ratios):.3f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})",
                flush=True,
            )
        # 2. Scale-out through nginx.
        for n in a.replicas:
            repo = repository_with_threads(src, tmp / f"repo-{n}", max(1, cores // n))
            with run_cluster(repo, n, tmp / f"run-{n}", a.base_port) as c:
                scrape(c.metrics_endpoints())  # slow first scrape: warm it
                r = closed_loop(
                    c.endpoint, a.model, a.clients, a.batch, a.duration, c.metrics_endpoints()
                )
                results["scale_out"].append(
                    {
                        "replicas": n,
                        "threads_per_replica": max(1, cores // n),
                        "loadavg": os.getloadavg()[0],
                        **r,
                    }
                )
                print(
                    f"scale-out {n} replica(s): {r['patches_per_s']:8.0f} patches/s, "
                    f"p50 {r['latency_ms_p50']:.1f} ms, "
                    f"queue/exec {r['queue_ms_per_execution']:.2f} ms "
                    f"(load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        # 3. The autoscaling metric against offered load (one replica behind nginx).
        repo = repository_with_threads(src, tmp / "repo-1", cores)
        with run_cluster(repo, 1, tmp / "run-a", a.base_port) as c:
            scrape(c.metrics_endpoints())  # slow first scrape: warm it
            assert health_check(c.replica_endpoints()[0])
            for clients in a.loads:
                r = closed_loop(
                    c.endpoint, a.model, clients, a.batch, a.duration, c.metrics_endpoints()
                )
                results["autoscaling_metric"].append({"loadavg": os.getloadavg()[0], **r})
                print(
                    f"load {clients:2d} client(s): {r['patches_per_s']:8.0f} patches/s, "
                    f"queue/exec {r['queue_ms_per_execution']:.2f} ms, "
                    f"mean execution batch {r['mean_execution_batch']:.0f} "
                    f"(load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    harness.report(results, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
