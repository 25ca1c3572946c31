"""plane: when plane mode is on, and each server asked once per check, against real servers
with and without the plane model."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.models import MODEL

from argonic.inference.remote import plane
from argonic.inference.remote.channel import Server
from argonic.inference.remote.identity import ModelSignature, verify
from argonic.inference.remote.options import CallOptions
from argonic.inference.remote.plane import PlaneMode
from argonic.repository import shipped_repository
from argonic.server import running_server
from argonic.settings import RemoteSettings


@pytest.fixture(scope="module")
def plane_server(tmp_path_factory: pytest.TempPathFactory, tiny_repo: Path) -> Iterator[str]:
    """The tiny network and the shipped plane-model config over it."""
    repo = tmp_path_factory.mktemp("plane_repo")
    shutil.copytree(tiny_repo / MODEL, repo / MODEL)
    (repo / "emtrkmichelid_plane").mkdir()
    shutil.copy(
        shipped_repository() / "emtrkmichelid_plane" / "config.pbtxt",
        repo / "emtrkmichelid_plane" / "config.pbtxt",
    )
    with running_server(repo, allow_metrics=False) as handle:
        yield handle.url


def _mode(repository: Path, **settings: object) -> PlaneMode:
    remote = RemoteSettings(**{"request_mode": "plane", "timeout_s": 5.0, **settings})
    return PlaneMode(
        remote, ModelSignature.expected(repository, MODEL), CallOptions.from_settings(remote)
    )


def _checked(mode: PlaneMode, address: str) -> Server:
    server = Server(address, None)
    server.mark_verified(verify(server, mode.signature, MODEL, "", mode.options))
    return server


def test_active_only_when_configured_and_until_turned_off(
    tiny_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not _mode(tiny_repo, request_mode="patch").active
    mode = _mode(tiny_repo)
    assert mode.active
    with caplog.at_level(logging.WARNING, logger="argonic.inference.remote"):
        mode.turn_off("a:1")
    assert not mode.active
    assert "server a:1 does not serve the plane model 'emtrkmichelid_plane'" in caplog.text


def test_each_server_asked_once_per_check(
    plane_server: str, tiny_server: str, tiny_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = plane.serves_plane_model

    def counted(server: Server, *args: object) -> bool:
        asked.append(server.address)
        return real(server, *args)

    monkeypatch.setattr(plane, "serves_plane_model", counted)
    mode = _mode(tiny_repo)
    with_plane, without = _checked(mode, plane_server), _checked(mode, tiny_server)
    try:
        assert mode.ready(with_plane) and mode.ready(with_plane)
        assert not mode.ready(without) and not mode.ready(without)
        assert asked == [plane_server, tiny_server]
        with_plane.mark_failed(grpc.StatusCode.UNAVAILABLE)  # a new channel, checked again
        with_plane.mark_verified(verify(with_plane, mode.signature, MODEL, "", mode.options))
        assert mode.ready(with_plane)
        assert asked == [plane_server, tiny_server, plane_server]
    finally:
        with_plane.close()
        without.close()
