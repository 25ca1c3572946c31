"""The load generator (argonic.study.loadgen) against real servers, and the server's
behaviour with more connections than its event loop takes at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from argonic.server import running_server
from argonic.study.loadgen import LoadSpec, format_load, jain_index, run_load
from argonic.study.workload import recorded_requests


def test_jain_index_known_values():
    assert jain_index([3.0, 3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)  # one takes all: 1/n
    assert jain_index([1.0, 2.0]) == pytest.approx(9 / 10)


@pytest.fixture(scope="module")
def patch_requests(mini_events):
    return recorded_requests(mini_events, "patch", batch_size=16)


def test_recorded_requests_are_the_events_hits(mini_events, patch_requests):
    """Patch mode: every hit's patch once, 16 per request; plane mode: one request per
    (TPC, plane), its hits those of the patch requests."""
    from argonic.detector.eventfile import EventFile

    with EventFile(mini_events) as events:
        hits = sum(len(events[i].hits) for i in range(len(events)))
    rows = []
    for raw in patch_requests:
        request = service_pb2.ModelInferRequest.FromString(raw)
        assert request.model_name == "emtrkmichelid"
        assert list(request.inputs[0].shape[1:]) == [48, 48, 1]
        assert len(request.raw_input_contents[0]) == np.prod(request.inputs[0].shape) * 4
        rows.append(request.inputs[0].shape[0])
    assert max(rows) == 16 and sum(rows) == hits
    planes = recorded_requests(mini_events, "plane")
    plane_hits = 0
    for raw in planes:
        request = service_pb2.ModelInferRequest.FromString(raw)
        assert request.model_name == "emtrkmichelid_plane"
        names = [t.name for t in request.inputs]
        plane_hits += request.inputs[names.index("hit_wire")].shape[0]
    assert plane_hits == hits and len(planes) < len(patch_requests)


@pytest.mark.slow
def test_a_thousand_connections_while_the_server_is_busy(tiny_repo, patch_requests):
    """1,200 clients, each its own connection, connect while the server's event loop is
    blocked, so that more calls wait in gRPC core than its default backlog (1,000; beyond,
    calls are dropped with CANCELLED at random). Every client connects and gets its requests
    answered; the only refusals are clean ones."""
    spec = LoadSpec(connections=1200, requests=2, deadline_s=120)
    with running_server(tiny_repo, allow_metrics=False) as handle:

        def busy_loop() -> None:
            time.sleep(3.0)  # the server's event loop takes no call meanwhile

        handle.loop.call_soon_threadsafe(busy_loop)
        report = asyncio.run(run_load(handle.url, patch_requests, spec))
    print(format_load(report))
    assert report["connections"] == 1200
    assert report["answered"] == 2400 and report["lost"] == 0
    assert report["unclean_statuses"] == 0, report["refusals"]
    assert 0 < report["jain_fairness"] <= 1


@pytest.mark.slow
def test_too_few_file_descriptors_is_a_clear_error(tmp_path):
    """A hard limit below what the connections need: LoadError naming the limit, not a hang
    (the subprocess's timeout is the hang guard)."""
    code = (
        "import asyncio, resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
        "from argonic.study.loadgen import LoadSpec, run_load\n"
        "asyncio.run(run_load('127.0.0.1:1', [b''], LoadSpec(2000)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "LoadError" in run.stderr
    assert "2000 connections need about 2064 open files" in run.stderr
    assert "at most 256" in run.stderr
