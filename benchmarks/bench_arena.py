"""ONNX Runtime's CPU memory arena after calibration-sized executions, four ways.

    python benchmarks/bench_arena.py --model models/emtrkmichelid/1/model.onnx

For each way, in a fresh process: RSS after loading the session, after running the
calibration candidates (64, 256, 1024, 2048 rows), after the fix (if any), after 6 s of
256-row executions, and the rows/s of those. Ways: ``default`` (one session, arena on: what
argonic serve did before), ``recreate`` (a fresh session after calibration: what it does
now, calibration on a throw-away instance), ``noarena`` (``enable_cpu_mem_arena`` off),
``shrink`` (run option ``memory.enable_memory_arena_shrinkage``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import harness

WAYS = ("default", "recreate", "noarena", "shrink")


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(model: str, way: str) -> str:
    import numpy as np
    import onnxruntime as ort

    def session() -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = way != "noarena"
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    s = session()
    loaded = rss_mb()
    run = ort.RunOptions()
    if way == "shrink":
        run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    rng = np.random.default_rng(0)
    name = s.get_inputs()[0].name
    for n in (64, 256, 1024, 2048):
        s.run(None, {name: rng.random((n, 48, 48, 1), dtype=np.float32)}, run)
    calibrated = rss_mb()
    if way == "recreate":
        del s
        s = session()
    fixed = rss_mb()
    x = rng.random((256, 48, 48, 1), dtype=np.float32)
    s.run(None, {name: x}, run)
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < 6:
        s.run(None, {name: x}, run)
        k += 1
    rate = k * 256 / (time.perf_counter() - start)
    return (
        f"| {way} | {loaded:.0f} | {calibrated:.0f} | {fixed:.0f} | {rss_mb():.0f} | {rate:.0f} |"
    )


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", default="models/emtrkmichelid/1/model.onnx")
    parser.add_argument("--way", choices=WAYS)
    a = parser.parse_args()
    if a.way:
        print(measure(a.model, a.way))
        return
    print(
        "| way | RSS loaded MB | after calibration | after fix | after 256-row runs | rows/s at 256 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for way in WAYS:
        out = subprocess.run(
            [sys.executable, __file__, "--model", a.model, "--way", way],
            capture_output=True,
            text=True,
            check=True,
        )
        rows[way] = out.stdout.strip()
        print(rows[way])
    harness.report({"rows": rows}, a)


if __name__ == "__main__":
    main()
