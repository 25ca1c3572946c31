"""pool: failover order, retry rounds and the fatal/transient split, against real servers
(in-process `argonic serve`), dead ports and the gRPC errors real servers return."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.models import MODEL
from tritonclient.grpc import service_pb2

from argonic.inference.local_server import free_port
from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import ModelMismatchError, RemoteInferenceError
from argonic.inference.remote.identity import ModelSignature
from argonic.inference.remote.options import CallOptions
from argonic.inference.remote.pool import Attempt, ServerPool
from argonic.inference.remote.stats import CallStats
from argonic.server import running_server
from argonic.settings import RemoteSettings


@pytest.fixture(scope="module")
def second_server(tiny_repo: Path) -> Iterator[str]:
    with running_server(tiny_repo, allow_metrics=False) as handle:
        yield handle.url


def _pool(servers: list[str], repository: Path, **settings: object) -> ServerPool:
    remote = RemoteSettings(
        **{"servers": servers, "timeout_s": 5.0, "retries": 0, "backoff_s": 0.05, **settings}
    )
    signature = ModelSignature.expected(
        repository, remote.model_name, remote.model_version, remote.expected_sha256
    )
    return ServerPool(remote, signature, CallOptions.from_settings(remote))


def _dead() -> str:
    return f"127.0.0.1:{free_port()}"


def _infer_error(address: str, request: service_pb2.ModelInferRequest) -> grpc.RpcError:
    """The error a server really returns for ``request``."""
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        )
        with pytest.raises(grpc.RpcError) as info:
            infer(request, timeout=5.0)
    return info.value


def test_preferred_server_first_then_healthy_ones(
    tiny_server: str, second_server: str, tiny_repo: Path
) -> None:
    pool = _pool([tiny_server, second_server], tiny_repo)
    verified: list[str] = []
    pool.on_verified.append(lambda server: verified.append(server.address))
    try:
        first, second = pool.servers
        assert pool.pick(Attempt(), CallStats()) is first
        first.mark_failed(grpc.StatusCode.UNAVAILABLE)  # failed just now: tried last
        assert pool.pick(Attempt(), CallStats()) is second
        assert pool.pick(Attempt(), CallStats()) is second  # checked once per channel
        assert verified == [tiny_server, second_server]
        first.failed_at = time.monotonic() - pool.remote.health_recheck_s  # recheck time over
        assert pool.pick(Attempt(), CallStats()) is first
        assert verified == [tiny_server, second_server, tiny_server]  # fresh channel, checked again
    finally:
        pool.close()


def test_dead_server_is_skipped_and_named(tiny_server: str, tiny_repo: Path) -> None:
    dead = _dead()
    pool = _pool([dead, tiny_server], tiny_repo)
    attempt = Attempt()
    try:
        assert pool.pick(attempt, CallStats()).address == tiny_server
        assert attempt.tried == {dead} and attempt.round == 0
        assert attempt.last_error.startswith(f"{dead}: UNAVAILABLE")
        assert pool.servers[0].failed_at is not None and not pool.servers[0].ready
    finally:
        pool.close()


def test_every_round_fails_then_the_error_names_servers(tiny_repo: Path) -> None:
    dead = [_dead(), _dead()]
    pool = _pool(dead, tiny_repo, retries=2, backoff_s=0.05)
    call = CallStats()
    started = time.monotonic()
    try:
        with pytest.raises(
            RemoteInferenceError,
            match=rf"3 round\(s\) over \[{dead[0]}, {dead[1]}\] for model 'emtrkmichelid'; "
            rf"last error: {dead[1]}: UNAVAILABLE",
        ):
            pool.pick(Attempt(), call)
    finally:
        pool.close()
    assert call.retries == 2
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff_s * 2**(k - 1), k = 1, 2


def test_model_not_ready_moves_on(tiny_server: str, tiny_repo: Path) -> None:
    pool = _pool([tiny_server], tiny_repo, model_name="nothere")
    try:
        with pytest.raises(RemoteInferenceError, match="model 'nothere' not ready"):
            pool.pick(Attempt(), CallStats())
    finally:
        pool.close()


def test_other_model_is_fatal_not_failover(
    tiny_server: str, second_server: str, tiny_repo: Path
) -> None:
    pool = _pool([tiny_server, second_server], tiny_repo, expected_sha256="ef" * 32)
    try:
        with pytest.raises(ModelMismatchError, match=f"server {tiny_server} serves a different"):
            pool.pick(Attempt(), CallStats())
    finally:
        pool.close()


def test_failed_request_transient_or_fatal(tiny_server: str, tiny_repo: Path) -> None:
    pool = _pool([tiny_server], tiny_repo)
    try:
        server = pool.pick(Attempt(), CallStats())
        not_found = _infer_error(tiny_server, service_pb2.ModelInferRequest(model_name="nothere"))
        attempt = Attempt()
        pool.failed(attempt, server, not_found)  # transient: the request moves on
        assert attempt.tried == {tiny_server} and "NOT_FOUND" in attempt.last_error
        assert not server.ready and not server.needs_reconnect  # checked again, same channel
        unavailable = _infer_error(_dead(), service_pb2.ModelInferRequest(model_name=MODEL))
        pool.failed(Attempt(), server, unavailable)
        assert server.needs_reconnect  # a fresh channel before its next use
        invalid = _infer_error(tiny_server, service_pb2.ModelInferRequest(model_name=MODEL))
        with pytest.raises(RemoteInferenceError, match="refused the request: INVALID_ARGUMENT"):
            pool.failed(Attempt(), server, invalid)
    finally:
        pool.close()


def test_close_closes_every_channel(tiny_server: str, tiny_repo: Path) -> None:
    pool = _pool([tiny_server], tiny_repo)
    server: Server = pool.pick(Attempt(), CallStats())
    old = server.channel
    server.reconnect()  # the old channel is retired, not yet closed
    pool.close()
    assert server.channel is None and pool.fallback is None
    with pytest.raises(ValueError, match="closed"):
        old.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"")
