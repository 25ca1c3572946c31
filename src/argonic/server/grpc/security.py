"""Security of both endpoints with Triton's flags: TLS, restricted protocols and APIs.

- TLS (``--grpc-use-ssl``, ``--grpc-server-cert``, ``--grpc-server-key``, ``--grpc-root-cert``,
  ``--grpc-use-ssl-mutual``): grpc's own ``ssl_server_credentials``; with mutual TLS a client
  must present a certificate signed by the root certificate. HTTP is not served over TLS,
  as in Triton, which leaves HTTPS to a proxy in front (nginx, Envoy).
- Restricted protocols (``--grpc-restricted-protocol=<categories>:<key>=<value>``): a server
  interceptor refuses a call of a restricted category that lacks the header ``<key>: <value>``
  with Triton's answer, UNAVAILABLE "This protocol is restricted, expecting header '<key>'".
- Restricted APIs on HTTP (``--http-restricted-api=<categories>:<key>=<value>``, the same
  categories): 403 with Triton's body, "This API is restricted, expecting header '<key>'"
  (argonic.server.http.endpoint checks it before a handler reads the body).
- No side door (``check_http_exposure``): a server whose gRPC endpoint is secured does not
  start with an HTTP endpoint that is open where gRPC is not.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from argonic import ArgonicError
from argonic.server.core.errorlog import ErrorLog
from argonic.server.grpc.servicer import HANDLER_KINDS

# Triton's protocol categories -> the RPCs they cover (method names of the v2 service,
# plus the standard gRPC health service for "health")
CATEGORIES: dict[str, tuple[str, ...]] = {
    "health": ("ServerLive", "ServerReady", "ModelReady", "grpc.health.v1.Health"),
    "metadata": ("ServerMetadata", "ModelMetadata"),
    "inference": ("ModelInfer", "ModelStreamInfer"),
    "shared-memory": (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
    ),
    "model-config": ("ModelConfig",),
    "model-repository": ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    "statistics": ("ModelStatistics",),
    "trace": ("TraceSetting",),
    "logging": ("LogSettings",),
}
_SERVICE = "/inference.GRPCInferenceService/"


class SecurityError(ArgonicError, ValueError):
    """A TLS or restricted-protocol setting that cannot work."""


@dataclass(frozen=True)
class TlsConfig:
    """PEM files for TLS; ``mutual``: clients must present a certificate ``root_cert`` signed."""

    server_cert: Path
    server_key: Path
    root_cert: Path | None = None
    mutual: bool = False

    def credentials(self) -> grpc.ServerCredentials:
        """grpc server credentials (files read now: a missing file is a SecurityError)."""
        if self.mutual and self.root_cert is None:
            raise SecurityError("--grpc-use-ssl-mutual needs --grpc-root-cert")
        try:
            key, cert = Path(self.server_key).read_bytes(), Path(self.server_cert).read_bytes()
            root = Path(self.root_cert).read_bytes() if self.root_cert else None
        except OSError as exc:
            raise SecurityError(f"cannot read a TLS file: {exc}") from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=root, require_client_auth=self.mutual
        )


@dataclass(frozen=True)
class Restriction:
    """Calls of these categories need the header ``key: value``."""

    categories: frozenset[str]
    key: str
    value: str


def parse_restriction(text: str, flag: str = "--grpc-restricted-protocol") -> Restriction:
    """``health,inference:<key>=<value>`` (Triton's syntax of ``flag``)."""
    categories, sep, header = text.partition(":")
    key, eq, value = header.partition("=")
    names = frozenset(c.strip() for c in categories.split(",") if c.strip())
    if not sep or not eq or not key.strip() or not names:
        raise SecurityError(f"{flag} {text!r}: expected <categories>:<key>=<value>")
    unknown = sorted(names - set(CATEGORIES))
    if unknown:
        raise SecurityError(
            f"{flag}: unknown categories {unknown} (known: {', '.join(CATEGORIES)})"
        )
    return Restriction(names, key.strip().lower(), value)


class RestrictionTable:
    """The restricted categories of one endpoint and the header each needs."""

    def __init__(self, restrictions: Iterable[Restriction], flag: str) -> None:
        self.by_category: dict[str, Restriction] = {}
        for r in restrictions:
            for category in r.categories:
                if category in self.by_category:
                    raise SecurityError(f"{flag}: category '{category}' is restricted twice")
                self.by_category[category] = r

    def missing_header(
        self, category: str | None, headers: Iterable[tuple[str, str | bytes]]
    ) -> str | None:
        """None if a call of ``category`` with ``headers`` may go on, else the header key
        it lacks (names compared case-insensitively, values in constant time)."""
        rule = self.by_category.get(category) if category else None
        if rule is None:
            return None
        for key, value in headers:
            if (
                key.lower() == rule.key
                and isinstance(value, str)
                and hmac.compare_digest(value.encode(), rule.value.encode())
            ):
                return None
        return rule.key


_LOOPBACK = ("127.", "::1", "localhost")


def check_http_exposure(
    tls: TlsConfig | None,
    grpc_restricted: Iterable[Restriction],
    http_address: str | None,
    http_restricted: Iterable[Restriction],
) -> None:
    """SecurityError (one line naming the flags to add) when gRPC is secured and the HTTP
    endpoint (``http_address``; None: off) would be open where gRPC is not: with TLS, HTTP
    must be off or listen on loopback only (HTTPS belongs to a proxy in front); with
    restricted protocols, HTTP must restrict at least the same categories."""
    if http_address is None:
        return
    grpc_categories = {c for r in grpc_restricted for c in r.categories}
    http_categories = {c for r in http_restricted for c in r.categories}
    if tls is not None and not http_address.startswith(_LOOPBACK):
        raise SecurityError(
            f"gRPC is served over TLS but HTTP would be plaintext on {http_address}: add "
            "--allow-http false, or --http-address 127.0.0.1 behind a TLS-terminating proxy"
        )
    open_on_http = sorted(grpc_categories - http_categories)
    if open_on_http:
        raise SecurityError(
            f"gRPC restricts {', '.join(open_on_http)} but HTTP would not: add --allow-http "
            f"false, or --http-restricted-api {','.join(open_on_http)}:<key>=<value>"
        )


def _method_categories() -> dict[str, str]:
    out = {}
    for category, methods in CATEGORIES.items():
        for m in methods:
            out[f"/{m}/" if "." in m else _SERVICE + m] = category
    return out


_METHODS = _method_categories()


def category_of(method: str) -> str | None:
    """The protocol category of a full gRPC method name (None: not a v2/health method)."""
    if method in _METHODS:
        return _METHODS[method]
    service = method.rsplit("/", 1)[0] + "/"
    return _METHODS.get(service)


class RestrictedProtocols(grpc.aio.ServerInterceptor):
    """Refuses calls of restricted categories without the right header (Triton's status)."""

    def __init__(self, restrictions: Iterable[Restriction], errors: ErrorLog | None = None):
        self.table = RestrictionTable(restrictions, "--grpc-restricted-protocol")
        self.errors = errors or ErrorLog()

    def allowed(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        """None if the call may go on, else the header it lacks."""
        category = category_of(method)
        missing = self.table.missing_header(category, metadata)
        if missing is not None:
            self.errors.record(
                f"restricted {category} UNAVAILABLE", f"{method} without '{missing}'"
            )
        return missing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        missing = self.allowed(
            handler_call_details.method, handler_call_details.invocation_metadata or ()
        )
        if missing is None or handler is None:
            return handler
        return _refusal(handler, f"This protocol is restricted, expecting header '{missing}'")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind that answers UNAVAILABLE without parsing the request."""

    async def unary(request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    async def streaming(request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)
        yield b""  # pragma: no cover - abort raises

    kind = HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
    return kind(streaming if handler.response_streaming else unary)
