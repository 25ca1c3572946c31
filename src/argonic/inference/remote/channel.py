"""One server: its address, its gRPC channel, its health, and what its last check found."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2

from argonic.inference.remote.errors import RECONNECT

SERVICE = "/inference.GRPCInferenceService/"
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # quick reconnection after a server restart; min_reconnect_backoff_ms stays at gRPC's
    # default (20 s) because gRPC core uses it as the connect deadline: 100 ms there
    # failed every handshake over a 100 ms round trip or to a busy server
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class ServedModel:
    """What a server's checks found: its max_batch_size and the transport options it decodes
    (ModelConfig ``parameters["argonic_transport"]``)."""

    max_batch_size: int
    transport: frozenset[str]


class Server:
    """A server address, its channel, and its health.

    ``verified`` is False until the model checks pass on the current channel (the pool runs
    them); ``checks`` counts the checks that passed, so results cached per check (the plane
    model's) are dropped when the server is checked again.
    """

    def __init__(
        self, address: str, credentials: grpc.ChannelCredentials | None, fallback: bool = False
    ) -> None:
        self.address = address
        self.fallback = fallback
        self.label = f"{address} (local fallback)" if fallback else address
        self._credentials = credentials
        self.channel: grpc.Channel | None = None
        self._callables: dict[tuple[str, bool], grpc.UnaryUnaryMultiCallable] = {}
        self._retired: list[grpc.Channel] = []
        self.verified = False
        self.checks = 0
        self.model = ServedModel(0, frozenset())
        self.failed_at: float | None = None
        self.needs_reconnect = False

    def rpc(self, method: str, raw: bool = False) -> grpc.UnaryUnaryMultiCallable:
        """A callable for one method; ``raw``: bytes in and out (the client serialises)."""
        if self.channel is None or self.needs_reconnect:
            self.reconnect()
        assert self.channel is not None
        key = (method, raw)
        if key not in self._callables:
            if raw:
                self._callables[key] = self.channel.unary_unary(SERVICE + method)
            else:
                request = getattr(service_pb2, f"{method}Request")
                response = getattr(service_pb2, f"{method}Response")
                self._callables[key] = self.channel.unary_unary(
                    SERVICE + method,
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                )
        return self._callables[key]

    def reconnect(self) -> None:
        """Open a fresh channel; the model is checked again before the next request."""
        if self.channel is not None:
            self._retired.append(self.channel)  # in-flight calls may still use it
        self.channel = (
            grpc.secure_channel(self.address, self._credentials, CHANNEL_OPTIONS)
            if self._credentials
            else grpc.insecure_channel(self.address, CHANNEL_OPTIONS)
        )
        self._callables.clear()
        self.needs_reconnect = False
        self.verified = False

    def mark_verified(self, model: ServedModel) -> None:
        """The model checks passed on this channel."""
        self.model = model
        self.verified = True
        self.checks += 1

    @property
    def ready(self) -> bool:
        """Checked on the current channel, and no failure since."""
        return self.verified and not self.needs_reconnect

    def healthy(self, recheck_s: float) -> bool:
        """Not failed within the last ``recheck_s`` seconds."""
        return self.failed_at is None or time.monotonic() - self.failed_at >= recheck_s

    def mark_failed(self, code: grpc.StatusCode | None) -> None:
        """Record a failure: checked again before its next use; connection-like failures
        also get a fresh channel."""
        self.failed_at = time.monotonic()
        self.verified = False
        if code is None or code in RECONNECT:
            self.needs_reconnect = True

    def answered(self) -> None:
        """A request succeeded: the server is healthy again."""
        self.failed_at = None

    def close_retired(self) -> None:
        """Close the channels replaced by reconnections (call when nothing is in flight)."""
        for channel in self._retired:
            channel.close()
        self._retired.clear()

    def close(self) -> None:
        """Close every channel this server opened."""
        for channel in [*self._retired, self.channel]:
            if channel is not None:
                channel.close()
        self._retired.clear()
        self.channel = None
