"""Soak: N minutes at ~80% of capacity behind `argonic cluster` (two replicas), one replica
restarted in the middle; RSS, throughput and errors over time, plotted to a PNG.

    python benchmarks/bench_soak.py --minutes 20 --model-repository models \\
        --png benchmarks/results/soak.png --json benchmarks/results/soak.json

The cluster runs in the foreground mode of `argonic cluster up` (it restarts a replica that
exits). Capacity is measured first through the balancer (closed loop, 8 requests in
flight); then open-loop clients send ModelInfer requests of mixed batch sizes (64, 256,
1024, 1693 patches) at ``--load`` x capacity in patches/s; a request refused with
UNAVAILABLE is retried (exponential backoff up to 2 s, for at most ``--retry-seconds``),
any other failure counts as an error. Half-way
one replica gets SIGTERM (it drains, exits, and the cluster starts it again). Every
``--window`` seconds: patches/s answered, errors, retries, p99 latency and each replica's
RSS (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import harness
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from argonic import procs

BATCHES = (64, 256, 1024, 1693)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cli(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "argonic.cli", *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def replica_pids(run_dir: Path) -> list[int]:
    """pids of the replicas from `argonic cluster status` (restarted ones included)."""
    try:
        status = cli("cluster", "status", "--run-dir", str(run_dir))
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return []
    procs = status.get("processes", [])
    return [int(p["pid"]) for p in procs if p.get("role") == "replica" and p.get("alive")]


def repository_copy(src: Path, dst: Path, threads: int, execution_batch_size: str) -> Path:
    """The repository with one ONNX Runtime thread per replica (two replicas, two cores) and
    a fixed execution_batch_size (calibrating "auto" on one thread takes minutes at start)."""
    shutil.copytree(src, dst)
    for config in dst.glob("*/config.pbtxt"):
        text = config.read_text().replace('"auto"', f'"{execution_batch_size}"')
        value = f'value {{ string_value: "{threads}" }}'
        config.write_text(text + f'\nparameters {{ key: "intra_op_thread_count" {value} }}\n')
    return dst


def make_request(rows: int, rng: np.random.Generator) -> pb.ModelInferRequest:
    x = rng.exponential(2.0, (rows, 48, 48, 1)).astype(np.float32)
    x[rng.random(x.shape) < 0.8] = 0.0
    msg = pb.ModelInferRequest(model_name="emtrkmichelid")
    msg.inputs.add(name="main_input", datatype="FP32", shape=list(x.shape))
    msg.raw_input_contents.append(x.tobytes())
    return msg


class Recorder:
    """Per-window counters."""

    def __init__(self) -> None:
        self.rows = self.errors = self.retries = 0
        self.latencies: list[float] = []
        self.codes: dict[str, int] = {}  # final failures by status, whole run

    def take(self) -> tuple[int, int, int, list[float]]:
        out = (self.rows, self.errors, self.retries, self.latencies)
        self.rows = self.errors = self.retries = 0
        self.latencies = []
        return out


async def capacity(stub, pool: dict[int, pb.ModelInferRequest], seconds: float) -> float:
    """Patches/s through the balancer with 8 requests of the mixed batch sizes in flight."""
    rows, stop, pick = 0, time.monotonic() + seconds, random.Random(2)

    async def worker() -> None:
        nonlocal rows
        while time.monotonic() < stop:
            size = pick.choice(BATCHES)
            await stub.ModelInfer(pool[size], timeout=120)
            rows += size

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(8)))
    return rows / (time.monotonic() - start)


async def soak(a: argparse.Namespace, address: str, run_dir: Path, cluster: subprocess.Popen):
    rng = np.random.default_rng(0)
    pool = {b: make_request(b, rng) for b in BATCHES}
    options = [("grpc.max_send_message_length", 1 << 28)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await capacity(stub, pool, 5.0)  # warm-up
        cap = await capacity(stub, pool, a.capacity_seconds)
        rate = a.load * cap  # patches/s offered
        rec = Recorder()
        pick = random.Random(1)
        tasks: set[asyncio.Task] = set()

        async def one(rows: int) -> None:
            code, give_up = "retries exhausted", time.monotonic() + a.retry_seconds
            for attempt in range(10_000):
                t0 = time.monotonic()
                try:
                    await stub.ModelInfer(pool[rows], timeout=300)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and t0 < give_up:
                        rec.retries += 1
                        backoff = min(2.0, 0.1 * 2 ** min(attempt, 5))
                        await asyncio.sleep(backoff * (0.5 + pick.random()))
                        continue
                    code = f"{exc.code().name}: {(exc.details() or '')[:80]}"
                    break
                rec.rows += rows
                rec.latencies.append(time.monotonic() - t0)
                return
            rec.errors += 1
            rec.codes[code] = rec.codes.get(code, 0) + 1

        async def offer(until: float) -> None:
            while time.monotonic() < until:
                rows = pick.choice(BATCHES)
                task = asyncio.create_task(one(rows))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(pick.expovariate(rate / rows))

        start = time.monotonic()
        end = start + a.minutes * 60
        offering = asyncio.create_task(offer(end))
        series, restarted_at, restarted = [], None, False
        while time.monotonic() < end:
            await asyncio.sleep(a.window)
            t = time.monotonic() - start
            if not restarted and t >= a.minutes * 30:
                pids = await asyncio.to_thread(replica_pids, run_dir)
                if pids:
                    os.kill(pids[0], signal.SIGTERM)
                    restarted, restarted_at = True, round(t, 1)
            rows, errors, retries, lat = rec.take()
            pids = await asyncio.to_thread(replica_pids, run_dir)  # the CLI: off the loop
            series.append(
                {
                    "t_s": round(t, 1),
                    "patches_per_s": round(rows / a.window, 1),
                    "errors": errors,
                    "retries": retries,
                    "p99_s": round(float(np.percentile(lat, 99)), 3) if lat else None,
                    "rss_mb": [round(rss_mb(p)) for p in pids],
                    "in_flight": len(tasks),
                }
            )
            print(json.dumps(series[-1]), flush=True)
        await offering
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        rows, errors, retries, _ = rec.take()
        series[-1]["errors"] += errors
    return {
        "capacity_patches_per_s": round(cap, 1),
        "offered_patches_per_s": round(rate, 1),
        "restart_at_s": restarted_at,
        "error_codes": rec.codes,
        "series": series,
    }


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["series"]
    t = [p["t_s"] / 60 for p in s]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for i in range(max(len(p["rss_mb"]) for p in s)):
        axes[0].plot(t, [p["rss_mb"][i] if len(p["rss_mb"]) > i else np.nan for p in s])
    axes[0].set_ylabel("replica RSS (MB)")
    axes[1].plot(t, [p["patches_per_s"] for p in s])
    axes[1].axhline(result["offered_patches_per_s"], ls="--", c="gray", label="offered")
    axes[1].set_ylabel("patches/s answered")
    axes[1].legend(loc="lower right")
    axes[2].plot(t, np.cumsum([p["errors"] for p in s]), label="errors (cumulative)")
    axes[2].plot(t, np.cumsum([p["retries"] for p in s]), label="retries (cumulative)")
    axes[2].set_ylabel("count")
    axes[2].set_xlabel("minutes")
    axes[2].legend(loc="upper left")
    if result["restart_at_s"] is not None:
        for ax in axes:
            ax.axvline(result["restart_at_s"] / 60, c="red", lw=0.8)
    fig.suptitle(
        f"soak: {result['minutes']} min at {result['load']:.0%} of capacity, "
        "2 replicas, one restarted (red)"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=80)


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity")
    parser.add_argument("--model-repository", default="models")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per sample")
    parser.add_argument("--capacity-seconds", type=float, default=30.0)
    parser.add_argument("--execution-batch-size", default="256")
    parser.add_argument("--retry-seconds", type=float, default=120.0)
    parser.add_argument("--png", default="benchmarks/results/soak.png")
    a = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the cluster on the way out
    with tempfile.TemporaryDirectory() as tmp:
        repo = repository_copy(
            Path(a.model_repository), Path(tmp) / "models", 1, a.execution_batch_size
        )
        run_dir = Path(tmp) / "cluster"
        port = procs.free_port()
        replica_port = procs.free_port()
        command = [sys.executable, "-m", "argonic.cli", "cluster", "up", "--foreground"]
        command += ["--replicas", "2", "--model-repository", str(repo), "--grpc-port", str(port)]
        command += ["--replica-port", str(replica_port), "--run-dir", str(run_dir)]
        command += ["--metrics-port", str(procs.free_port())]
        log = (Path(tmp) / "cluster.log").open("wb")
        cluster = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            address = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while len(replica_pids(run_dir)) < 2 or not _serving(address):
                if time.monotonic() > deadline or cluster.poll() is not None:
                    raise RuntimeError((Path(tmp) / "cluster.log").read_text()[-3000:])
                time.sleep(2)
            result = asyncio.run(soak(a, address, run_dir, cluster))
        finally:
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(120)
    result.update(
        minutes=a.minutes,
        load=a.load,
        date=time.strftime("%Y-%m-%d"),
        errors=sum(p["errors"] for p in result["series"]),
        retries=sum(p["retries"] for p in result["series"]),
    )
    harness.report(result, a)
    plot(result, Path(a.png))
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready
        except grpc.RpcError:
            return False


if __name__ == "__main__":
    main()
