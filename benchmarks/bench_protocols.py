"""HTTP/REST vs gRPC, argonic serve vs a real Triton (PyTriton), shared memory vs the wire:
all with NVIDIA perf_analyzer as the client, every figure from one run (ratios).

    python benchmarks/bench_protocols.py --perf-analyzer PATH/perf_analyzer \\
        --pytriton-python PATH/bin/python --json benchmarks/results/protocols.json

Measures: the shipped model at batch 256 and 1693 over HTTP and gRPC (argonic serve; Triton
over HTTP and gRPC), an identity model at batch 1 over HTTP (requests/s, argonic vs Triton),
and patch requests at batch 256 with system shared memory vs over the wire (gRPC and HTTP).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import harness
from harness import Server, perf_analyzer, scratch_repository

from argonic.procs import serve_command


def argonic_server(repository: Path) -> Server:
    """`argonic serve` with gRPC and HTTP on free ports (``http_url``: the HTTP host:port)."""
    server = Server(
        serve_command(repository, grpc_port=0, metrics_port=None, http_port=0),
        r"gRPC on 127\.0\.0\.1:(\d+), HTTP on http://127\.0\.0\.1:(\d+)",
    )
    server.http_url = f"127.0.0.1:{server.match.group(2)}"
    return server


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--model", default="emtrkmichelid")
    p.add_argument("--perf-analyzer", default=shutil.which("perf_analyzer") or "perf_analyzer")
    p.add_argument("--pytriton-python", help="python of a virtualenv with nvidia-pytriton")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--measurement-ms", type=int, default=3000)
    p.add_argument("--stability-percentage", type=int, default=50)
    a = p.parse_args()

    repo = scratch_repository(a.model_repository, a.model, "256", True, [])
    servers = {}
    results: dict[str, float] = {}
    try:
        servers["argonic"] = argonic_server(repo)
        if a.pytriton_python:
            script = Path(__file__).with_name("bench_server_pytriton.py")
            model_file = a.model_repository / a.model / "1" / "model.onnx"
            servers["Triton"] = Server(
                [a.pytriton_python, str(script), "--model-file", str(model_file), "--identity"],
                r"READY (\d+)",
                "stdout",
            )
            port = int(servers["Triton"].url.rsplit(":", 1)[1])
            servers["Triton"].http_url = f"127.0.0.1:{port + 1}"

        def run(name: str, server: str, protocol: str, model: str, batch: int, *extra: str):
            s = servers[server]
            url = s.http_url if protocol == "http" else s.url
            rate, p99 = perf_analyzer(
                a.perf_analyzer,
                url,
                model,
                batch,
                a.concurrency,
                a.measurement_ms,
                a.stability_percentage,
                protocol,
                extra,
            )
            results[name] = rate
            unit = "requests/s" if batch == 1 else "patches/s"
            print(f"{name:48s} {rate:9.0f} {unit}, p99 {p99:.1f} ms", flush=True)

        for batch in (256, 1693):
            for protocol in ("grpc", "http"):
                run(f"argonic {protocol} {a.model} b{batch}", "argonic", protocol, a.model, batch)
            if "Triton" in servers:
                for protocol in ("grpc", "http"):
                    run(f"Triton {protocol} {a.model} b{batch}", "Triton", protocol, a.model, batch)
        run("argonic http identity b1", "argonic", "http", "identity", 1)
        if "Triton" in servers:
            run("Triton http identity b1", "Triton", "http", "identity", 1)
        shm = ("--shared-memory", "system", "--output-shared-memory-size", str(1693 * 48 * 48 * 4))
        for model in (a.model, "identity"):
            for protocol in ("grpc", "http"):
                run(f"argonic {protocol} {model} b256 wire", "argonic", protocol, model, 256)
                run(f"argonic {protocol} {model} b256 shm", "argonic", protocol, model, 256, *shm)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(repo, ignore_errors=True)
    harness.report(results, a)


if __name__ == "__main__":
    main()
