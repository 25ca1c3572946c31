"""identity: the expected model read from a repository (checksums from hashlib), and the checks
run against what a real server reports (fetched with tritonclient's own client)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton
from support.models import MODEL, tiny_onnx

from argonic.inference.local_server import free_port
from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import ModelMismatchError
from argonic.inference.remote.identity import (
    ModelSignature,
    TensorSpec,
    served_sha256,
    serves_plane_model,
    verify,
)
from argonic.inference.remote.options import CallOptions
from argonic.settings import RemoteSettings

OPTIONS = CallOptions.from_settings(RemoteSettings(timeout_s=5.0))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _served(address: str) -> tuple:
    client = triton.InferenceServerClient(address)
    try:
        return client.get_model_metadata(MODEL), client.get_model_config(MODEL).config
    finally:
        client.close()


def test_expected_model_is_the_repositorys(tiny_repo: Path) -> None:
    signature = ModelSignature.expected(tiny_repo, MODEL)
    assert signature.name == MODEL
    assert signature.inputs == (TensorSpec("main_input", "FP32", (48, 48, 1)),)
    assert [(s.name, s.dims) for s in signature.outputs] == [
        ("em_trk_none_netout", (3,)),
        ("michel_netout", (1,)),
    ]
    assert signature.sha256 == _sha256(tiny_repo / MODEL / "1" / "model.onnx")
    assert ModelSignature.expected(tiny_repo, MODEL, sha256="").sha256 == ""
    assert ModelSignature.expected(None, MODEL) == ModelSignature.default(MODEL)


def test_checksum_of_the_latest_or_the_named_version(tiny_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    model_dir = repo / MODEL
    shutil.rmtree(model_dir / "1")
    for version, seed in ((1, 0), (2, 5), (10, 6)):
        (model_dir / str(version)).mkdir(parents=True)
        tiny_onnx(model_dir / str(version) / "model.onnx", seed)
        digest = _sha256(model_dir / str(version) / "model.onnx")
        (model_dir / str(version) / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")

    def expected(version: str) -> str:
        return ModelSignature.expected(repo, MODEL, version).sha256

    assert expected("") == _sha256(model_dir / "10" / "model.onnx")
    assert expected("2") == _sha256(model_dir / "2" / "model.onnx")
    assert expected("7") == ""  # no such version: nothing to compare
    (model_dir / "2" / "model.onnx.sha256").unlink()
    assert expected("2") == ""  # no checksum file: nothing declared


def test_served_model_passes_and_its_facts_are_returned(tiny_server: str, tiny_repo: Path) -> None:
    signature = ModelSignature.expected(tiny_repo, MODEL)
    metadata, config = _served(tiny_server)
    signature.check(tiny_server, metadata, config, "1")
    assert served_sha256(config) == signature.sha256
    server = Server(tiny_server, None)
    try:
        served = verify(server, signature, MODEL, "", OPTIONS)
    finally:
        server.close()
    assert served.max_batch_size == config.max_batch_size == 100
    advertised = config.parameters["argonic_transport"].string_value.split(",")
    assert served.transport == frozenset(advertised) and "fp16" in served.transport


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sha256": "ab" * 32}, r"sha256 [0-9a-f]{64} \(expected (ab){32}\)"),
        ({"name": "other"}, "name 'emtrkmichelid' .expected 'other'"),
        (
            {"outputs": (TensorSpec("em_trk_none_netout", "FP32", (3,)),)},
            r"outputs em_trk_none_netout FP32 \[3\], michel_netout FP32 \[1\] "
            r"\(expected em_trk_none_netout FP32 \[3\]\)",
        ),
        ({"inputs": (TensorSpec("main_input", "FP16", (48, 48, 1)),)}, "inputs main_input FP32"),
    ],
)
def test_different_model_is_refused(
    tiny_server: str, tiny_repo: Path, change: dict, message: str
) -> None:
    signature = ModelSignature.expected(tiny_repo, MODEL)
    wanted = ModelSignature(**{**signature.__dict__, **change})
    metadata, config = _served(tiny_server)
    with pytest.raises(ModelMismatchError, match=f"server {tiny_server} serves a different"):
        wanted.check(tiny_server, metadata, config, "")
    with pytest.raises(ModelMismatchError, match=message):
        wanted.check(tiny_server, metadata, config, "")


def test_version_and_batch_dimension_are_checked(tiny_server: str, tiny_repo: Path) -> None:
    signature = ModelSignature.expected(tiny_repo, MODEL)
    metadata, config = _served(tiny_server)
    with pytest.raises(ModelMismatchError, match=r"versions \['1'\] \(expected 4\)"):
        signature.check(tiny_server, metadata, config, "4")
    config.max_batch_size = 0
    with pytest.raises(ModelMismatchError, match="max_batch_size 0"):
        signature.check(tiny_server, metadata, config, "")


def test_unpublished_checksum_is_a_warning(
    tiny_server: str, tiny_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signature = ModelSignature.expected(tiny_repo, MODEL)
    metadata, config = _served(tiny_server)
    del config.parameters["sha256"]  # as NVIDIA Triton reports it
    with caplog.at_level(logging.WARNING, logger="argonic.inference.remote"):
        signature.check(tiny_server, metadata, config, "")
    assert "does not publish the sha256" in caplog.text


def test_plane_model_absent_or_unreachable_is_no(
    tiny_server: str, tiny_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signature = ModelSignature.expected(tiny_repo, MODEL)
    for address in (tiny_server, f"127.0.0.1:{free_port()}"):
        server = Server(address, None)
        try:
            assert not serves_plane_model(server, signature, "emtrkmichelid_plane", "", OPTIONS)
        finally:
            server.close()
    assert "unavailable (UNAVAILABLE" in caplog.text


def test_dead_server_raises_the_grpc_error(tiny_repo: Path) -> None:
    server = Server(f"127.0.0.1:{free_port()}", None)
    try:
        with pytest.raises(grpc.RpcError) as info:
            verify(server, ModelSignature.expected(tiny_repo, MODEL), MODEL, "", OPTIONS)
    finally:
        server.close()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plane_model_of_another_network_is_refused(tmp_path: Path, tiny_repo: Path) -> None:
    from argonic.repository import shipped_repository
    from argonic.server import running_server

    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo / MODEL, repo / MODEL)
    (repo / "emtrkmichelid_plane").mkdir()
    shutil.copy(
        shipped_repository() / "emtrkmichelid_plane" / "config.pbtxt",
        repo / "emtrkmichelid_plane" / "config.pbtxt",
    )
    signature = ModelSignature.expected(tiny_repo, MODEL)
    with running_server(repo, allow_metrics=False) as handle:
        server = Server(handle.url, None)
        try:
            assert serves_plane_model(server, signature, "emtrkmichelid_plane", "", OPTIONS)
            other = ModelSignature(**{**signature.__dict__, "sha256": "cd" * 32})
            with pytest.raises(ModelMismatchError, match="plane model .*network sha256"):
                serves_plane_model(server, other, "emtrkmichelid_plane", "", OPTIONS)
        finally:
            server.close()
