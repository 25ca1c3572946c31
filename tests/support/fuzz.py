"""Fuzzing the server over a real socket: valid seed messages for every RPC, byte mutations,
raw sending through a grpc channel (identity serializers) and the statuses allowed back.

Shared by tests/server/grpc/test_fuzz.py (hypothesis draws the mutations) and
a long run of tests/server/grpc/test_fuzz.py (``ARGONIC_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from argonic.server.grpc.health import HealthCheckRequest
from support.models import tiny_onnx
from support.servers import CNN_LIKE_CONFIG, add_model

MODEL = "emtrkmichelid"
PLANE_MODEL = "emtrkmichelid_plane"
SERVICE = "/inference.GRPCInferenceService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
STREAM = SERVICE + "ModelStreamInfer"
# every status a malformed or hostile request may get; never UNKNOWN or INTERNAL
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
OPS = ("flip", "set", "insert", "delete", "truncate", "duplicate")
Mutation = tuple[str, int, int]  # (operation, position, byte)


def make_repository(root: Path) -> Path:
    """The fuzz target: a tiny emtrkmichelid-like network and the shipped plane model on it."""
    add_model(
        root,
        MODEL,
        CNN_LIKE_CONFIG,
        extra="dynamic_batching { default_queue_policy { max_queue_size: 64 } }",
        versions={1: lambda d: tiny_onnx(d / "model.onnx")},
    )
    shipped = Path(__file__).parents[2] / "models" / PLANE_MODEL / "config.pbtxt"
    (root / PLANE_MODEL).mkdir()
    (root / PLANE_MODEL / "config.pbtxt").write_text(shipped.read_text())
    return root


def patches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 48, 48, 1), dtype=np.float32)


def infer_request(n: int = 3, seed: int = 0) -> pb.ModelInferRequest:
    """A valid raw-tensor ModelInfer request for MODEL."""
    msg = pb.ModelInferRequest(model_name=MODEL, id=f"fuzz-{seed}")
    msg.inputs.add(name="main_input", datatype="FP32", shape=[n, 48, 48, 1])
    msg.outputs.add(name="em_trk_none_netout")
    msg.raw_input_contents.append(patches(n, seed).tobytes())
    return msg


def plane_tensors(**changes: np.ndarray) -> dict[str, np.ndarray]:
    """Valid plane-mode tensors of a 64 x 200 plane with two hits, with ``changes``."""
    tensors = {
        "plane_shape": np.array([64, 200], np.int32),
        "pixel_delta": np.array([130, 1, 199, 1], np.int32),
        "pixel_value": np.array([1.0, 2.5, 3.0, 0.5], np.float32),
        "hit_wire": np.array([1, 2], np.int32),
        "hit_tick": np.array([30.0, 31.0], np.float32),
    }
    return {**tensors, **changes}


def _seeds() -> dict[str, list[bytes]]:
    typed = pb.ModelInferRequest(model_name=MODEL, model_version="1")
    tensor = typed.inputs.add(name="main_input", datatype="FP32", shape=[1, 48, 48, 1])
    tensor.contents.fp32_contents.extend(patches(1, 5).ravel().tolist())
    typed.parameters["priority"].int64_param = 1
    typed.parameters["timeout"].int64_param = 10_000_000
    fp16 = pb.ModelInferRequest(model_name=MODEL)
    fp16.inputs.add(name="main_input", datatype="FP16", shape=[2, 48, 48, 1])
    fp16.raw_input_contents.append(patches(2, 6).astype(np.float16).tobytes())
    plane = pb.ModelInferRequest(model_name=PLANE_MODEL)
    for name, values in plane_tensors().items():
        dtype = "INT32" if values.dtype == np.int32 else "FP32"
        plane.inputs.add(name=name, datatype=dtype, shape=list(values.shape))
        plane.raw_input_contents.append(values.tobytes())
    infer = [m.SerializeToString() for m in (infer_request(3), typed, fp16, plane)]
    named = {"name": MODEL}
    return {
        "ServerLive": [pb.ServerLiveRequest().SerializeToString()],
        "ServerReady": [b""],
        "ModelReady": [pb.ModelReadyRequest(name=MODEL, version="1").SerializeToString()],
        "ServerMetadata": [b""],
        "ModelMetadata": [pb.ModelMetadataRequest(**named).SerializeToString()],
        "ModelConfig": [pb.ModelConfigRequest(**named, version="1").SerializeToString()],
        "ModelStatistics": [pb.ModelStatisticsRequest(**named).SerializeToString()],
        "RepositoryIndex": [pb.RepositoryIndexRequest(ready=True).SerializeToString()],
        "RepositoryModelLoad": [
            pb.RepositoryModelLoadRequest(model_name=MODEL).SerializeToString()
        ],
        "RepositoryModelUnload": [
            pb.RepositoryModelUnloadRequest(model_name=MODEL).SerializeToString()
        ],
        "SystemSharedMemoryStatus": [b""],
        "TraceSetting": [b""],
        "ModelInfer": infer,
        "ModelStreamInfer": infer,
        "Health": [HealthCheckRequest(service="").SerializeToString()],
    }


SEEDS = _seeds()
RPCS = tuple(SEEDS)

# model control past the gate (a server in explicit mode): loads and unloads of a model of
# their own, a load with Triton's config override (refused cleanly), and trace settings
VICTIM = "fuzz_victim"


def add_victim(root: Path) -> None:
    """A second tiny network in the repository, for the control RPCs to load and unload."""
    add_model(root, VICTIM, CNN_LIKE_CONFIG, versions={1: lambda d: tiny_onnx(d / "model.onnx")})


def _control_seeds() -> dict[str, list[bytes]]:
    override = pb.RepositoryModelLoadRequest(model_name=VICTIM)
    override.parameters["config"].string_param = '{"max_batch_size": 8}'
    trace = pb.TraceSettingRequest(model_name=VICTIM)
    trace.settings["trace_rate"].value.append("1000")
    trace.settings["trace_level"].value.extend(["TIMESTAMPS", "TENSORS"])
    return {
        "RepositoryModelLoad": [
            pb.RepositoryModelLoadRequest(model_name=VICTIM).SerializeToString(),
            override.SerializeToString(),
        ],
        "RepositoryModelUnload": [
            pb.RepositoryModelUnloadRequest(model_name=VICTIM).SerializeToString()
        ],
        "TraceSetting": [trace.SerializeToString()],
    }


CONTROL_SEEDS = _control_seeds()


def mutate(data: bytes, mutations: Sequence[Mutation]) -> bytes:
    """Apply byte mutations (positions taken modulo the current length)."""
    out = bytearray(data)
    for op, position, byte in mutations:
        i = position % (len(out) + 1)
        if op == "insert":
            out[i:i] = bytes([byte]) * (1 + byte % 4)
        elif not out:
            continue
        elif op == "flip":
            out[i % len(out)] ^= 1 << (byte % 8)
        elif op == "set":
            out[i % len(out)] = byte
        elif op == "delete":
            del out[i : i + 1 + byte % 8]
        elif op == "truncate":
            del out[i:]
        elif op == "duplicate":
            out[i:i] = out[i : i + 1 + byte]
    return bytes(out)


def random_mutations(rng: random.Random) -> list[Mutation]:
    """1-6 mutations for the standalone driver."""
    return [
        (rng.choice(OPS), rng.randrange(1 << 31), rng.randrange(256))
        for _ in range(rng.randint(1, 6))
    ]


@dataclass
class Answer:
    """What the server answered one raw request (for a stream: the in-stream error too)."""

    code: grpc.StatusCode
    details: str
    body: bytes = b""
    stream_error: str = ""


def send(channel: grpc.Channel, rpc: str, data: bytes, timeout_s: float = 20.0) -> Answer:
    """Send raw bytes as one message of ``rpc``; return its status (never raises RpcError)."""
    try:
        if rpc == "ModelStreamInfer":
            replies = list(channel.stream_stream(STREAM)(iter([data]), timeout=timeout_s))
            error = pb.ModelStreamInferResponse.FromString(replies[0]).error_message
            return Answer(grpc.StatusCode.OK, "", replies[0], error)
        method = HEALTH_CHECK if rpc == "Health" else SERVICE + rpc
        body = channel.unary_unary(method)(data, timeout=timeout_s)
        return Answer(grpc.StatusCode.OK, "", body)
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "")


def scores(channel: grpc.Channel, n: int = 3, seed: int = 0) -> np.ndarray:
    """The first output of a valid ModelInfer request, sent as raw bytes."""
    answer = send(channel, "ModelInfer", infer_request(n, seed).SerializeToString())
    assert answer.code == grpc.StatusCode.OK, answer
    reply = pb.ModelInferResponse.FromString(answer.body)
    return np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(n, 3)
