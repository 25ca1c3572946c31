"""config: the settings a caller passes, validated by argonic.settings (the one home of every
default), and what the client derives from them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from argonic import transport
from argonic.inference import InterfaceError
from argonic.inference.remote.options import (
    CallOptions,
    channel_credentials,
    remote_settings,
    repository,
)
from argonic.repository import shipped_repository
from argonic.settings import InferenceSettings, RemoteSettings, load_settings


def test_defaults_are_the_settings_modules() -> None:
    assert remote_settings(None) == InferenceSettings()
    assert remote_settings({}) == load_settings().inference
    assert remote_settings({}).remote.servers == RemoteSettings().servers


def test_table_then_overrides() -> None:
    table = {"batch_size": 235, "remote": {"servers": "a:1,b:2", "mode": "async"}}
    settings = remote_settings(table, timeout_s=3, max_in_flight=8)
    assert settings.batch_size == 235
    assert settings.remote.servers == ["a:1", "b:2"]
    assert (settings.remote.mode, settings.remote.timeout_s, settings.remote.max_in_flight) == (
        "async",
        3.0,
        8,
    )
    assert remote_settings(InferenceSettings(), batch_size=1693).batch_size == 1693
    given = InferenceSettings(batch_size=64)
    assert remote_settings(given) is given


@pytest.mark.parametrize(
    "table, overrides, message",
    [
        ({}, {"mode": "fast"}, r"remote\.mode: .*'sync' or 'async'.*'fast'"),
        ({}, {"colour": "red"}, r"unknown key 'remote\.colour'"),
        ({}, {"servers": ["nohost"]}, r"remote\.servers: .*'nohost' is not \"host:port\""),
        ({}, {"batch_size": 0}, r"batch_size: .*greater than or equal to 1"),
        ({"remote": {"retries": -1}}, {}, r"remote\.retries"),
        ({}, {"client_cert": "/x.pem"}, "client_cert and client_key go together"),
    ],
)
def test_bad_value_names_its_key(table: dict, overrides: dict, message: str) -> None:
    with pytest.raises(InterfaceError, match=message):
        remote_settings(table, **overrides)


def test_missing_codec_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise transport.CompressionError(f"{name}: install the zstandard module")

    monkeypatch.setattr(transport, "compressor", missing)
    with pytest.raises(InterfaceError, match="tensor_compression = 'zstd': zstd: install"):
        remote_settings({}, tensor_compression="zstd")


def test_repository_given_or_shipped(tmp_path: Path) -> None:
    assert repository(RemoteSettings(model_repository=str(tmp_path))) == tmp_path
    assert repository(RemoteSettings()) == shipped_repository()


def test_call_options() -> None:
    plain = CallOptions.from_settings(RemoteSettings(timeout_s=7.0))
    assert plain.check() == {"timeout": 7.0, "metadata": None}
    assert plain.check(2.0)["timeout"] == 2.0
    assert plain.infer()["compression"] == grpc.Compression.NoCompression
    secret = CallOptions.from_settings(RemoteSettings(token="s3cret", compression="gzip"))
    assert secret.infer() == {
        "timeout": 60.0,
        "metadata": (("authorization", "Bearer s3cret"),),
        "compression": grpc.Compression.Gzip,
    }


def test_credentials_only_with_certificates(tmp_path: Path) -> None:
    assert channel_credentials(RemoteSettings()) is None
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls = RemoteSettings(root_cert=str(cert), client_cert=str(cert), client_key=str(key))
    assert isinstance(channel_credentials(tls), grpc.ChannelCredentials)
