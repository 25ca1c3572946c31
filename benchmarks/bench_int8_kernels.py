"""The int8 twin on each of ONNX Runtime's int8 kernels, and the options for CPUs without VNNI.

ONNX Runtime multiplies uint8 activations by int8 weights (U8S8) with VNNI or AMX where the
CPU has them (int32 sums) and otherwise with AVX2 / AVX-512BW's vpmaddubsw, which adds two
products into int16 with saturation: 8-bit weights can overflow there. The options, each
built here from the shipped fp32 network exactly as `argonic quantize` builds the twin
(each with the near-tie re-run, its weights plus their rounding residuals):

- ``w8 u8s8``: 8-bit weights (|w| <= 127), as in the twin shipped until 2026-12-07;
- ``w7 u8s8``: 7-bit weights (|w| <= 63), exact on every kernel (shipped since 2026-12-07);
- ``w8 u8u8``: 8-bit weights stored as uint8 with zero point 128 (U8U8 kernels, no pair
  saturation on any CPU).

For each: the share of held-out hits keeping their fp32 class, whether the Dense layer's
int32 sums equal the exact integer product of its own uint8 / int8 inputs, and in-process
patches/s at batch 256 and 1693 beside the fp32 network and the fp32 roofline (best 4096^3
matrix product of numpy, PyTorch, ONNX Runtime / 28.4 MFLOP per patch), all in one run.

``--emulate MODEL`` also runs the accuracy part on ``--emulated-hits`` hits inside
``qemu-x86_64 -cpu MODEL`` (Debian's qemu-user; ``Haswell``: AVX2 without AVX-512 or VNNI,
so ONNX Runtime takes its non-VNNI kernels) and compares each model's classes there with the
same model's on the host. Speed under emulation means nothing and is not measured.

    python benchmarks/bench_int8_kernels.py --events test.h5 --calibration calib.h5 \
        --emulate Haswell --emulated-hits 256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
import numpy as np
import onnx
import onnxruntime as ort
from harness import held_out, interleaved_best, matmul_probes
from onnx import numpy_helper

from argonic.detector.eventfile import EventFile
from argonic.model.quantize import _equalised, quantise_dense
from argonic.patches import sampled_patches
from argonic.repository import shipped_repository
from argonic.server.backends import cpu

FLOP_PER_PATCH = 28.4e6
BATCHES = (256, 1693)


def u8u8(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same twin with its int8 weights stored as uint8 + 128 and zero point 128."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    weights = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    for t in model.graph.initializer:
        if t.name in weights:
            w = numpy_helper.to_array(t).astype(np.int16) + 128
            t.CopyFrom(numpy_helper.from_array(w.astype(np.uint8), t.name))
    model.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), "w_zp128"))
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in weights:
            node.input[:] = [node.input[0], node.input[1], "", "w_zp128"]
    return model


def build(network: Path, calibration: Path, patches: int, out: Path) -> dict[str, Path]:
    """fp32 and the three twins, calibrated like `argonic quantize` (same draw), as files."""
    with EventFile(calibration) as f:
        pool = sampled_patches(f, f.detector, patches, np.random.default_rng(0))
    equalised, act = _equalised(onnx.load(str(network)), pool)
    models = {
        "w8 u8s8": quantise_dense(equalised, act, weight_max=127),
        "w7 u8s8": quantise_dense(equalised, act, weight_max=63),
    }
    models["w8 u8u8"] = u8u8(models["w8 u8s8"])
    files = {"fp32": out / "fp32.onnx"}
    shutil.copy(network, files["fp32"])
    for name, model in models.items():
        files[name] = out / f"{name.replace(' ', '_')}.onnx"
        onnx.save(_with_dense_probe(model), str(files[name]))
    return files


def _with_dense_probe(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the first MatMulInteger's inputs and int32 output as extra outputs."""
    node = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    for name, kind in (
        (node.input[0], onnx.TensorProto.UINT8),
        (node.output[0], onnx.TensorProto.INT32),
    ):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, kind, None))
    return model


def run(files: dict[str, Path], x: np.ndarray, exact_rows: int = 2048) -> dict[str, dict]:
    """Per model: scores [N, 4] and, for the twins, the Dense layer's largest integer error
    on the first ``exact_rows`` rows (float64 products: exact below 2^53)."""
    out = {}
    for name, file in files.items():
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        model = onnx.load(str(file))
        init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        node = next((n for n in model.graph.node if n.op_type == "MatMulInteger"), None)
        scores, worst = [], 0
        for i in range(0, len(x), 256):
            got = session.run(None, {"main_input": x[i : i + 256]})
            scores.append(np.concatenate(got[:2], axis=1))
            if node is not None and i < exact_rows:
                zp = int(init[node.input[3]]) if len(node.input) > 3 else 0
                exact = got[2].astype(np.float64) @ (init[node.input[1]].astype(np.float64) - zp)
                worst = max(worst, int(np.abs(got[3] - exact).max()))
        out[name] = {"scores": np.concatenate(scores)}
        if node is not None:
            out[name]["dense_max_error"] = worst
    return out


def classes(result: dict[str, dict]) -> dict[str, dict]:
    """Share of hits with fp32's class, and the Dense layer's worst integer error."""
    ref = result["fp32"]["scores"][:, :3].argmax(1)
    return {
        name: {
            "same_class_as_fp32": float(np.mean(r["scores"][:, :3].argmax(1) == ref)),
            "dense_max_error": r.get("dense_max_error"),
        }
        for name, r in result.items()
        if name != "fp32"
    }


def emulated(a: argparse.Namespace, files: dict[str, Path], x: np.ndarray, work: Path) -> dict:
    """The accuracy part inside qemu-x86_64 -cpu MODEL, compared with the host's run."""
    np.save(work / "x.npy", x)
    (work / "files.json").write_text(json.dumps({k: str(v) for k, v in files.items()}))
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        sys.exit("--emulate needs qemu-x86_64 (apt-get install qemu-user)")
    child = [qemu, "-cpu", a.emulate, sys.executable, __file__, "--child", str(work)]
    subprocess.run(child, check=True, stderr=subprocess.DEVNULL)
    there = json.loads((work / "child.json").read_text())
    here = run(files, x)
    out = {"cpu": a.emulate, "hits": len(x), "saturating_kernel": there.pop("saturating")}
    for name, r in there.items():
        s = np.asarray(r["scores"])
        out[name] = {
            "same_class_as_host": float(
                np.mean(s[:, :3].argmax(1) == here[name]["scores"][:, :3].argmax(1))
            ),
            "max_score_difference_to_host": float(np.abs(s - here[name]["scores"]).max()),
            "dense_max_error": r.get("dense_max_error"),
        }
    return out


def child(work: Path) -> None:
    files = {k: Path(v) for k, v in json.loads((work / "files.json").read_text()).items()}
    result = run(files, np.load(work / "x.npy"))
    out: dict = {"saturating": cpu.u8s8_saturates()}
    for name, r in result.items():
        out[name] = {"scores": r["scores"].tolist(), "dense_max_error": r.get("dense_max_error")}
    (work / "child.json").write_text(json.dumps(out))


def speed(files: dict[str, Path], x: np.ndarray, rounds: int, window: float) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {
        n: ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])
        for n, f in files.items()
    }
    probes = {
        f"{n} batch {b}": (lambda s=s, b=b: s.run(None, {"main_input": x[:b]}), b)
        for n, s in sessions.items()
        for b in BATCHES
    }
    probes |= matmul_probes(2)
    best = interleaved_best(probes, rounds, window)
    roofline = max(v for k, v in best.items() if k.startswith("matmul")) * 1e9 / FLOP_PER_PATCH
    return {
        "roofline_patches_per_s": roofline,
        **{
            k: {"patches_per_s": v, "of_roofline": v / roofline}
            for k, v in best.items()
            if not k.startswith("matmul")
        },
    }


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=Path, help="held-out events (argonic simulate)")
    p.add_argument("--calibration", type=Path, help="calibration events (argonic quantize's)")
    p.add_argument("--calibration-patches", type=int, default=4096)
    p.add_argument("--hits", type=int, default=None, help="held-out hits (default: all)")
    p.add_argument("--emulate", default=None, help="qemu CPU model, e.g. Haswell")
    p.add_argument("--emulated-hits", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "-o", "--output", type=Path, default=Path(__file__).parent / "results" / "int8_kernels.json"
    )
    a = p.parse_args()
    if a.child is not None:
        return child(a.child)
    if a.events is None or a.calibration is None:
        p.error("--events and --calibration are required")
    network = shipped_repository() / "emtrkmichelid" / "1" / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = build(network, a.calibration, a.calibration_patches, work)
        x, _, _ = held_out(a.events, a.hits, 0)
        result = {
            "machine": harness.machine()["cpu"],
            "cpu": cpu.describe(),
            "int8_kernel": cpu.int8_kernels(),
            "held_out_hits": len(x),
            "host": classes(run(files, x)),
        }
        print(json.dumps(result, indent=1), flush=True)
        result["speed"] = speed(files, x[: max(BATCHES)], a.rounds, a.window)
        if a.emulate:
            pick = np.random.default_rng(1).choice(len(x), a.emulated_hits, replace=False)
            result["emulated"] = emulated(a, files, x[np.sort(pick)], work)
    print(json.dumps(result, indent=1))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
