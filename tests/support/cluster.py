"""Shared pieces of the scale-out tests (no tests here): a tiny model repository, free ports.

The tiny model has the production model's name, inputs and outputs ("main_input"
[N,48,48,1] FP32 -> "em_trk_none_netout" [N,3] softmax, "michel_netout" [N,1] sigmoid)
but a single linear layer, so servers start in a fraction of a second and leave the two
shared cores to the load balancer and the clients.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from argonic.procs import port_free

MODEL_NAME = "emtrkmichelid"
PATCH = 48

CONFIG = """\
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{
  max_queue_delay_microseconds: 1000
  default_queue_policy {{ max_queue_size: {max_queue} }}
}}
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
"""


def tiny_onnx(path: Path, hidden: int = 64, seed: int = 7) -> Path:
    """Write a small ONNX network with the production input/output names; return ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((PATCH * PATCH, hidden)) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 3)) * 0.3).astype(np.float32)
    w3 = (rng.standard_normal((hidden, 1)) * 0.3).astype(np.float32)
    shape = np.array([-1, PATCH * PATCH], dtype=np.int64)
    nodes = [
        helper.make_node("Reshape", ["main_input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["em_trk_none_netout"], axis=-1),
        helper.make_node("MatMul", ["h", "w3"], ["m"]),
        helper.make_node("Sigmoid", ["m"], ["michel_netout"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_emtrkmichelid",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", PATCH, PATCH, 1])],
        [
            helper.make_tensor_value_info("em_trk_none_netout", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("michel_netout", TensorProto.FLOAT, ["N", 1]),
        ],
        [
            numpy_helper.from_array(a, n)
            for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"), (shape, "shape"))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def tiny_repository(
    root: Path, max_queue: int = 64, max_batch: int = 4096, hidden: int = 64
) -> Path:
    """A Triton-layout repository with the tiny model as ``emtrkmichelid`` version 1."""
    model_dir = root / MODEL_NAME
    if model_dir.exists():
        shutil.rmtree(model_dir)
    onnx_file = tiny_onnx(model_dir / "1" / "model.onnx", hidden=hidden)
    digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    (model_dir / "1" / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    (model_dir / "config.pbtxt").write_text(
        CONFIG.format(name=MODEL_NAME, max_batch=max_batch, max_queue=max_queue)
    )
    return root


def local_scores(repository: Path, patches: np.ndarray) -> dict[str, np.ndarray]:
    """The same model run in-process with ONNX Runtime: the independent reference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(repository / MODEL_NAME / "1" / "model.onnx"),
        options,
        providers=["CPUExecutionProvider"],
    )
    names = ["em_trk_none_netout", "michel_netout"]
    return dict(zip(names, session.run(names, {"main_input": patches}), strict=True))


def remote_config(repository: Path, servers: list[str], **remote) -> dict:
    """The [inference] table for argonic's RemoteInterface against the tiny model."""
    return {
        "batch_size": remote.pop("batch_size", 256),
        "remote": {
            "servers": servers,
            "model_repository": str(repository),
            "timeout_s": 30.0,
            "backoff_s": 0.05,
            "health_recheck_s": 1.0,
            **remote,
        },
    }


def scores_from(reference: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 4] [track, em, none, michel], the layout RemoteInterface.predict returns."""
    return np.concatenate([reference["em_trk_none_netout"], reference["michel_netout"]], axis=1)


def metric(text: str, name: str) -> float:
    """Sum of the samples of one metric in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(None, 1)[1])
    return total


def free_port_block(n: int, host: str = "127.0.0.1", start: int = 20000, stop: int = 32000) -> int:
    """A random port p below the ephemeral range with p .. p+n-1 all free on ``host`` now."""
    rng = np.random.default_rng()
    for _ in range(200):
        base = int(rng.integers(start, stop - n))
        if all(port_free(host, base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no block of {n} free ports found")


def random_patches(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, PATCH, PATCH, 1)).astype(np.float32)
