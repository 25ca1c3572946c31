"""Run inside an emulated CPU (``qemu-x86_64 -cpu Haswell python int8_kernel.py WORK``) by
tests/model/test_int8_kernels.py: what ONNX Runtime's int8 kernel does there, and what the
server makes of the shipped int8 twin and of a twin with 8-bit weights. Reads WORK/act.npy
(uint8 activations of the twin's Dense layer, computed on the host) and WORK/w8.onnx (a
model with 8-bit weights); writes each model's Dense-layer sums (WORK/<name>_sums.npy, for
the host to compare with the exact product: emulated numpy would be slow) and
WORK/result.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from argonic.repository import read_config, shipped_repository
from argonic.repository.model_config import InstanceSpec
from argonic.server.backends import cpu
from argonic.server.backends.onnxruntime import OnnxRuntimeBackend
from argonic.server.errors import HostUnsupported


def dense_sums(weights: np.ndarray, act: np.ndarray) -> np.ndarray:
    """ONNX Runtime's MatMulInteger of uint8 ``act`` and int8 ``weights`` [in, out]."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "dense",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, weights.shape[1]])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"a": act})[0]


def dense_weights(model_file: Path) -> np.ndarray:
    """The int8 weights [in, out] of the Dense layer (not the re-run's residuals)."""
    model = onnx.load(str(model_file))
    name = next(n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger")
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def main(work: Path) -> None:
    twin = shipped_repository() / "emtrkmichelid_int8"
    act = np.load(work / "act.npy")
    result: dict = {"saturates": cpu.u8s8_saturates(), "kernel": cpu.int8_kernels()}
    for name, file in (("shipped", twin / "1" / "model.onnx"), ("w8", work / "w8.onnx")):
        np.save(work / f"{name}_sums.npy", dense_sums(dense_weights(file), act))
        result[name] = {}
        config = read_config(twin)
        try:
            backend = OnnxRuntimeBackend(config, file, InstanceSpec("cpu"))
            backend.close()
            result[name]["loaded"] = config.parameters["int8_kernel"].string_value
        except HostUnsupported as exc:
            result[name]["refused"] = str(exc)
    (work / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
