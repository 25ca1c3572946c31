#!/usr/bin/env python3
"""Thousands of client connections against one `argonic serve` and against `argonic cluster`.

    python benchmarks/bench_load.py [--connections 2000] [--requests 3] [--overload 2]
        [--mode patch] [--batch 16] [--targets serve cluster] [--replicas 2]
        [--max-queue-size N]

The requests are recorded from a simulated ProtoDUNE-SP event (``--events-file``, or one
simulated here): what argonic's client sends in patch mode (``--batch`` patches each) or in
plane mode (one request per TPC plane). For each target:

1. idle: the clients connect and send nothing (the servers' memory per open connection);
2. burst: ``--connections`` clients, ``--requests`` each, as fast as answered (a farm's
   jobs all starting at once); its answered requests per second are the capacity;
3. overload: the same clients paced at ``--overload`` x that capacity in all.

Each run reports answered / lost requests, the refusals by status (UNAVAILABLE and
RESOURCE_EXHAUSTED are clean; CANCELLED and others are not), latency percentiles, Jain's
fairness index of the per-client throughput, and the servers' resident memory (nginx's
included for the cluster) before and after, and its peak during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import harness
from google.protobuf import text_format

from argonic.cluster import Cluster
from argonic.reco.simulation import simulate_file
from argonic.repository import shipped_repository
from argonic.repository.model_config import load_config
from argonic.study.loadgen import LoadSpec, format_load, run_load
from argonic.study.workload import recorded_requests


def memory_mb(pids: list[int]) -> dict[str, float]:
    """Resident and peak resident memory of ``pids`` together (MB, /proc/PID/status)."""
    total = {"VmRSS": 0.0, "VmHWM": 0.0}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in total:
                total[key] += int(line.split()[1]) / 1024
    return {"rss_mb": total["VmRSS"], "peak_mb": total["VmHWM"]}


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [pid, *(p for k in kids for p in tree(k))]


def repository(max_queue_size: int | None, root: Path) -> Path:
    """The shipped repository, or a copy whose models queue up to ``max_queue_size``
    requests (0: unbounded; the in-flight bytes cap still bounds memory)."""
    if max_queue_size is None:
        return shipped_repository()
    shutil.copytree(shipped_repository(), root)
    for config_file in root.glob("*/config.pbtxt"):
        config = load_config(config_file.parent)
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.default_queue_policy.max_queue_size = max_queue_size
            config_file.write_text(text_format.MessageToString(config))
    return root


@contextlib.contextmanager
def target(name: str, replicas: int, repo: Path, run_dir: Path) -> Iterator[tuple[str, list[int]]]:
    """(address, server pids) of one `argonic serve` or of an `argonic cluster`."""
    if name == "serve":
        with harness.served(repo) as server:
            yield server.url, [server.process.pid]
        return
    with Cluster.on_free_ports(repo, replicas, run_dir=run_dir, start_timeout_s=180) as cluster:
        pids = [p.pid for p in [*cluster.replicas, cluster.balancer] if p is not None]
        yield cluster.endpoint, [q for p in pids for q in tree(p)]


def reset_peak(pids: list[int]) -> None:
    """Start the peak resident memory (VmHWM) anew: the load's own peak, not start-up's."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure(address: str, pids: list[int], payloads: list[bytes], spec: LoadSpec) -> dict:
    reset_peak(pids)
    before = memory_mb(pids)
    report = asyncio.run(run_load(address, payloads, spec, lambda: memory_mb(pids)))
    after = memory_mb(pids)
    report["memory_mb"] = {"before": before, "connected": report.pop("connected"), "after": after}
    grown = report["memory_mb"]["connected"]["rss_mb"] - before["rss_mb"]
    report["mb_per_connection"] = grown / spec.connections
    return report


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--requests", type=int, default=3, help="requests per client")
    p.add_argument("--overload", type=float, default=2.0, help="offered load / capacity")
    p.add_argument("--mode", choices=["patch", "plane"], default="patch")
    p.add_argument("--batch", type=int, default=16, help="patches per patch-mode request")
    p.add_argument(
        "--targets", nargs="+", choices=["serve", "cluster"], default=["serve", "cluster"]
    )
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--events-file", type=Path, default=None)
    p.add_argument(
        "--max-queue-size",
        type=int,
        default=None,
        help="serve a copy of the shipped models with this queue bound (default: shipped's)",
    )
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        events = args.events_file
        if events is None:
            events = Path(tmp) / "events.h5"
            simulate_file(events, "protodune-sp", 1, seed=1, show_progress=False)
        payloads = recorded_requests(events, args.mode, args.batch)
        print(
            f"{len(payloads)} recorded {args.mode}-mode requests, "
            f"{sum(map(len, payloads)) / len(payloads) / 1e3:.0f} kB each"
        )
        results = {}
        repo = repository(args.max_queue_size, Path(tmp) / "models")
        for name in args.targets:
            with target(name, args.replicas, repo, Path(tmp) / "cluster") as (address, pids):
                idle = measure(address, pids, payloads, LoadSpec(args.connections, 0))
                print(
                    f"[{name}] {args.connections} idle connections: server memory "
                    f"{idle['memory_mb']['before']['rss_mb']:.0f} -> "
                    f"{idle['memory_mb']['connected']['rss_mb']:.0f} MB, "
                    f"{idle['mb_per_connection'] * 1e3:.1f} kB per connection"
                )
                runs = {"idle": idle}
                burst = LoadSpec(args.connections, args.requests)
                runs["burst"] = measure(address, pids, payloads, burst)
                # what the server answers with every connection open, offered twice over
                capacity = runs["burst"]["requests_per_s"]
                rate = args.overload * capacity / args.connections
                runs["overload"] = measure(
                    address, pids, payloads, LoadSpec(args.connections, args.requests, rate)
                )
                for label in ("burst", "overload"):
                    r = runs[label]
                    m = r["memory_mb"]
                    print(f"[{name}] {label}:\n{format_load(r)}")
                    print(
                        f"server memory MB: before {m['before']['rss_mb']:.0f}, after "
                        f"{m['after']['rss_mb']:.0f}, peak {m['after']['peak_mb']:.0f}"
                    )
                results[name] = runs
    harness.report({"results": results}, args)


if __name__ == "__main__":
    main()
