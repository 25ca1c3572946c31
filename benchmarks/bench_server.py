"""Served throughput (argonic serve + NVIDIA perf_analyzer) vs in-process ONNX Runtime.

For each batch size: (1) ONNX Runtime in this process, one session.run after another (with
``--instances`` above 1 also that many sessions sharing the cores, in threads; the ratios
are to the better of the two);
(2) ``argonic serve`` in a child process on 127.0.0.1, measured by perf_analyzer over gRPC,
once per ``--execution-batch-sizes`` value (the server's chunk size; "max" = no split), and
per ``--shared-memory`` mode (``system``: perf_analyzer puts the tensors in /dev/shm and
sends only their descriptions, as a client on the server's host can).
Optionally (``--identity``) an identity model on the same patches measures the protocol
alone. Installing perf_analyzer: see benchmarks/BENCHMARKS.md, section "Server".

    python benchmarks/bench_server.py --model-repository models --model emtrkmichelid \\
        --perf-analyzer tools/pa/tritonclient-2.41.0.data/data/bin/perf_analyzer \\
        --batch-sizes 256 1693 --concurrency 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import harness
import numpy as np
import onnxruntime as ort
from harness import (
    PERF_ANALYZER_PATCHES,
    Server,
    event_patches_sample,
    perf_analyzer,
    scratch_repository,
)

from argonic.repository.model_config import load_config
from argonic.server.backends.onnxruntime import graph_optimization_level


def ort_throughput(
    model_file: Path, batch: int, seconds: float, sessions: int = 1, x: np.ndarray | None = None
) -> float:
    """Patches/s of back-to-back session.run calls at one batch size (after one warm-up),
    with the session options the server gives this model (its config's graph level).
    ``sessions`` > 1: that many sessions of cores / sessions threads, each run back to back
    in its own thread (what N server instances do, without the server). Inputs: the first
    ``batch`` rows of ``x`` (repeated if fewer), else uniform noise."""
    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level(
        load_config(model_file.parent.parent)
    )
    if sessions > 1:
        options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)) // sessions)
    if x is None:
        x = np.random.default_rng(0).random((batch, 48, 48, 1), dtype=np.float32)
    x = np.ascontiguousarray(np.resize(x, (batch, 48, 48, 1)), np.float32)
    rates = [0.0] * sessions
    all_ready = threading.Barrier(sessions)

    def loop(i: int) -> None:
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})
        all_ready.wait()
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {name: x})
            runs += 1
        rates[i] = runs * batch / (time.perf_counter() - start)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(rates)


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--model", default="emtrkmichelid")
    p.add_argument("--perf-analyzer", default=shutil.which("perf_analyzer") or "perf_analyzer")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1693])
    p.add_argument(
        "--execution-batch-sizes",
        nargs="+",
        default=["256"],
        help='server chunk sizes to compare ("max": max_batch_size, i.e. no split)',
    )
    p.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config.pbtxt parameter for the served model (repeatable)",
    )
    p.add_argument(
        "--instances",
        type=int,
        nargs="+",
        default=[1],
        help="CPU instance counts to compare (instance_group count; they share the cores)",
    )
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument(
        "--rounds", type=int, default=1, help="(in-process, served) pairs per batch size"
    )
    p.add_argument("--measurement-ms", type=int, default=5000)
    p.add_argument("--ort-seconds", type=float, default=8.0)
    p.add_argument(
        "--stability-percentage",
        type=int,
        default=50,
        help="perf_analyzer -s (this shared 2-core machine is noisy)",
    )
    p.add_argument(
        "--events-file",
        type=Path,
        help="inputs: patches of hits drawn from this event file (default: patch-like noise)",
    )
    p.add_argument(
        "--shared-memory",
        nargs="+",
        choices=("none", "system"),
        default=["none"],
        help="perf_analyzer --shared-memory modes to compare: none (tensors on the gRPC socket) "
        "or system (tensors in /dev/shm: a client on the server's host)",
    )
    p.add_argument("--identity", action="store_true", help="also measure an identity model")
    p.add_argument(
        "--pytriton-python",
        help="python of a virtualenv with nvidia-pytriton: also "
        "measure a real Triton serving the same ONNX file (see bench_server_pytriton.py)",
    )
    a = p.parse_args()

    model_file = a.model_repository / a.model / "1" / "model.onnx"
    repos, servers = [], {}
    try:  # all servers up (idle) first, then every batch size measured back to back on each
        for exec_size in a.execution_batch_sizes:
            for instances in a.instances:
                identity = a.identity and not repos
                repos.append(
                    scratch_repository(
                        a.model_repository, a.model, exec_size, identity, a.parameter, instances
                    )
                )
                name = f"argonic exec {exec_size}" + (f" x{instances}" if instances > 1 else "")
                servers[name] = Server.argonic(repos[-1])
        if a.pytriton_python:
            servers["Triton (PyTriton)"] = Server.pytriton(a.pytriton_python, model_file)
        results = measure(a, model_file, servers)
    finally:
        codes = {name: server.stop() for name, server in servers.items()}
        for repo in repos:
            shutil.rmtree(repo, ignore_errors=True)
    if any(code != 0 for name, code in codes.items() if name.startswith("argonic")):
        raise SystemExit(f"argonic serve did not exit 0 on SIGTERM: {codes}")
    harness.report(results, a)


def measure(a: argparse.Namespace, model_file: Path, servers: dict[str, Server]) -> dict:
    """In-process ORT, then each server, per batch size (ratios within one run)."""
    results: dict = {"ort_in_process": {}, "served": {}, "identity": {}, "ratios": {}}
    real = event_patches_sample(a.events_file, 2048) if a.events_file else None
    for batch in a.batch_sizes:
        # rounds of (in-process, each server) back to back: a ratio per round, so the
        # shared machine's slow and fast spells hit both sides of each ratio alike
        for r in range(a.rounds):
            # in-process: the best of one session of every core (the local interface) and
            # as many sessions sharing the cores as the most instances served
            locals_ = {
                n: ort_throughput(model_file, batch, a.ort_seconds, n, real)
                for n in sorted({1, max(a.instances)})
            }
            local = max(locals_.values())
            results["ort_in_process"].setdefault(batch, []).append(local)
            for n, rate in locals_.items():
                results.setdefault("ort_in_process_sessions", {}).setdefault(
                    f"{n}/{batch}", []
                ).append(rate)
                label = "in-process ORT" + (f" x{n}" if n > 1 else "")
                print(f"round {r} {label:24s} batch {batch:5d}: {rate:7.0f} patches/s", flush=True)
            for (server_name, server), shm in itertools.product(servers.items(), a.shared_memory):
                rate, p99 = perf_analyzer(
                    a.perf_analyzer,
                    server.url,
                    a.model,
                    batch,
                    a.concurrency,
                    a.measurement_ms,
                    a.stability_percentage,
                    extra=() if shm == "none" else ("--shared-memory", shm),
                    real=None if real is None else real[:PERF_ANALYZER_PATCHES],
                )
                name = server_name + ("" if shm == "none" else f" shm {shm}")
                key = f"{name}/{batch}"
                results["served"].setdefault(key, []).append(rate)
                results.setdefault("p99_ms", {}).setdefault(key, []).append(p99)
                results["ratios"].setdefault(key, []).append(rate / local)
                print(
                    f"round {r} {name:24s} batch {batch:5d}: {rate:7.0f} patches/s "
                    f"({rate / local:.2f}x in-process), p99 {p99:.0f} ms",
                    flush=True,
                )
    for key, ratios in results["ratios"].items():
        print(
            f"{key:32s} served / in-process: median {statistics.median(ratios):.3f} "
            f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    if a.identity:
        url = next(iter(servers.values())).url
        for batch in (1, *a.batch_sizes):
            rate = results["identity"][batch] = perf_analyzer(
                a.perf_analyzer,
                url,
                "identity",
                batch,
                a.concurrency,
                a.measurement_ms,
                a.stability_percentage,
            )[0]
            print(
                f"{'argonic identity':24s} batch {batch:5d}: {rate:7.0f} patches/s "
                f"({rate * 48 * 48 * 4 / 1e6:.0f} MB/s each way)",
                flush=True,
            )
    return results


if __name__ == "__main__":
    main()
