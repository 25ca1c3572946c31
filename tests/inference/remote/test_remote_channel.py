"""channel: one server's channel and health, against a real server."""

from __future__ import annotations

import time

import grpc
import pytest
from tritonclient.grpc import service_pb2

from argonic.inference.remote.channel import ServedModel, Server


def test_rpc_talks_protobuf_or_bytes(tiny_server: str) -> None:
    server = Server(tiny_server, None)
    try:
        assert server.rpc("ServerReady")(service_pb2.ServerReadyRequest(), timeout=5).ready
        raw = server.rpc("ServerLive", raw=True)(b"", timeout=5)
        assert service_pb2.ServerLiveResponse.FromString(raw).live
        assert server.rpc("ServerReady") is server.rpc("ServerReady")  # one callable per method
    finally:
        server.close()


@pytest.mark.parametrize(
    "code, fresh_channel",
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (None, True),  # not ready
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    ],
)
def test_failure_unchecks_and_maybe_reconnects(
    tiny_server: str, code: grpc.StatusCode | None, fresh_channel: bool
) -> None:
    server = Server(tiny_server, None)
    try:
        server.rpc("ServerReady")
        first = server.channel
        server.mark_verified(ServedModel(100, frozenset({"fp16"})))
        assert server.ready and server.checks == 1 and server.healthy(10.0)
        server.mark_failed(code)
        assert not server.ready and not server.healthy(10.0) and server.healthy(0.0)
        server.rpc("ServerReady")
        assert (server.channel is not first) == fresh_channel
        assert server.model.max_batch_size == 100  # kept until the next check
        server.answered()
        assert server.healthy(10.0)
    finally:
        server.close()


def test_retired_channels_close_when_asked(tiny_server: str) -> None:
    server = Server(tiny_server, None)
    server.rpc("ServerReady")
    old = server.channel
    server.reconnect()
    future = old.unary_unary("/inference.GRPCInferenceService/ServerLive")
    assert future(b"", timeout=5) is not None  # still usable by calls in flight
    server.close_retired()
    with pytest.raises(ValueError, match="closed"):
        future(b"", timeout=5)
    server.close()
    assert server.channel is None


def test_fallback_label(tiny_server: str) -> None:
    assert Server("h:1", None, fallback=True).label == "h:1 (local fallback)"
    start = time.monotonic()
    server = Server("h:1", None)
    server.mark_failed(grpc.StatusCode.UNAVAILABLE)
    assert server.failed_at is not None and server.failed_at >= start
