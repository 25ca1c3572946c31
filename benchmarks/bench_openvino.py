"""The quantization-aware int8 model (OpenVINO) against the fp32 roofline, in one run.

Issue #27's speed goal: the int8 model served by ``argonic serve`` (perf_analyzer, real
event patches, batch 256 and 1693) at >= 1.5x the fp32 roofline-implied rate of the same
CPU (the best fp32 4096^3 matrix product of numpy, PyTorch and ONNX Runtime, measured in the
same run, / 28.4 MFLOP per patch). Measured here, interleaved:

- the roofline;
- in-process, each model through the backend ``argonic serve`` loads for it
  (``RepositoryInterface``): the fp32 network (ONNX Runtime) and the int8 model (OpenVINO);
- served: one ``argonic serve`` with both models, perf_analyzer over gRPC, concurrency 2
  (``--instances``: CPU instances per model);
- the CPU's instruction set (AVX2 only, AVX-512, AVX-512 VNNI, AMX).

    python benchmarks/bench_openvino.py --events test.h5 \\
        --perf-analyzer tools/pa/tritonclient-2.41.0.data/data/bin/perf_analyzer
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import harness
from bench_precision import BATCHES
from harness import (
    Server,
    event_patches_sample,
    interleaved_best,
    matmul_probes,
    scratch_repository,
)

from argonic.inference.local import RepositoryInterface
from argonic.model.network import FLOP_PER_PATCH

MODELS = ("emtrkmichelid", "emtrkmichelid_openvino")


def instruction_set() -> str:
    """The CPU's matrix instruction set as the issue names it."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "amx_int8" in flags:
        return "AMX (with AVX-512 VNNI)"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx512f" in flags:
        return "AVX-512 without VNNI"
    return "AVX2 only" if "avx2" in flags else "no AVX2"


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=Path, required=True, help="held-out event file")
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--perf-analyzer", required=True, help="perf_analyzer binary")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--measurement-ms", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--instances", type=int, default=1, help="CPU instances per served model")

    a = p.parse_args()
    x = event_patches_sample(a.events, 2 * max(BATCHES))
    out: dict = {
        "machine": harness.machine()["cpu"],
        "instruction_set": instruction_set(),
        "argv": sys.argv[1:],
    }
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    probes = matmul_probes(2)
    interfaces = [
        RepositoryInterface(m, a.model_repository, batch_size=max(BATCHES)) for m in MODELS
    ]
    for model, interface in zip(MODELS, interfaces, strict=True):
        for b in BATCHES:
            probes[f"in-process {model} batch {b}"] = (lambda i=interface, b=b: i.predict(x[:b]), b)
    best = interleaved_best(probes, a.rounds, a.window)
    for interface in interfaces:
        interface.close()
    gflops = {k.split()[-1]: best.pop(k) for k in list(best) if k.startswith("matmul ")}
    roofline = max(gflops.values()) * 1e9 / FLOP_PER_PATCH
    out.update(fp32_gflops=gflops, roofline_patches_per_s=roofline, in_process=best)

    served: dict[str, dict] = {}
    roots = [
        scratch_repository(a.model_repository, m, "256", False, [], a.instances) for m in MODELS
    ]
    root = roots[0]
    shutil.move(roots[1] / MODELS[1], root / MODELS[1])
    server = Server.argonic(root)
    try:
        served = harness.served_rates(
            a.perf_analyzer,
            server.url,
            MODELS,
            BATCHES,
            a.concurrency,
            a.measurement_ms,
            x,
            a.rounds,
        )
    finally:
        server.stop()
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
    out["served"] = served
    print(f"{out['machine']}; {out['instruction_set']}")
    print(f"roofline {roofline:,.0f} patches/s ({max(gflops.values()):.0f} GFLOP/s)")
    for name, rate in best.items():
        print(f"{name:45s} {rate:9,.0f} patches/s  {rate / roofline:5.2f} x roofline")
    for name, row in served.items():
        rate = row["patches_per_s"] or 0.0
        print(f"served {name:38s} {rate:9,.0f} patches/s  {rate / roofline:5.2f} x roofline")
    harness.report(out, a)


if __name__ == "__main__":
    main()
