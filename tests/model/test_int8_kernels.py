"""The int8 twin computes the exact integer product on every x86-64 int8 kernel of ONNX
Runtime, and the server refuses int8 weights a kernel would saturate on.

The host of a test run may have VNNI (int32 sums) or not (AVX2's int16 pair sums, which
saturate): the non-VNNI path is run on every machine inside an emulated Haswell (Debian's
qemu-user: AVX2, no AVX-512, no VNNI), where ONNX Runtime takes that kernel by itself."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support.int8_kernel import dense_weights

from argonic.detector.eventfile import EventFile
from argonic.patches import event_patches
from argonic.repository import shipped_repository
from argonic.server.backends import cpu

TWIN = shipped_repository() / "emtrkmichelid_int8" / "1" / "model.onnx"
CHILD = Path(__file__).parents[1] / "support" / "int8_kernel.py"


def test_shipped_int8_weights_fit_the_saturating_kernel() -> None:
    """7-bit weights (the Dense layer's and the re-run's residuals): no two products of
    uint8 activations can overflow int16."""
    weights = cpu.integer_matmul_weights(TWIN)
    assert len(weights) == 2 and all(w.dtype == np.int8 for w in weights)
    for w in weights:
        assert 0 < np.abs(w.astype(np.int16)).max() <= cpu.INT16_PAIR_SAFE_WEIGHT
    assert np.iinfo(np.int16).max >= 2 * 255 * cpu.INT16_PAIR_SAFE_WEIGHT


def test_the_kernel_probe_agrees_with_the_cpu_flags() -> None:
    """On x86-64 the probed kernel saturates exactly where the CPU has AVX2 but no VNNI."""
    flags = cpu.features()
    if platform.machine() not in ("x86_64", "AMD64") or not flags:
        pytest.skip("the flags say which kernel ONNX Runtime takes on x86-64 only")
    vnni = bool(flags & {"avx512_vnni", "avxvnni", "avx_vnni", "amx_int8"})
    assert cpu.u8s8_saturates() == (not vnni and "avx2" in flags)
    assert ("no VNNI" in cpu.int8_kernels()) == cpu.u8s8_saturates()


def _dense_activations(patches: np.ndarray) -> np.ndarray:
    """The shipped twin's uint8 Dense-layer inputs for ``patches``."""
    model = onnx.load(str(TWIN))
    node = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.UINT8, None)
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([node.input[0]], {"main_input": patches})[0]


def _eight_bit_twin(path: Path) -> np.ndarray:
    """The shipped twin with its int8 weights rescaled to 8 bits (|w| up to 127), as the
    twin shipped until 2026-12-07 had them; returns the Dense layer's [in, out]."""
    model = onnx.load(str(TWIN))
    dense = next(n for n in model.graph.node if n.op_type == "MatMulInteger").input[1]
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8:
            w = np.rint(onnx.numpy_helper.to_array(init) * (127 / 63)).astype(np.int8)
            init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
            if init.name == dense:
                out = w
    onnx.save(model, str(path))
    return out


def _overflows_int16_pairs(act: np.ndarray, weights: np.ndarray) -> bool:
    """Whether a sum of two neighbouring products (what vpmaddubsw adds in int16) leaves
    the int16 range for these activations: where a pairwise kernel saturates. Exact
    integer arithmetic in numpy, a few output columns at a time."""
    a = act.astype(np.int32)[:, : act.shape[1] // 2 * 2].reshape(len(act), -1, 2)
    w = weights.astype(np.int32)[: a.shape[1] * 2].reshape(-1, 2, weights.shape[1])
    for column in range(w.shape[2]):
        pairs = a[:, :, 0] * w[None, :, 0, column] + a[:, :, 1] * w[None, :, 1, column]
        if ((pairs > np.iinfo(np.int16).max) | (pairs < np.iinfo(np.int16).min)).any():
            return True
    return False


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="emulates an x86-64 CPU")
def test_on_an_emulated_cpu_without_vnni(mini_events: Path, tmp_path: Path) -> None:
    """Inside qemu's Haswell: the probe finds the saturating kernel (else this test would
    prove nothing); there the shipped twin's Dense layer equals the exact integer product on
    real patches and the server loads it, naming the kernel; the same activations overflow
    8-bit weights there (the error the 7-bit weights avoid), and the server refuses such a
    model with a message naming VNNI."""
    qemu = shutil.which("qemu-x86_64")
    with EventFile(mini_events) as f:
        patches = event_patches(f[0], f.detector)[:128]
    act = _dense_activations(patches)
    np.save(tmp_path / "act.npy", act)
    w8 = _eight_bit_twin(tmp_path / "w8.onnx")
    shipped = dense_weights(TWIN)
    assert _overflows_int16_pairs(act, w8)  # these real activations do overflow 8 bits
    subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, str(CHILD), str(tmp_path)],
        check=True,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["saturates"], result["kernel"]

    def error(name: str, weights: np.ndarray) -> int:
        exact = act.astype(np.int64) @ weights.astype(np.int64)
        return int(np.abs(np.load(tmp_path / f"{name}_sums.npy") - exact).max())

    assert error("shipped", shipped) == 0
    assert "no VNNI" in result["shipped"]["loaded"]
    assert error("w8", w8) > 0
    assert "VNNI" in result["w8"]["refused"] and "argonic quantize" in result["w8"]["refused"]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="emulates an x86-64 CPU")
def test_openvino_int8_model_on_an_emulated_cpu_without_vnni(
    mini_events: Path, tmp_path: Path
) -> None:
    """The shipped OpenVINO int8 model inside qemu's Haswell (AVX2, no VNNI, no AMX): OpenVINO
    still compiles the convolution and Dense 128 to u8 (so the int8 kernels of that CPU are
    what ran), and every patch gets the class it gets on this host's CPU, scores within 0.02
    (0.0048 measured on 512 held-out ProtoDUNE-SP patches against an AMX host)."""
    from argonic.inference.local import RepositoryInterface

    qemu = shutil.which("qemu-x86_64")
    with EventFile(mini_events) as f:
        patches = event_patches(f[0], f.detector)[:256]
    np.save(tmp_path / "x.npy", patches)
    with RepositoryInterface("emtrkmichelid_openvino") as interface:
        host = interface.predict(patches)
    child = Path(__file__).parents[1] / "support" / "openvino_kernel.py"
    subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, str(child), str(tmp_path)],
        check=True,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    layers = json.loads((tmp_path / "ov.json").read_text())
    assert ["Convolution", "u8"] in layers and ["FullyConnected", "u8"] in layers
    emulated = np.load(tmp_path / "ov_scores.npy")
    np.testing.assert_array_equal(emulated[:, :3].argmax(1), host[:, :3].argmax(1))
    assert np.abs(emulated - host).max() < 0.02
