"""The remote client's shared memory (``shared_memory = "auto"``; "off" by default): patches to a server on
this host travel in /dev/shm, with the same scores as over the wire and as ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.models import ort_scores, random_patches
from support.remote import assert_same_scores, remote

from argonic.inference.base import InvalidPatchesError
from argonic.inference.remote.shm import is_local
from argonic.server import running_server


@pytest.fixture(scope="module")
def server(tiny_repo: Path):
    with running_server(tiny_repo, allow_metrics=False) as handle:
        yield handle


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_same_scores_with_and_without_shared_memory(server, tiny_repo: Path, mode: str) -> None:
    x = random_patches(530, seed=4)
    truth = ort_scores(tiny_repo, x)
    results = {}
    for setting in ("auto", "off"):
        client = remote([server.url], tiny_repo, shared_memory=setting, mode=mode, batch_size=100)
        try:
            results[setting] = client.predict(x), client.stats()["total"]["bytes_sent"]
            regions = server.server.dataplane.shared_memory.regions
            if setting == "auto":
                assert regions  # registered with the server while the client is open
                keys = [Path("/dev/shm") / r.key for r in regions.values()]
                assert all(k.exists() for k in keys)
        finally:
            client.close()
        if setting == "auto":
            assert not any(k.exists() for k in keys)  # removed on close
            assert not server.server.dataplane.shared_memory.regions  # and unregistered
    for setting in ("auto", "off"):
        assert_same_scores(results[setting][0], truth)
    assert results["auto"][1] * 100 < results["off"][1]  # descriptions, not patches


def test_only_this_host_counts_as_local() -> None:
    assert is_local("127.0.0.1:8001") and is_local("localhost:8001")
    assert not is_local("192.0.2.1:8001")  # TEST-NET-1: never this machine
    assert not is_local("no-such-host.invalid:8001")


def test_slots_come_back_after_a_failed_request(server, tiny_repo: Path) -> None:
    """A request the server fails after its slot was filled (here the server has forgotten
    the client's regions, as after a restart) gives its slot back, and its patches go over
    the wire with the same scores; NaN patches are refused before any slot is taken."""
    client = remote([server.url], tiny_repo, shared_memory="auto", batch_size=50)
    x = random_patches(120, seed=5)
    truth = ort_scores(tiny_repo, x)
    try:
        assert_same_scores(client.predict(x), truth)
        slots = client._shm
        assert slots._slots and len(slots._free) == len(slots._slots)
        sent = client.stats()["total"]["bytes_sent"]
        server.server.dataplane.shared_memory.unregister()  # every region forgotten
        assert_same_scores(client.predict(x), truth)
        assert client.stats()["total"]["bytes_sent"] - sent > x.nbytes  # over the wire
        assert len(slots._free) == len(slots._slots)
        with pytest.raises(InvalidPatchesError, match="contains NaN or inf"):
            client.predict(np.full((60, 48, 48, 1), np.nan, np.float32))
        assert len(slots._free) == len(slots._slots)
    finally:
        client.close()
