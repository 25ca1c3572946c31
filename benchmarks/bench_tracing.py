#!/usr/bin/env python3
"""What tracing costs the server: served throughput with tracing off, on at rate 1/1000
and on at rate 1 (every request), against the same server before tracing existed.

    python benchmarks/bench_tracing.py [--baseline b74e50d] [--rounds 4] [--requests 150]

Each configuration is one `argonic serve` (shipped models; with tracing, OTLP/HTTP to a real
receiver in this process, oteltest's sink); ``--baseline`` runs the same command from a git
worktree of that revision (PYTHONPATH), the code before tracing. The load: ``--connections``
closed-loop clients (argonic.study.loadgen) sending recorded patch-mode requests of
``--batch`` patches from a simulated ProtoDUNE-SP event; the rounds interleave the
configurations (each round runs every one) and the best round of each is compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import harness
import numpy as np

from argonic.procs import free_port, serve_command
from argonic.reco.simulation import simulate_file
from argonic.repository import shipped_repository
from argonic.study.loadgen import LoadSpec, run_load
from argonic.study.workload import recorded_requests

ROOT = Path(__file__).resolve().parents[1]


class _Ignore:
    def handle_trace(self, request, headers) -> None:  # noqa: ARG002
        self.spans = getattr(self, "spans", 0) + sum(
            len(s.spans) for r in request.resource_spans for s in r.scope_spans
        )

    def handle_metrics(self, request, headers) -> None:  # noqa: ARG002
        pass

    def handle_logs(self, request, headers) -> None:  # noqa: ARG002
        pass


@contextlib.contextmanager
def worktree(rev: str | None) -> Iterator[Path | None]:
    """A git worktree of ``rev`` (None: nothing)."""
    if rev is None:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="argonic-baseline-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), rev], check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)  # fmt: skip


def server(src: Path | None, trace: list[str]) -> harness.Server:
    command = serve_command(shipped_repository(), grpc_port=0, metrics_port=None, http_port=None)
    flags = [f"--trace-config={t}" for t in trace]
    env = ["env", f"PYTHONPATH={src / 'src'}"] if src else []
    return harness.Server([*env, *command, *flags], r"gRPC on 127\.0\.0\.1:(\d+)")


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--baseline", default="b74e50d", help="revision before tracing ('': none)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--requests", type=int, default=150, help="requests per connection per run")
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()

    from oteltest.sink import HttpSink

    port = free_port()
    sink_listener = _Ignore()
    sink = HttpSink(sink_listener, logging.getLogger("oteltest"), port=port)
    sink.start()
    url = f"opentelemetry,url=127.0.0.1:{port}/v1/traces"
    on = ["mode=opentelemetry", url, "level=TIMESTAMPS"]
    with tempfile.TemporaryDirectory() as tmp, worktree(args.baseline or None) as base:
        events = Path(tmp) / "events.h5"
        simulate_file(events, "protodune-sp", 1, seed=1, show_progress=False)
        payloads = recorded_requests(events, "patch", args.batch)
        configs = {
            "off": (None, []),
            "on, rate 1/1000": (None, [*on, "rate=1000"]),
            "on, rate 1": (None, [*on, "rate=1"]),
        }
        if base is not None:
            configs = {f"before tracing ({args.baseline})": (base, []), **configs}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        spec = LoadSpec(args.connections, args.requests)
        for r in range(args.rounds):
            for name, (src, trace) in configs.items():
                s = server(src, trace)
                try:
                    asyncio.run(run_load(s.url, payloads, LoadSpec(args.connections, 5)))  # warm
                    report = asyncio.run(run_load(s.url, payloads, spec))
                finally:
                    s.stop()
                assert report["lost"] == 0 and report["unclean_statuses"] == 0
                rates[name].append(report["requests_per_s"] * args.batch)
                print(f"round {r + 1} {name}: {rates[name][-1]:.0f} patches/s")
    sink.stop()
    reference = max(rates["off"]) if base is None else max(next(iter(rates.values())))
    print(f"| configuration | best patches/s | median | vs {'off' if base is None else 'before'} |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        print(f"| {name} | {max(values):.0f} | {np.median(values):.0f} | "
              f"{max(values) / reference - 1:+.1%} |")  # fmt: skip
    print(f"spans received by the OTLP sink: {getattr(sink_listener, 'spans', 0)}")
    harness.report({"rates": rates, "spans_received": getattr(sink_listener, "spans", 0)}, args)


if __name__ == "__main__":
    main()
