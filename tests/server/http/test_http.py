"""The HTTP/REST endpoint against real clients: tritonclient.http (sync and asyncio) and
plain HTTP requests; the same data plane, statistics and errors as gRPC."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from support.models import MODEL, head_weights, identity_onnx, reference_heads, tiny_repository
from support.servers import IDENTITY_CONFIG, add_model
from tritonclient.utils import InferenceServerException

from argonic.server import running_server

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tiny_repository(tmp_path_factory.mktemp("http_repo"), max_batch_size=100)
    add_model(
        root,
        "identity",
        IDENTITY_CONFIG,
        max_batch_size=2048,
        versions={1: lambda d: identity_onnx(d / "model.onnx")},
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path):
    with running_server(
        repo, allow_metrics=False, http_port=0, model_control_mode="explicit"
    ) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def patches(n: int) -> np.ndarray:
    return RNG.random((n, 48, 48, 1), dtype=np.float32)


def int32_input() -> httpclient.InferInput:
    tensor = httpclient.InferInput("main_input", [1, 48, 48, 1], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 48, 48, 1), np.int32))
    return tensor


def http_input(x: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def request(server, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, headers, body) of a plain HTTP request."""
    req = urllib.request.Request(
        f"http://{server.http_url}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_health_and_metadata_match_grpc(server, client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert {"binary_tensor_data", "system_shared_memory"} <= set(meta["extensions"])
    grpc_client = grpcclient.InferenceServerClient(server.url)
    expected = grpc_client.get_model_metadata(MODEL, as_json=True)
    got = client.get_model_metadata(MODEL)
    assert got["inputs"] == [{"name": "main_input", "datatype": "FP32", "shape": [-1, 48, 48, 1]}]
    assert got["versions"] == expected["versions"] and got["platform"] == expected["platform"]
    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == 100
    assert config["input"][0]["dims"] == [48, 48, 1]
    assert config["parameters"]["sha256"]["string_value"] == (
        grpc_client.get_model_config(MODEL).config.parameters["sha256"].string_value
    )


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_inference_matches_numpy(client, binary_in: bool, binary_out: bool) -> None:
    x = patches(7)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary_out)
        for n in ("em_trk_none_netout", "michel_netout")
    ]
    result = client.infer(MODEL, [http_input(x, binary_in)], outputs=outputs, request_id="r7")
    em, michel = reference_heads(x, head_weights())
    np.testing.assert_allclose(result.as_numpy("em_trk_none_netout"), em, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("michel_netout"), michel, rtol=1e-4, atol=1e-6)
    assert result.get_response()["id"] == "r7"


def test_large_binary_request_is_exact_and_compression_works(client) -> None:
    x = patches(1693)
    for algorithm in (None, "gzip", "deflate"):
        result = client.infer(
            "identity",
            [http_input(x)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("output"), x)


def test_asyncio_client(server) -> None:
    async def run() -> list[np.ndarray]:
        async with aiohttpclient.InferenceServerClient(server.http_url) as c:
            assert await c.is_server_ready()
            xs = [patches(3) for _ in range(4)]
            tasks = []
            for x in xs:
                tensor = aiohttpclient.InferInput("main_input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                tasks.append(c.infer("identity", [tensor]))
            results = await asyncio.gather(*tasks)
            return [(r.as_numpy("output"), x) for r, x in zip(results, xs, strict=True)]

    for got, x in asyncio.run(run()):
        np.testing.assert_array_equal(got, x)


def test_http_and_grpc_share_statistics(server, client) -> None:
    before = client.get_inference_statistics("identity")["model_stats"][0]
    x = patches(2)
    client.infer("identity", [http_input(x)])
    tensor = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    grpcclient.InferenceServerClient(server.url).infer("identity", [tensor])
    after = client.get_inference_statistics("identity")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == (
        before["inference_stats"]["success"]["count"] + 2
    )
    assert after["inference_count"] == before["inference_count"] + 4
    all_stats = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in all_stats} == {MODEL, "identity"}


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.get_model_metadata("nope"), "404", "Request for unknown model: 'nope'"),
        (lambda c: c.get_model_config(MODEL, "9"), "404", "version 9 is not found"),
        (
            lambda c: c.infer(MODEL, [http_input(patches(101))]),
            "400",
            "batch-size must be <= 100",
        ),
        (
            lambda c: c.infer(MODEL, [httpclient.InferInput("main_input", [1, 48, 48, 1], "FP32")]),
            "400",
            "input 'main_input': no 'data', binary_data_size or shared memory region",
        ),
        (
            lambda c: c.infer(MODEL, [int32_input()]),
            "400",
            "unexpected datatype INT32 for inference input 'main_input', expecting FP32",
        ),
    ],
)
def test_errors_are_tritons(client, call, status: str, message: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call(client)
    assert info.value.status() == status
    assert message in info.value.message()


def test_plain_http_json_inference_and_error_bodies(server) -> None:
    x = patches(1)
    body = {
        "inputs": [
            {"name": "main_input", "shape": [1, 48, 48, 1], "datatype": "FP32", "data": x.tolist()}
        ]
    }
    status, headers, data = request(
        server, "POST", "/v2/models/identity/infer", json.dumps(body).encode()
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(data)
    assert answer["outputs"][0]["shape"] == [1, 48, 48, 1]
    np.testing.assert_array_equal(np.array(answer["outputs"][0]["data"], np.float32), x.ravel())

    for path, payload, headers in [
        ("/v2/models/identity/infer", b"{not json", {}),
        ("/v2/models/identity/infer", b'{"inputs": 3}', {}),
        ("/v2/models/identity/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}),
        ("/v2/models/identity/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "99"}),
        (
            "/v2/models/identity/infer",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "main_input",
                            "shape": [1, 48, 48, 1],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": 10**9},
                        }
                    ]
                }
            ).encode(),
            {},
        ),
        ("/v2/repository/index", b"[1]", {}),
    ]:
        status, _, data = request(server, "POST", path, payload, headers)
        assert status == 400, (payload, data)
        assert set(json.loads(data)) == {"error"}
    status, _, data = request(server, "POST", "/v2/models/nope/infer", json.dumps(body).encode())
    assert status == 404 and "unknown model" in json.loads(data)["error"]
    assert request(server, "GET", "/v2/health/live")[0] == 200
    assert request(server, "GET", "/v2/models/nope/ready")[0] == 400


def test_repository_index_unload_and_load(client) -> None:
    assert {(m["name"], m["state"]) for m in client.get_model_repository_index()} == {
        (MODEL, "READY"),
        ("identity", "READY"),
    }
    client.unload_model("identity")
    assert not client.is_model_ready("identity")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["identity"]["state"] == "UNAVAILABLE"
    client.load_model("identity")
    assert client.is_model_ready("identity")
    with pytest.raises(InferenceServerException, match="no model directory"):
        client.load_model("nope")


def test_default_model_control_refuses_load_and_unload_over_http(repo: Path) -> None:
    with running_server(repo, allow_metrics=False, http_port=0) as handle:
        client = httpclient.InferenceServerClient(handle.http_url)
        for call in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException, match="polling is enabled") as info:
                call("identity")
            assert info.value.status() == "503"
        assert client.is_model_ready("identity")


def test_grpc_can_be_switched_off(repo: Path) -> None:
    with running_server(repo, allow_metrics=False, http_port=0, allow_grpc=False) as handle:
        assert handle.server.grpc_port is None
        assert httpclient.InferenceServerClient(handle.http_url).is_server_ready()
