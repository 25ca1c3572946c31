"""The remote client's errors, and which gRPC statuses are worth another server."""

from __future__ import annotations

import grpc

from argonic.inference.base import InterfaceError

#: Statuses after which a request (or a connection check) goes to the next server;
#: any other status (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED,
#: ...) is fatal: another server would refuse it the same way.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
#: Statuses (a subset of RETRYABLE) that also call for a fresh channel.
RECONNECT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


class RemoteInferenceError(InterfaceError):
    """No server answered a request after all retries (or a server answered nonsense)."""


class ModelMismatchError(InterfaceError):
    """A server serves a model other than the expected one."""


class NotReady(Exception):
    """A server or model that answers but is not ready."""


class NoPlaneModel(Exception):
    """The chosen server does not serve the plane model."""


def status_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    """The gRPC status of ``error`` (None for an error that carries none)."""
    return error.code() if hasattr(error, "code") else None


def describe(error: grpc.RpcError) -> str:
    """``"CODE: details"`` for a log line or an error message."""
    code = status_code(error)
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code else 'ERROR'}: {details}"
