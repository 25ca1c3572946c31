"""The one tiny model of the tests: emtrkmichelid's names and shapes, a linear layer per head.

``tiny_onnx`` writes it with onnx.helper (the tests never depend on the shipped CNN),
``torchscript_heads`` the same model as TorchScript,
``reference_heads`` computes its outputs with numpy and ``ort_scores`` with ONNX Runtime in
this process: independent truth for every server and client test. ``tiny_repository``
lays it out as a Triton model repository (config.pbtxt, 1/model.onnx, 1/model.onnx.sha256).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MODEL = "emtrkmichelid"
FEATURES = 48 * 48
OUTPUTS = ("em_trk_none_netout", "michel_netout")

CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ {michel} ] }}
]
{extra}
"""


def head_weights(seed: int = 0, michel: int = 1) -> dict[str, np.ndarray]:
    """Weights of the tiny model: a linear layer per head on the flattened patch."""
    rng = np.random.default_rng(seed)
    return {
        "w3": rng.normal(0, 0.05, (FEATURES, 3)).astype(np.float32),
        "b3": rng.normal(0, 0.1, 3).astype(np.float32),
        "w1": rng.normal(0, 0.05, (FEATURES, michel)).astype(np.float32),
        "b1": rng.normal(0, 0.1, michel).astype(np.float32),
    }


def reference_heads(patches: np.ndarray, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """numpy truth for the tiny model: softmax(x W3 + b3), sigmoid(x W1 + b1)."""
    x = patches.reshape(len(patches), FEATURES).astype(np.float64)
    logits = x @ w["w3"] + w["b3"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)), 1.0 / (1.0 + np.exp(-(x @ w["w1"] + w["b1"])))


def tiny_onnx(path: Path, seed: int = 0, michel: int = 1, layers: int = 0) -> Path:
    """Write the tiny model (``michel`` outputs on the Michel head) to ``path``.

    ``layers`` > 0 puts that many dense 2304x2304 ReLU layers (~10 MFLOP per row each) before
    the heads: a model slow enough for tests that must fill a server's queue (then
    ``reference_heads`` does not apply).
    """
    rng = np.random.default_rng(seed)
    w = head_weights(seed, michel)
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
        "tiny_emtrkmichelid",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [
            helper.make_tensor_value_info("em_trk_none_netout", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("michel_netout", TensorProto.FLOAT, ["N", michel]),
        ],
        inits,
    )
    return save_onnx(graph, path)


def identity_onnx(path: Path) -> Path:
    """Write an identity model on [N, 48, 48, 1] (input main_input, output "output")."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["main_input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 48, 48, 1])],
    )
    return save_onnx(graph, path)


def save_onnx(graph: onnx.GraphProto, path: Path) -> Path:
    """Check and save a graph as an opset-17 model; return ``path``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_repository(
    root: Path,
    *,
    name: str = MODEL,
    seed: int = 0,
    michel: int = 1,
    max_batch_size: int = 4096,
    extra: str = "dynamic_batching { }",
    layers: int = 0,
) -> Path:
    """``root`` as a repository holding the tiny model as ``name`` version 1 (with sha256)."""
    model_file = tiny_onnx(root / name / "1" / "model.onnx", seed, michel, layers)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    (model_file.parent / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    (root / name / "config.pbtxt").write_text(
        CONFIG.format(name=name, max_batch_size=max_batch_size, michel=michel, extra=extra)
    )
    return root


def ort_scores(repository: Path, patches: np.ndarray, name: str = MODEL) -> np.ndarray:
    """Independent truth: ONNX Runtime in this process, [N, 4] [track, em, none, michel]."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(repository / name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    softmax, michel = session.run(list(OUTPUTS), {"main_input": patches})
    return np.concatenate([softmax, michel], axis=1)


def random_patches(n: int, seed: int = 1) -> np.ndarray:
    """Sparse non-negative patches, like deconvolved charge around hits."""
    rng = np.random.default_rng(seed)
    patches = rng.exponential(2.0, (n, 48, 48, 1)).astype(np.float32)
    patches[rng.random(patches.shape) < 0.8] = 0.0
    return patches


def torchscript_heads(path: Path, seed: int) -> None:
    """The CNN-like test model as a TorchScript module (two heads on the flattened patch)."""
    import torch

    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = head_weights(seed)
            self.softmax_head = torch.nn.Linear(FEATURES, 3)
            self.michel_head = torch.nn.Linear(FEATURES, 1)
            with torch.no_grad():
                self.softmax_head.weight.copy_(torch.from_numpy(w["w3"].T))
                self.softmax_head.bias.copy_(torch.from_numpy(w["b3"]))
                self.michel_head.weight.copy_(torch.from_numpy(w["w1"].T))
                self.michel_head.bias.copy_(torch.from_numpy(w["b1"]))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat = x.reshape(x.shape[0], -1)
            return torch.softmax(self.softmax_head(flat), dim=1), torch.sigmoid(
                self.michel_head(flat)
            )

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Heads()).save(str(path))
