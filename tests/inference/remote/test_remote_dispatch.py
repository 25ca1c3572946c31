"""dispatch: requests cut, split and resent against real servers; truth is ONNX Runtime in
this process and the server's own count of inferences (every patch answered once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.models import MODEL, ort_scores, random_patches
from support.remote import assert_same_scores

from argonic.inference.remote.channel import ServedModel, Server
from argonic.inference.remote.dispatch import Dispatcher
from argonic.inference.remote.errors import NoPlaneModel
from argonic.inference.remote.identity import ModelSignature
from argonic.inference.remote.options import CallOptions
from argonic.inference.remote.pool import Attempt, ServerPool
from argonic.inference.remote.stats import CallStats, ServerStatistics
from argonic.inference.remote.wire import Encoder
from argonic.patches import encode_plane
from argonic.server import running_server
from argonic.settings import RemoteSettings


def _dispatcher(
    servers: list[str], repository: Path, batch_size: int, window: int
) -> tuple[Dispatcher, ServerPool]:
    remote = RemoteSettings(servers=servers, timeout_s=5.0, retries=0, backoff_s=0.01)
    signature = ModelSignature.expected(repository, MODEL)
    options = CallOptions.from_settings(remote)
    pool = ServerPool(remote, signature, options)
    dispatcher = Dispatcher(
        pool, Encoder(remote, signature), options, batch_size, window, lambda server: False
    )
    return dispatcher, pool


@pytest.mark.parametrize("batch_size, window, requests", [(64, 1, 16), (235, 3, 10)])
def test_requests_of_batch_size_capped_by_max_batch_size(
    tiny_server: str, tiny_repo: Path, batch_size: int, window: int, requests: int
) -> None:
    x = random_patches(1000, seed=5)
    dispatcher, pool = _dispatcher([tiny_server], tiny_repo, batch_size, window)
    out, call = np.full((1000, 4), np.nan, np.float32), CallStats()
    try:
        dispatcher.patches(x, out, call, pool.pick(Attempt(), call))
    finally:
        pool.close()
    assert_same_scores(out, ort_scores(tiny_repo, x))
    assert call.requests == requests == call.requests_by_server[tiny_server]
    assert dispatcher.progress == (1000, 1000) and call.failovers == 0


def test_request_too_big_for_its_server_is_split(tiny_server: str, tiny_repo: Path) -> None:
    x = random_patches(1000, seed=6)
    dispatcher, pool = _dispatcher([tiny_server], tiny_repo, 235, 2)
    bigger = Server("elsewhere:1", None)  # the call's first server took 235 rows
    bigger.mark_verified(ServedModel(235, frozenset()))
    out, call = np.empty((1000, 4), np.float32), CallStats()
    try:
        dispatcher.patches(x, out, call, bigger)
    finally:
        pool.close()
    assert_same_scores(out, ort_scores(tiny_repo, x))
    assert call.requests == 4 * 3 + 1  # 4 x 235 = 100 + 100 + 35 each, then 60


def test_failed_request_is_resent_whole_elsewhere(tiny_server: str, tiny_repo: Path) -> None:
    x = random_patches(700, seed=7)
    with running_server(tiny_repo, allow_metrics=False) as doomed:
        dispatcher, pool = _dispatcher([doomed.url, tiny_server], tiny_repo, 100, 3)
        first = pool.pick(Attempt(), CallStats())
        assert first.address == doomed.url
    # `doomed` is stopped now: its verified channel fails the first requests
    counts = ServerStatistics("total", MODEL, "", CallOptions.from_settings(RemoteSettings()))
    other = pool.servers[1]
    out, call = np.empty((700, 4), np.float32), CallStats()
    try:
        other.reconnect()
        before = counts.query(other)
        dispatcher.patches(x, out, call, first)
        after = counts.query(other)
    finally:
        pool.close()
    assert_same_scores(out, ort_scores(tiny_repo, x))
    assert call.failovers >= 1 and call.requests_by_server[tiny_server] == 7
    assert after["inferences"] - before["inferences"] == 700  # each patch scored once


def test_plane_request_needs_the_plane_model(tiny_server: str, tiny_repo: Path) -> None:
    dispatcher, pool = _dispatcher([tiny_server], tiny_repo, 235, 1)
    tensors = encode_plane(np.ones((60, 80), np.float32), np.array([5, 9]), np.array([10.0, 50.0]))
    call = CallStats()
    try:
        with pytest.raises(NoPlaneModel, match=tiny_server):
            dispatcher.plane(tensors, np.empty((2, 4), np.float32), call)
    finally:
        pool.close()
    assert call.requests == 0 and call.bytes_sent == 0
