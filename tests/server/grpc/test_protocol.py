"""The inference server against real clients (tritonclient, grpc health) over 127.0.0.1.

Outputs are checked against onnxruntime run directly and against numpy; errors against
Triton's gRPC status codes and messages.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from support.models import head_weights, identity_onnx, reference_heads, tiny_onnx
from support.servers import CNN_LIKE_CONFIG, IDENTITY_CONFIG, add_model
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from argonic.server import running_server
from argonic.server.grpc.health import HealthCheckRequest, HealthCheckResponse

RNG = np.random.default_rng(7)


def _write_cnn(seed: int):
    def write(d: Path) -> None:
        tiny_onnx(d / "model.onnx", seed)

    return write


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    add_model(
        root,
        "cnn",
        CNN_LIKE_CONFIG,
        max_batch_size=512,
        extra="dynamic_batching { }\n"
        'parameters { key: "execution_batch_size" value { string_value: "100" } }',
        versions={1: _write_cnn(1), 2: _write_cnn(2)},
    )
    (root / "cnn" / "1" / "model.onnx.sha256").write_text(
        hashlib.sha256((root / "cnn" / "1" / "model.onnx").read_bytes()).hexdigest()
        + "  model.onnx\n"
    )
    add_model(
        root,
        "cnn_all",
        CNN_LIKE_CONFIG,
        extra="version_policy { all { } }",
        versions={1: _write_cnn(1), 3: _write_cnn(3)},
    )
    add_model(
        root,
        "identity",
        IDENTITY_CONFIG,
        max_batch_size=2048,
        versions={1: lambda d: identity_onnx(d / "model.onnx")},
    )
    add_model(
        root,
        "nobatch",
        IDENTITY_CONFIG.replace("dims: [ 48", "dims: [ 2, 48"),
        max_batch_size=0,
        versions={1: lambda d: identity_onnx(d / "model.onnx")},
    )
    add_model(root, "broken", CNN_LIKE_CONFIG, versions={1: _write_cnn(1)})
    (root / "broken" / "1" / "model.onnx.sha256").write_text("0" * 64 + "\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path):
    with running_server(repo, model_control_mode="explicit") as handle:
        yield handle


@pytest.fixture(scope="module")
def client(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.url)


def patches(n: int) -> np.ndarray:
    return RNG.random((n, 48, 48, 1), dtype=np.float32)


def infer_input(
    x: np.ndarray, name: str = "main_input", datatype: str = "FP32"
) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def ort_outputs(repo: Path, model: str, version: int, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repo / model / str(version) / "model.onnx"))
    return session.run(["em_trk_none_netout", "michel_netout"], {"main_input": x})


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


# --- health and metadata ------------------------------------------------------------------


def test_health_and_server_metadata(server, client) -> None:
    assert client.is_server_live()
    assert not client.is_server_ready()  # "broken" failed its checksum: Triton's strict readiness
    assert client.is_model_ready("cnn") and client.is_model_ready("cnn", "2")
    assert not client.is_model_ready("cnn", "1") and not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta.name == "argonic" and "model_repository" in meta.extensions
    with grpc.insecure_channel(server.url) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        assert check(HealthCheckRequest(service="cnn")).status == 1  # SERVING
        assert check(HealthCheckRequest(service="")).status == 2  # NOT_SERVING (broken model)
        with pytest.raises(grpc.RpcError) as info:
            check(HealthCheckRequest(service="no-such-service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        stream = watch(HealthCheckRequest(service="identity"))
        assert next(stream).status == 1
        stream.cancel()


def test_unimplemented_extensions_say_so(client) -> None:
    code, message = status_of(lambda: client.register_cuda_shared_memory("r", b"aGFuZGxl", 0, 8))
    assert code == "StatusCode.UNIMPLEMENTED" and "CudaSharedMemoryRegister" in message
    client.unregister_cuda_shared_memory()  # nothing registered: succeeds, as clients expect


def test_model_metadata_and_config(client, repo: Path) -> None:
    meta = client.get_model_metadata("cnn")
    assert list(meta.versions) == ["2"]  # version_policy default: latest 1
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("main_input", "FP32", [-1, 48, 48, 1])
    ]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [
        ("em_trk_none_netout", [-1, 3]),
        ("michel_netout", [-1, 1]),
    ]
    assert list(client.get_model_metadata("cnn_all").versions) == ["1", "3"]
    assert list(client.get_model_metadata("nobatch").inputs[0].shape) == [2, 48, 48, 1]
    config = client.get_model_config("cnn_all", "1").config
    assert config.max_batch_size == 4096 and config.input[0].dims == [48, 48, 1]
    for version in (1, 3):
        digest = hashlib.sha256(
            (repo / "cnn_all" / str(version) / "model.onnx").read_bytes()
        ).hexdigest()
        config = client.get_model_config("cnn_all", str(version)).config
        assert config.parameters["sha256"].string_value == digest
    as_json = client.get_model_config("cnn", as_json=True)
    assert as_json["config"]["parameters"]["execution_batch_size"]["string_value"] == "100"


def test_repository_index_shows_the_refused_model(client) -> None:
    index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
    assert index[("cnn", "2")].state == "READY" and index[("cnn_all", "3")].state == "READY"
    broken = index[("broken", "")]
    assert broken.state == "UNAVAILABLE" and "sha256" in broken.reason
    assert status_of(lambda: client.get_model_metadata("broken"))[0] == "StatusCode.NOT_FOUND"


# --- inference ----------------------------------------------------------------------------


def test_inference_matches_onnxruntime_and_numpy(client, repo: Path) -> None:
    x = patches(333)  # > execution_batch_size 100: split into 4 executions and reassembled
    for version in ("1", "2"):
        result = client.infer(
            "cnn_all" if version == "1" else "cnn", [infer_input(x)], model_version=version
        )
        softmax, michel = ort_outputs(repo, "cnn", int(version), x)
        np.testing.assert_allclose(
            result.as_numpy("em_trk_none_netout"), softmax, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(result.as_numpy("michel_netout"), michel, rtol=1e-5, atol=1e-6)
        truth = reference_heads(x, head_weights(int(version)))
        np.testing.assert_allclose(result.as_numpy("em_trk_none_netout"), truth[0], atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("michel_netout"), truth[1], atol=1e-5)
    one = client.infer(
        "cnn", [infer_input(x)], outputs=[grpcclient.InferRequestedOutput("michel_netout")]
    )
    assert one.as_numpy("em_trk_none_netout") is None and one.as_numpy("michel_netout").shape == (
        333,
        1,
    )


def test_large_request_is_exact_through_identity(client) -> None:
    x = patches(1693)  # ~15.6 MB each way, over gRPC's 4 MiB default, split into 256-row chunks
    result = client.infer("identity", [infer_input(x)])
    np.testing.assert_array_equal(result.as_numpy("output"), x)
    stats = client.get_inference_statistics("identity").model_stats[0]
    assert stats.inference_count == 1693 and stats.execution_count == 7  # ceil(1693 / 256)
    assert sorted(b.batch_size for b in stats.batch_stats) == [157, 256]


def test_model_without_batch_dimension(client) -> None:
    x = RNG.random((2, 48, 48, 1), dtype=np.float32)
    np.testing.assert_array_equal(client.infer("nobatch", [infer_input(x)]).as_numpy("output"), x)
    code, _ = status_of(lambda: client.infer("nobatch", [infer_input(x[None])]))
    assert code == "StatusCode.INVALID_ARGUMENT"


def test_typed_contents_request_without_raw_bytes(server) -> None:
    x = patches(2)
    request = service_pb2.ModelInferRequest(model_name="identity", id="typed-1")
    tensor = request.inputs.add(name="main_input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(server.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == "typed-1" and len(response.raw_output_contents) == 1
    out = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape)
    np.testing.assert_array_equal(out, x)


def test_statistics_count_requests(client) -> None:
    before = client.get_inference_statistics("cnn", "2").model_stats[0]
    for n in (5, 7):
        client.infer("cnn", [infer_input(patches(n))])
    status_of(lambda: client.infer("cnn", [infer_input(patches(3)[..., :0])]))
    after = client.get_inference_statistics("cnn", "2").model_stats[0]
    assert after.inference_count - before.inference_count == 12
    assert after.inference_stats.success.count - before.inference_stats.success.count == 2
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    everything = client.get_inference_statistics("").model_stats
    assert {(s.name, s.version) for s in everything} >= {
        ("cnn", "2"),
        ("cnn_all", "1"),
        ("cnn_all", "3"),
    }


def test_metrics_use_triton_names(server, client) -> None:
    client.infer("cnn", [infer_input(patches(4))])
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    stats = client.get_inference_statistics("cnn", "2").model_stats[0]
    label = '{model="cnn",version="2"}'
    assert samples["nv_inference_count" + label] == stats.inference_count
    assert samples["nv_inference_exec_count" + label] == stats.execution_count
    assert samples["nv_inference_request_success" + label] == stats.inference_stats.success.count
    assert (
        samples["nv_inference_queue_duration_us" + label] == stats.inference_stats.queue.ns // 1000
    )
    for name in (
        "nv_inference_request_failure",
        "nv_inference_pending_request_count",
        "nv_inference_request_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    ):
        assert name + label in samples
    assert "# TYPE nv_inference_count counter" in text and "nv_inference_count_total" not in text
    assert 0.0 <= samples["nv_cpu_utilization"] <= 1.0
    assert (
        samples['argonic_execution_batch_size_count{model="cnn",version="2"}']
        == stats.execution_count
    )
    assert "process_cpu_seconds_total" in text


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("unknown model", "NOT_FOUND", "Request for unknown model: 'nope' is not found"),
        ("unknown version", "NOT_FOUND", "Request for unknown model: 'cnn' version 9 is not found"),
        (
            "wrong dtype",
            "INVALID_ARGUMENT",
            "unexpected datatype FP64 for inference input 'main_input'",
        ),
        ("wrong shape", "INVALID_ARGUMENT", "unexpected shape for input 'main_input'"),
        ("missing input", "INVALID_ARGUMENT", "missing required input(s) ['main_input']"),
        ("unknown input", "INVALID_ARGUMENT", "unexpected inference input 'other'"),
        ("unknown output", "INVALID_ARGUMENT", "unexpected inference output 'nope'"),
        ("batch too large", "INVALID_ARGUMENT", "batch-size must be <= 512"),
        (
            "raw length",
            "INVALID_ARGUMENT",
            "unexpected total byte size 36860 for input 'main_input', expecting 36864",
        ),
        (
            "contents and raw",
            "INVALID_ARGUMENT",
            "contents field must not be specified when using raw_input_contents for "
            "'main_input' for model 'cnn'",
        ),
    ],
)
def test_errors_match_triton(server, client, case: str, code: str, message: str) -> None:
    x = patches(4)
    calls = {
        "unknown model": lambda: client.infer("nope", [infer_input(x)]),
        "unknown version": lambda: client.infer("cnn", [infer_input(x)], model_version="9"),
        "wrong dtype": lambda: client.infer(
            "cnn", [infer_input(x.astype(np.float64), datatype="FP64")]
        ),
        "wrong shape": lambda: client.infer(
            "cnn", [infer_input(RNG.random((4, 48, 48, 2), dtype=np.float32))]
        ),
        "missing input": lambda: client.infer("cnn", []),
        "unknown input": lambda: client.infer("cnn", [infer_input(x), infer_input(x, "other")]),
        "unknown output": lambda: client.infer(
            "cnn", [infer_input(x)], outputs=[grpcclient.InferRequestedOutput("nope")]
        ),
        "batch too large": lambda: client.infer("cnn", [infer_input(patches(513))]),
    }
    if case in ("raw length", "contents and raw"):
        request = service_pb2.ModelInferRequest(model_name="cnn")
        tensor = request.inputs.add(name="main_input", datatype="FP32", shape=list(x.shape))
        if case == "raw length":
            request.raw_input_contents.append(x.tobytes()[:-4])
        else:  # both forms of the same tensor: Triton refuses it as ambiguous
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
            request.raw_input_contents.append(x.tobytes())
        with (
            grpc.insecure_channel(server.url) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        got_code, got_message = str(info.value.code()), info.value.details()
    else:
        got_code, got_message = status_of(calls[case])
    assert got_code == f"StatusCode.{code}"
    assert message in got_message
    np.testing.assert_array_equal(client.infer("identity", [infer_input(x)]).as_numpy("output"), x)


# --- repository control -------------------------------------------------------------------


def test_unload_and_load(client, repo: Path) -> None:
    x = patches(3)
    client.unload_model("cnn_all")
    assert not client.is_model_ready("cnn_all")
    code, message = status_of(lambda: client.infer("cnn_all", [infer_input(x)], model_version="1"))
    assert code == "StatusCode.NOT_FOUND" and "'cnn_all'" in message
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["cnn_all"].state == "UNAVAILABLE" and index["cnn_all"].reason == "unloaded"
    client.load_model("cnn_all")
    assert client.is_model_ready("cnn_all", "3")
    truth = reference_heads(x, head_weights(3))
    np.testing.assert_allclose(
        client.infer("cnn_all", [infer_input(x)]).as_numpy("michel_netout"), truth[1], atol=1e-5
    )
    assert status_of(lambda: client.load_model("does_not_exist"))[0] == "StatusCode.NOT_FOUND"
    assert "does_not_exist" not in {m.name for m in client.get_model_repository_index().models}


def test_bad_config_is_refused_at_load_and_server_keeps_serving(client, repo: Path) -> None:
    bad = repo / "badconfig"
    bad.mkdir()
    (bad / "config.pbtxt").write_text('name: "badconfig"\nmax_batch_size: "many"\n')
    code, message = status_of(lambda: client.load_model("badconfig"))
    assert code == "StatusCode.INVALID_ARGUMENT" and "config.pbtxt" in message
    wrong_io = repo / "wrongio"
    add_model(
        repo,
        "wrongio",
        CNN_LIKE_CONFIG.replace('"main_input"', '"input_1"'),
        versions={1: _write_cnn(1)},
    )
    code, message = status_of(lambda: client.load_model("wrongio"))
    assert code == "StatusCode.INVALID_ARGUMENT" and "'input_1' is not in the ONNX model" in message
    assert wrong_io.exists() and client.is_model_ready("cnn")
