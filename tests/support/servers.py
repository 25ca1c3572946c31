"""Test helpers for the inference server: small model repositories built on the fly.

The models are written with onnx.helper / torch.jit so the tests never depend on the
shipped CNN; ``reference_heads`` computes the same outputs with numpy as independent truth.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from argonic.server import register_backend

PATCH = (48, 48, 1)
FEATURES = 48 * 48

CNN_LIKE_CONFIG = """
name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch_size}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ 1 ] }}
]
{extra}
"""

IDENTITY_CONFIG = """
name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch_size}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [ {{ name: "output" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
{extra}
"""


def head_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of the CNN-like test model: a linear layer per head on the flattened patch."""
    rng = np.random.default_rng(seed)
    return {
        "w3": rng.normal(0, 0.05, (FEATURES, 3)).astype(np.float32),
        "b3": rng.normal(0, 0.1, 3).astype(np.float32),
        "w1": rng.normal(0, 0.05, (FEATURES, 1)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 1).astype(np.float32),
    }


def reference_heads(patches: np.ndarray, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """numpy truth for the CNN-like model: softmax(x W3 + b3), sigmoid(x W1 + b1)."""
    x = patches.reshape(len(patches), FEATURES).astype(np.float64)
    logits = x @ w["w3"] + w["b3"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)), 1.0 / (1.0 + np.exp(-(x @ w["w1"] + w["b1"])))


def cnn_like_onnx(path: Path, seed: int = 0) -> None:
    """Write the CNN-like model (same input/output names and shapes as emtrkmichelid)."""
    w = head_weights(seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([-1, FEATURES], np.int64), "flat_shape"))
    nodes = [
        helper.make_node("Reshape", ["main_input", "flat_shape"], ["x"]),
        helper.make_node("MatMul", ["x", "w3"], ["l3"]),
        helper.make_node("Add", ["l3", "b3"], ["z3"]),
        helper.make_node("Softmax", ["z3"], ["em_trk_none_netout"], axis=-1),
        helper.make_node("MatMul", ["x", "w1"], ["l1"]),
        helper.make_node("Add", ["l1", "b1"], ["z1"]),
        helper.make_node("Sigmoid", ["z1"], ["michel_netout"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn_like",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [
            helper.make_tensor_value_info("em_trk_none_netout", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("michel_netout", TensorProto.FLOAT, ["N", 1]),
        ],
        inits,
    )
    _save(graph, path)


def identity_onnx(path: Path) -> None:
    """Write an identity model on [N, 48, 48, 1] (input main_input, output "output")."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["main_input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 48, 48, 1])],
    )
    _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_model(
    repo: Path,
    name: str,
    template: str,
    *,
    platform: str = "onnxruntime_onnx",
    max_batch_size: int = 4096,
    extra: str = "",
    versions: dict[int, callable] | None = None,
) -> Path:
    """Create ``repo/name`` with a config and one writer(path) per version directory."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(
        template.format(name=name, platform=platform, max_batch_size=max_batch_size, extra=extra)
    )
    for version, write in (versions or {}).items():
        write(model_dir / str(version))
    return model_dir


# --- a backend the tests can hold: every execution waits until its gate opens -------------

GATES: dict[str, threading.Event] = {}
EXECUTIONS: dict[str, list[list[float]]] = {}  # per gate: each execution's first pixel per row


class GateBackend:
    """Identity backend that blocks each execution until ``GATES[gate]`` is set.

    Each execution is recorded (first pixel of every row) so tests can see batching and order.
    """

    def __init__(self, config, model_file: Path, instance) -> None:
        self.gate = config.parameters["gate"].string_value
        GATES.setdefault(self.gate, threading.Event())
        EXECUTIONS.setdefault(self.gate, [])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        EXECUTIONS[self.gate].append(inputs["main_input"][:, 0, 0, 0].tolist())
        if not GATES[self.gate].wait(30):
            raise RuntimeError("test gate never opened")
        return {"output": np.array(inputs["main_input"])}

    def close(self) -> None:
        pass


register_backend("argonic_test_gate", GateBackend)


def marked(n: int, marker: float) -> np.ndarray:
    """``n`` patches whose first pixel is ``marker`` (to recognise a request's rows in a batch)."""
    x = np.random.default_rng(int(marker * 1000) % 2**32).random((n, *PATCH), dtype=np.float32)
    x[:, 0, 0, 0] = marker
    return x


def gate_model(repo: Path, name: str, extra: str = "", max_batch_size: int = 64) -> None:
    """An identity model on the gate backend; its gate is named after the model."""
    GATES[name] = threading.Event()
    EXECUTIONS[name] = []
    add_model(
        repo,
        name,
        IDENTITY_CONFIG,
        platform="argonic_test_gate",
        max_batch_size=max_batch_size,
        extra=extra + f'\nparameters {{ key: "gate" value {{ string_value: "{name}" }} }}',
        versions={
            1: lambda d: (d.mkdir(parents=True, exist_ok=True), (d / "model").write_bytes(b"gate"))
        },
    )


def heavy_onnx(path: Path, layers: int = 2, seed: int = 0) -> None:
    """The CNN-like model behind ``layers`` dense 2304x2304 ReLU layers (~10 MFLOP per row
    each): slow enough that 32 Python clients can overload a server on two cores."""
    rng = np.random.default_rng(seed)
    w = head_weights(seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([-1, FEATURES], np.int64), "flat_shape"))
    nodes = [helper.make_node("Reshape", ["main_input", "flat_shape"], ["h0"])]
    for i in range(layers):
        dense = rng.normal(0, 1.0 / 48, (FEATURES, FEATURES)).astype(np.float32)
        inits.append(numpy_helper.from_array(dense, f"d{i}"))
        nodes += [
            helper.make_node("MatMul", [f"h{i}", f"d{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"]),
        ]
    x = f"h{layers}"
    nodes += [
        helper.make_node("MatMul", [x, "w3"], ["l3"]),
        helper.make_node("Add", ["l3", "b3"], ["z3"]),
        helper.make_node("Softmax", ["z3"], ["em_trk_none_netout"], axis=-1),
        helper.make_node("MatMul", [x, "w1"], ["l1"]),
        helper.make_node("Add", ["l1", "b1"], ["z1"]),
        helper.make_node("Sigmoid", ["z1"], ["michel_netout"]),
    ]
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [
            helper.make_tensor_value_info("em_trk_none_netout", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("michel_netout", TensorProto.FLOAT, ["N", 1]),
        ],
        inits,
    )
    _save(graph, path)
