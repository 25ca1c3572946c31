"""The tiny emtrkmichelid-like model, its repository, `argonic serve` processes and a remote
client built on them: shared by the remote-client tests and the real-Triton tests."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from argonic import procs
from argonic.inference import make_interface
from argonic.inference.fallback import wait_ready
from argonic.inference.remote import RemoteInterface
from argonic.procs import free_port

MODEL = "emtrkmichelid"
CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ {michel} ] }}
]
dynamic_batching {{ }}
"""


def tiny_onnx(path: Path, seed: int = 0, michel: int = 1) -> None:
    """A linear layer per head on the flattened patch, with emtrkmichelid's names and shapes."""
    rng = np.random.default_rng(seed)
    weights = {
        "w3": rng.normal(0, 0.05, (2304, 3)),
        "b3": rng.normal(0, 0.1, 3),
        "w1": rng.normal(0, 0.05, (2304, michel)),
        "b1": rng.normal(0, 0.1, michel),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 2304], np.int64), "flat"))
    nodes = [
        helper.make_node("Reshape", ["main_input", "flat"], ["x"]),
        helper.make_node("MatMul", ["x", "w3"], ["m3"]),
        helper.make_node("Add", ["m3", "b3"], ["z3"]),
        helper.make_node("Softmax", ["z3"], ["em_trk_none_netout"], axis=-1),
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["z1"]),
        helper.make_node("Sigmoid", ["z1"], ["michel_netout"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [
            helper.make_tensor_value_info("em_trk_none_netout", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("michel_netout", TensorProto.FLOAT, ["N", michel]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def make_repository(root: Path, seed: int = 0, michel: int = 1, max_batch_size: int = 4096) -> Path:
    """A model repository <root>/emtrkmichelid/{config.pbtxt, 1/model.onnx, 1/model.onnx.sha256}."""
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    (root / MODEL / "config.pbtxt").write_text(
        CONFIG.format(name=MODEL, max_batch_size=max_batch_size, michel=michel)
    )
    tiny_onnx(version / "model.onnx", seed, michel)
    digest = hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest()
    (version / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    return root


def ort_scores(repository: Path, patches: np.ndarray) -> np.ndarray:
    """Independent truth: ONNX Runtime in this process, [N, 4]."""
    session = ort.InferenceSession(
        str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    softmax, michel = session.run(["em_trk_none_netout", "michel_netout"], {"main_input": patches})
    return np.concatenate([softmax, michel], axis=1)


def make_patches(n: int, seed: int = 1) -> np.ndarray:
    """Sparse non-negative patches, like deconvolved charge around hits."""
    rng = np.random.default_rng(seed)
    patches = rng.exponential(2.0, (n, 48, 48, 1)).astype(np.float32)
    patches[rng.random(patches.shape) < 0.8] = 0.0
    return patches


@contextlib.contextmanager
def serve_process(
    repository: Path, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`argonic serve` as a subprocess on 127.0.0.1; its process group is killed on exit."""
    port = port or free_port()
    process = procs.start(
        procs.serve_command(repository, grpc_port=port, metrics_port=0), new_session=True
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_ready(address, MODEL, 60.0, process)
        yield address, process
    finally:
        kill(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group and reap it."""
    procs.kill(procs.Child.of(process, group=True))


def remote(servers: list[str], repository: Path, **options: object) -> RemoteInterface:
    """A RemoteInterface built the way the reco chain builds it, with fast-failing defaults."""
    table = {
        "servers": servers,
        "model_repository": str(repository),
        "timeout_s": 5.0,
        "retries": 1,
        "backoff_s": 0.05,
        **options,
    }
    batch_size = table.pop("batch_size", 235)
    interface = make_interface({"interface": "remote", "batch_size": batch_size, "remote": table})
    assert isinstance(interface, RemoteInterface)
    return interface


def assert_same_scores(got: np.ndarray, truth: np.ndarray) -> None:
    assert got.shape == truth.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-6)
