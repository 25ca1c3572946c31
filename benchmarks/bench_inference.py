"""In-process inference throughput of EmTrackMichelId against this machine's fp32 roofline.

    python benchmarks/bench_inference.py [--threads 2] [--rounds 5] [--window 0.5] [--json]

In one run: (1) an fp32 matrix-product roofline (4096^3 with numpy, torch and an ONNX
Runtime MatMul); (2) the network's throughput (patches/s) through the local
ModelInterface for caller batches 1, 64, 256, 1693 with ONNX Runtime and PyTorch, and
the ratio to the roofline-implied rate (28.4 MFLOP per patch); (3) the training-step
rate; (4) ONNX Runtime session options and export forms at batch 256.
All probes are timed round-robin and the best round of each is kept, so that on this
shared, noisy machine every figure sees the same quiet moments.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
from harness import Probe, interleaved_best, matmul_probes

BATCHES = (1, 64, 256, 1693)


def network_probes(patches: np.ndarray, threads: int) -> dict[str, Probe]:
    """The local ModelInterface per backend and caller batch size (work unit: patches)."""
    from argonic.inference import make_interface

    probes: dict[str, Probe] = {}
    for backend in ("onnxruntime", "torch"):
        interface = make_interface(
            {"batch_size": max(BATCHES), "local": {"backend": backend, "threads": threads}}
        )
        for bs in BATCHES:
            probes[f"{backend} batch {bs}"] = (
                lambda i=interface, bs=bs: i.predict(patches[:bs]),
                bs,
            )
    return probes


def ort_variant_probes(patches: np.ndarray, threads: int) -> dict[str, Probe]:
    """ONNX Runtime session options and export forms at batch 256 (work unit: patches)."""
    import onnxruntime as ort

    from argonic.inference.local import OnnxRuntimeInterface
    from argonic.model.export import load_network
    from argonic.repository import onnx_path
    from argonic.settings import EXECUTION_BATCH_SIZE

    x = patches[:EXECUTION_BATCH_SIZE]
    probes: dict[str, Probe] = {}
    for level in ("basic", "extended", "all", "all-no-nchwc"):
        for t in sorted({1, threads}):
            i = OnnxRuntimeInterface(threads=t, graph_optimization=level)
            probes[f"ORT graph_optimization={level}, intra_op_threads={t}"] = (
                lambda i=i: i.predict(x),
                len(x),
            )
    unchunked = OnnxRuntimeInterface(threads=threads, execution_batch_size=max(BATCHES))
    probes["ORT batch 1693 in one execution (no chunking)"] = (
        lambda: unchunked.predict(patches[: max(BATCHES)]),
        max(BATCHES),
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    parallel = ort.InferenceSession(str(onnx_path()), options, providers=["CPUExecutionProvider"])
    probes["ORT execution_mode=parallel, graph_optimization=all"] = (
        lambda: parallel.run(None, {"main_input": x}),
        len(x),
    )
    keras = _keras_order_session(load_network(), threads)
    probes["ORT Keras-order graph (transpose before Flatten), graph_optimization=all"] = (
        lambda: keras.run(None, {"main_input": x}),
        len(x),
    )
    return probes


def _keras_order_session(network, threads: int):
    """A session on a direct export of the Keras-layout module (no weight permutation)."""
    import warnings

    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "keras.onnx"
        torch.onnx.export(
            network.eval(),
            (torch.zeros(2, 48, 48, 1),),
            str(path),
            dynamo=False,
            input_names=["main_input"],
            output_names=["a", "b"],
            dynamic_axes={"main_input": {0: "n"}},
            opset_version=17,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def training_probe(patches: np.ndarray) -> dict[str, Probe]:
    """One training step (forward, backward, Adam update) at batch 256 (work unit: patches)."""
    import torch

    from argonic.model.network import build_network
    from argonic.model.train import CE_WEIGHT, MSE_WEIGHT, TrainConfig, loss_terms, make_optimizer

    network = build_network(0).train()
    optimizer = make_optimizer(network, TrainConfig())
    x = torch.from_numpy(patches[:256])
    y, m = torch.randint(0, 3, (256,)), torch.randint(0, 2, (256,)).float()

    def step() -> None:
        ce, mse = loss_terms(network.logits(x), y, m)
        optimizer.zero_grad(set_to_none=True)
        (CE_WEIGHT * ce + MSE_WEIGHT * mse).backward()
        optimizer.step()

    return {"training step batch 256": (step, 256)}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="threads for every library")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds over all probes (best is kept)"
    )
    parser.add_argument("--window", type=float, default=0.5, help="seconds per probe per round")
    parser.add_argument("--skip-variants", action="store_true", help="skip the ORT option sweep")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    a = parser.parse_args()
    import torch

    from argonic.model.network import FLOP_PER_PATCH

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    patches = rng.uniform(-5, 15, (max(BATCHES), 48, 48, 1)).astype(np.float32)
    patches[rng.random(patches.shape) < 0.8] = 0.0
    probes = {
        **matmul_probes(a.threads),
        **network_probes(patches, a.threads),
        **training_probe(patches),
    }
    if not a.skip_variants:
        probes.update(ort_variant_probes(patches, a.threads))
    load_before = os.getloadavg()[0]
    best = interleaved_best(probes, a.rounds, a.window)
    gflops = {k.split()[1]: v for k, v in best.items() if k.startswith("matmul")}
    roof = max(gflops.values()) * 1e9 / FLOP_PER_PATCH
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": harness.harness.machine()["cpu"]["cpu"],
        "threads": a.threads,
        "rounds": a.rounds,
        "window_s": a.window,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "matmul_gflops": gflops,
        "roofline_patches_per_s": roof,
        "patches_per_s": {k: v for k, v in best.items() if not k.startswith("matmul")},
        "ratio_to_roofline": {k: v / roof for k, v in best.items() if not k.startswith("matmul")},
    }
    harness.report(result, a)
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['date']}  {result['machine']}  threads={a.threads}  load {load_before:.1f}")
    print(
        "matmul 4096^3 GFLOP/s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in gflops.items())
        + f"  -> roofline {roof:.0f} patches/s"
    )
    for name, rate in result["patches_per_s"].items():
        print(f"  {name:<75} {rate:8.0f} /s  {rate / roof:5.2f} of roofline")


if __name__ == "__main__":
    main()
