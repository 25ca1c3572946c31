"""stats: ModelStatistics parsing on a hand-built response, and deltas against a real server
whose inferences are sent by tritonclient (an independent client)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as triton
from support.models import MODEL, random_patches
from tritonclient.grpc import service_pb2

from argonic.inference.local_server import free_port
from argonic.inference.remote.channel import ServedModel, Server
from argonic.inference.remote.options import CallOptions
from argonic.inference.remote.stats import CallStats, ServerStatistics, counters
from argonic.settings import RemoteSettings

OPTIONS = CallOptions.from_settings(RemoteSettings(timeout_s=5.0))


def test_counters_sum_versions_and_convert_ns() -> None:
    response = service_pb2.ModelStatisticsResponse()
    for version, (count, queue_ns) in enumerate([(10, 2_000_000_000), (5, 500_000_000)], 1):
        model = response.model_stats.add(name=MODEL, version=str(version))
        model.inference_count, model.execution_count = count, count // 5
        model.inference_stats.success.count = count // 5
        model.inference_stats.queue.ns = queue_ns
        model.inference_stats.compute_infer.ns = 3 * queue_ns
    got = counters(response)
    assert got["inferences"] == 15 and got["executions"] == 3 and got["requests"] == 3
    assert got["queue_s"] == pytest.approx(2.5) and got["compute_infer_s"] == pytest.approx(7.5)
    assert got["compute_input_s"] == 0 and got["compute_output_s"] == 0
    assert counters(service_pb2.ModelStatisticsResponse()) == {}


def test_call_stats_add_up_and_are_plain_data() -> None:
    total = CallStats()
    one = CallStats(calls=1, patches=10, total_s=1.0, serialise_s=0.2, wait_s=0.5)
    one.requests_by_server = {"a:1": 2}
    two = CallStats(calls=1, patches=5, total_s=0.5, deserialise_s=0.1)
    two.requests_by_server, two.server = {"a:1": 1, "b:1": 3}, {"queue_s": 0.25}
    total.add(one)
    total.add(two)
    d = total.as_dict()
    assert (d["calls"], d["patches"], d["requests_by_server"]) == (2, 15, {"a:1": 3, "b:1": 3})
    assert d["server"] == {"queue_s": 0.25}
    assert d["other_s"] == pytest.approx(1.5 - 0.2 - 0.5 - 0.1)
    assert json.loads(json.dumps(d)) == d


def _infer(address: str, n: int) -> None:
    client = triton.InferenceServerClient(address)
    try:
        tensor = triton.InferInput("main_input", [n, 48, 48, 1], "FP32")
        tensor.set_data_from_numpy(random_patches(n))
        client.infer(MODEL, [tensor])
    finally:
        client.close()


def _server(address: str) -> Server:
    """A server as the pool leaves it after its checks passed (on an open channel)."""
    server = Server(address, None)
    server.reconnect()
    server.mark_verified(ServedModel(100, frozenset()))
    return server


def test_deltas_since_connect_and_per_call(tiny_server: str) -> None:
    server = _server(tiny_server)
    stats = ServerStatistics("call", MODEL, "", OPTIONS)
    try:
        stats.connected(server)
        _infer(tiny_server, 30)
        stats.begin_call([server])
        _infer(tiny_server, 20)
        _infer(tiny_server, 7)
        call = stats.end_call([server], {tiny_server: 2})
        total = stats.since_connect([server], {tiny_server: 3})
    finally:
        server.close()
    assert call["inferences"] == 27 and call["requests"] == 2
    assert total["inferences"] == 57 and total["requests"] == 3
    assert total["compute_infer_s"] > call["compute_infer_s"] > 0
    assert stats.end_call([server], {tiny_server: 1}) == {}  # no call open


def test_only_servers_used_count_and_off_asks_nothing(tiny_server: str) -> None:
    server = _server(tiny_server)
    try:
        stats = ServerStatistics("total", MODEL, "", OPTIONS)
        stats.connected(server)
        _infer(tiny_server, 5)
        assert stats.since_connect([server], {}) == {}
        stats.begin_call([server])  # "total": no per-call snapshot
        assert stats.end_call([server], {tiny_server: 1}) == {}
        off = ServerStatistics("off", MODEL, "", OPTIONS)
        off.connected(server)
        assert off.since_connect([server], {tiny_server: 1}) == {}
    finally:
        server.close()


def test_server_without_statistics(tiny_server: str, caplog: pytest.LogCaptureFixture) -> None:
    dead = _server(f"127.0.0.1:{free_port()}")
    unknown = _server(tiny_server)
    try:
        assert ServerStatistics("total", MODEL, "", OPTIONS).query(dead) is None
        stats = ServerStatistics("total", "nothere", "", OPTIONS)
        assert stats.query(unknown) is None  # NOT_FOUND: transient, asked again next time
        stats.connected(unknown)
        assert stats.since_connect([unknown], {tiny_server: 1}) == {}
    finally:
        dead.close()
        unknown.close()
    assert "gives no model statistics (UNAVAILABLE" in caplog.text
    np.testing.assert_equal(caplog.text.count("gives no model statistics"), 3)
