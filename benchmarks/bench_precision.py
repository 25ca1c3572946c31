"""Reduced precision (int8, bf16) against fp32: accuracy on held-out events, throughput
in-process and through `argonic serve`, and the fp32 roofline of this CPU.

Accuracy: every hit of the held-out events (``--hits`` draws a subset), scored by the fp32
network (ONNX Runtime), the int8 twin (ONNX Runtime) and the bf16 twin (the server's
PyTorch backend code, argonic.server.backends.onnx_torch; on a CPU without native bf16 it runs
emulated, so ``--bf16-hits`` limits it). Figures: share of hits with the same class
(argmax of the softmax head) and the same track-vs-em decision (track / (track + em) >
0.5), Michel score differences (max, mean), ROC AUCs against the truth.

Throughput: in-process at batch 256 and 1693 (best of interleaved rounds), then
perf_analyzer against `argonic serve` on the repository (concurrency 2), for every model
the server loads; inputs: patches of hits drawn from the held-out events. Roofline: the best
fp32 GFLOP/s of a 4096^3 matrix product in numpy, PyTorch or ONNX Runtime (they differ by up to 2x on one CPU: on a Zen 5 EPYC ONNX Runtime's
AVX-512 kernel reached 450, numpy's OpenBLAS 237) divided by 28.4 MFLOP per patch.

    python benchmarks/bench_precision.py --events test.h5 --perf-analyzer <perf_analyzer>
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import harness
import numpy as np
import onnxruntime as ort
from harness import (
    PERF_ANALYZER_PATCHES,
    Server,
    event_patches_sample,
    held_out,
    interleaved_best,
    matmul_probes,
)

from argonic.model.network import FLOP_PER_PATCH
from argonic.reco.evaluate import roc_curve, track_score
from argonic.repository.model_config import load_config
from argonic.server.backends import cpu
from argonic.server.backends.onnxruntime import graph_optimization_level

BATCHES = (256, 1693)


def ort_runner(model_file: Path):
    """session.run of the model with the session options the server gives it (graph level)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level(
        load_config(model_file.parent.parent)
    )
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    return lambda x: np.concatenate(session.run(None, {"main_input": x}), axis=1)


def torch_runner(model_file: Path, dtype: str):
    import torch

    from argonic.server.backends.onnx_torch import onnx_module

    module = onnx_module(model_file).to(getattr(torch, dtype))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(getattr(torch, dtype)))
        return torch.cat([out["em_trk_none_netout"], out["michel_netout"]], 1).float().numpy()

    return run


def scores(run, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])


def compare(ref: np.ndarray, got: np.ndarray, label: np.ndarray, michel: np.ndarray) -> dict:
    """Agreement with fp32 and AUCs against the truth of one precision's scores [N, 4]."""
    te = (label == 0) | (label == 1)
    diff = np.abs(got[:, 3] - ref[:, 3])
    return {
        "hits": len(got),
        "same_class": float(np.mean(got[:, :3].argmax(1) == ref[:, :3].argmax(1))),
        "same_track_em_decision": float(
            np.mean((track_score(got[te]) > 0.5) == (track_score(ref[te]) > 0.5))
        ),
        "michel_diff_max": float(diff.max()),
        "michel_diff_mean": float(diff.mean()),
        "auc_track_em": roc_curve(label[te] == 0, track_score(got[te]))[2],
        "auc_michel": roc_curve(michel.astype(bool), got[:, 3])[2],
    }


def accuracy(a: argparse.Namespace) -> dict:
    repo = a.model_repository
    fp32_file = repo / "emtrkmichelid" / "1" / "model.onnx"
    x, label, michel = held_out(a.events, a.hits, a.seed)
    ref = scores(ort_runner(fp32_file), x)
    out = {"fp32": compare(ref, ref, label, michel)}
    out["int8"] = compare(
        ref, scores(ort_runner(repo / "emtrkmichelid_int8" / "1" / "model.onnx"), x), label, michel
    )
    print(f"accuracy on {len(x)} held-out hits: fp32 / int8 done", flush=True)
    n = min(a.bf16_hits, len(x))
    pick = np.sort(np.random.default_rng(a.seed + 1).choice(len(x), n, replace=False))
    t0 = time.perf_counter()
    bf16 = scores(torch_runner(fp32_file, "bfloat16"), x[pick])
    out["bf16"] = compare(ref[pick], bf16, label[pick], michel[pick])
    out["bf16"]["native"] = cpu.native("bf16")
    out["bf16"]["patches_per_s_in_process_emulated"] = n / (time.perf_counter() - t0)
    return out


def throughput(a: argparse.Namespace) -> dict:
    repo = a.model_repository
    # real patches: the int8 twin re-runs near ties, so its speed depends on the inputs
    x = event_patches_sample(a.events, 2048, a.seed)
    probes = matmul_probes(2)
    runners = {
        "fp32": ort_runner(repo / "emtrkmichelid" / "1" / "model.onnx"),
        "int8": ort_runner(repo / "emtrkmichelid_int8" / "1" / "model.onnx"),
    }
    if cpu.native("bf16"):
        runners["bf16"] = torch_runner(repo / "emtrkmichelid" / "1" / "model.onnx", "bfloat16")
    for name, run in runners.items():
        for b in BATCHES:
            probes[f"{name} batch {b}"] = ((lambda run=run, b=b: run(x[:b])), b)
    best = interleaved_best(probes, a.rounds, a.window)
    gflops = {k.split()[-1]: best.pop(k) for k in list(best) if k.startswith("matmul ")}
    roofline = max(gflops.values()) * 1e9 / FLOP_PER_PATCH
    print("fp32 4096^3 matrix product, GFLOP/s:", {k: round(v) for k, v in gflops.items()})
    out = {"fp32_gflops": gflops, "roofline_patches_per_s": roofline}
    out["in_process"] = best
    for k, v in best.items():
        print(f"in-process {k:18s}: {v:7.0f} patches/s ({v / roofline:.2f} of the roofline)")
    if a.perf_analyzer:
        server = Server.argonic(repo)
        models = ["emtrkmichelid", "emtrkmichelid_int8"]
        if cpu.native("bf16"):  # the server loads the bf16 twin only where it is native
            models.append("emtrkmichelid_bf16")
        try:
            served = harness.served_rates(
                a.perf_analyzer,
                server.url,
                models,
                BATCHES,
                2,
                a.measurement_ms,
                x[:PERF_ANALYZER_PATCHES],
            )
        finally:
            server.stop()
        out["served"] = served
    return out


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=Path, required=True, help="held-out event file")
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--hits", type=int, default=0, help="hits drawn at random (0: all)")
    p.add_argument("--bf16-hits", type=int, default=10000, help="hits scored in bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perf-analyzer", default="", help="perf_analyzer binary (served figures)")
    p.add_argument("--measurement-ms", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--skip-accuracy", action="store_true")
    a = p.parse_args()
    results = {"machine": harness.machine()["cpu"], "cpu": cpu.describe(), "argv": sys.argv[1:]}
    if not a.skip_accuracy:
        results["accuracy"] = accuracy(a)
        print(json.dumps(results["accuracy"], indent=1))
    results["throughput"] = throughput(a)
    harness.report(results, a)


if __name__ == "__main__":
    main()
