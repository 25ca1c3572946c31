"""The remote client's configuration: validated settings and what is derived from them.

Every key and its default live in :mod:`argonic.settings` (``InferenceSettings``:
``batch_size`` and the ``[inference.remote]`` table, ``RemoteSettings``); this module only
validates what a caller passes and derives the objects the other modules use: the model
repository, the TLS credentials, the per-call options (deadline, token, compression).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pydantic import ValidationError

from argonic import transport as tensor_transport
from argonic.inference import inference_settings
from argonic.inference.base import InterfaceError
from argonic.repository import ModelRepositoryError, shipped_repository
from argonic.settings import InferenceSettings, RemoteSettings, validation_message

log = logging.getLogger(__name__)

#: gRPC message compression by its ``compression`` setting name.
GRPC_COMPRESSION = {
    "none": grpc.Compression.NoCompression,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}


def remote_settings(
    config: InferenceSettings | Mapping[str, Any] | None, **overrides: Any
) -> InferenceSettings:
    """``config`` (the ``[inference]`` table) with ``overrides`` of ``[inference.remote]`` keys
    (or ``batch_size``), validated; InterfaceError naming the first bad key."""
    settings = inference_settings(config if config is not None else {})
    if overrides:
        table = settings.model_dump()
        batch_size = overrides.pop("batch_size", table["batch_size"])
        table["remote"] = {**table["remote"], **overrides}
        table["batch_size"] = batch_size
        try:
            settings = InferenceSettings.model_validate(table)
        except ValidationError as exc:
            raise InterfaceError(f"[inference] {validation_message(exc)}") from None
    check_codec(settings.remote)
    return settings


def check_codec(remote: RemoteSettings) -> None:
    """InterfaceError if the module of the configured tensor compression is missing."""
    try:
        tensor_transport.compressor(remote.tensor_compression)
    except tensor_transport.CompressionError as exc:
        raise InterfaceError(
            f"[inference.remote] tensor_compression = {remote.tensor_compression!r}: {exc}"
        ) from None


def repository(remote: RemoteSettings) -> Path | None:
    """The model repository of the fallback server and the expected model, if any."""
    if remote.model_repository:
        return Path(remote.model_repository)
    try:
        return shipped_repository()
    except ModelRepositoryError as exc:
        log.warning("%s: the expected model is the built-in emtrkmichelid signature", exc)
        return None


def channel_credentials(remote: RemoteSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials from the PEM files (None: a plain-text channel)."""
    if not (remote.root_cert or remote.client_cert):
        return None

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        read(remote.root_cert), read(remote.client_key), read(remote.client_cert)
    )


@dataclass(frozen=True)
class CallOptions:
    """What every RPC carries: the deadline, the token metadata, gRPC compression."""

    timeout_s: float
    metadata: tuple[tuple[str, str], ...] | None
    compression: grpc.Compression

    @classmethod
    def from_settings(cls, remote: RemoteSettings) -> CallOptions:
        metadata = (("authorization", f"Bearer {remote.token}"),) if remote.token else None
        return cls(remote.timeout_s, metadata, GRPC_COMPRESSION[remote.compression])

    def check(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Keyword arguments of a (small, uncompressed) check RPC."""
        return {
            "timeout": self.timeout_s if timeout_s is None else timeout_s,
            "metadata": self.metadata,
        }

    def infer(self, extra: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """Keyword arguments of a ModelInfer RPC (``extra``: more metadata, a traceparent)."""
        return {
            "timeout": self.timeout_s,
            "metadata": (self.metadata or ()) + extra or None,
            "compression": self.compression,
        }
