"""Errors the server answers with: each carries the gRPC status code Triton would use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from argonic import ArgonicError
from argonic.repository import ModelRepositoryError
from argonic.repository.reader import UnknownModel


class ServerError(ArgonicError):
    """A request or repository error with the gRPC status code to answer it with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(ServerError):
    """Bad request: wrong dtype, shape, byte length, missing input, batch too large."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class HostUnsupported(InvalidArgument):
    """A model this host cannot run well (a precision without native kernels, no torch):
    skipped at start-up with a warning, refused with this message when a client loads it."""


class NotFound(ServerError):
    """Unknown model or version."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(ServerError):
    """Queue full, queue timeout, model unloading or server shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


def unknown_model(name: str, version: str = "") -> NotFound:
    """Triton's message for an unknown model or version."""
    if version:
        return NotFound(f"Request for unknown model: '{name}' version {version} is not found")
    return NotFound(f"Request for unknown model: '{name}' is not found")


@contextlib.contextmanager
def repository_errors() -> Iterator[None]:
    """The model repository's errors (argonic.repository) as the statuses Triton answers
    them with: an unknown model NOT_FOUND, anything else INVALID_ARGUMENT."""
    try:
        yield
    except UnknownModel as exc:
        raise NotFound(str(exc)) from None
    except ModelRepositoryError as exc:
        raise InvalidArgument(str(exc)) from None
