"""grpc.health.v1 (grpcio-health-checking's own client stub) and `argonic health`:
overall and per-model statuses follow readiness, loading and draining."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.models import MODEL, identity_onnx, tiny_repository
from support.servers import IDENTITY_CONFIG, add_model

from argonic.cli import main
from argonic.server import running_server
from argonic.server.grpc.health import check

SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


@pytest.fixture()
def server(tmp_path: Path):
    tiny_repository(tmp_path, max_batch_size=8)
    add_model(
        tmp_path,
        "identity",
        IDENTITY_CONFIG,
        versions={1: lambda d: identity_onnx(d / "model.onnx")},
    )
    with running_server(tmp_path, allow_metrics=False, model_control_mode="explicit") as handle:
        yield handle


def test_statuses_follow_loading_and_draining(server) -> None:
    with grpc.insecure_channel(server.url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

        assert status("") == SERVING and status("inference.GRPCInferenceService") == SERVING
        assert status(MODEL) == SERVING and status("identity") == SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="identity"), timeout=30)
        assert next(watch).status == SERVING
        client = grpcclient.InferenceServerClient(server.url)
        client.unload_model("identity")
        assert status("identity") == NOT_SERVING and status("") == SERVING
        assert next(watch).status == NOT_SERVING  # Watch streams the change
        client.load_model("identity")
        assert status("identity") == SERVING
        assert next(watch).status == SERVING
        watch.cancel()
        # Draining: everything NOT_SERVING for good (what SIGTERM starts).
        asyncio.run_coroutine_threadsafe(server.server._health.shutdown(), server.loop).result(10)
        assert status("") == NOT_SERVING and status(MODEL) == NOT_SERVING


def test_check_reports_unknown_and_unreachable(server) -> None:
    assert check(server.url) == "SERVING"
    assert check(server.url, "nope") == "SERVICE_UNKNOWN"
    assert check("127.0.0.1:1", timeout_s=0.5) == "UNREACHABLE"


def test_argonic_health_command(server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", server.url]) == 0
    assert capsys.readouterr().out.strip().endswith("SERVING")
    assert main(["health", server.url, "--model", "identity", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer == {
        "target": server.url,
        "service": "identity",
        "status": "SERVING",
        "serving": True,
    }
    grpcclient.InferenceServerClient(server.url).unload_model("identity")
    with pytest.raises(SystemExit) as info:
        main(["health", server.url, "--model", "identity"])
    assert info.value.code == 1 and "NOT_SERVING" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["health", "127.0.0.1:1", "--timeout", "0.5", "--json"])
    assert info.value.code == 1 and json.loads(capsys.readouterr().out)["status"] == "UNREACHABLE"
