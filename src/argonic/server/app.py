"""Running the server: ``serve`` (blocking, SIGTERM drains) and ``running_server`` (tests)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from argonic.server import cpu, health
from argonic.server.dataplane import DataPlane
from argonic.server.errorlog import ErrorLog
from argonic.server.errors import ServerError
from argonic.server.http import start_http
from argonic.server.limits import (
    DEFAULT_MAX_INFLIGHT_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    limit_malloc_arenas,
)
from argonic.server.metrics import MetricsExporter, start_metrics_server
from argonic.server.poller import RepositoryPoller
from argonic.server.repository import ModelRepository
from argonic.server.security import (
    RestrictedProtocols,
    Restriction,
    RestrictionTable,
    TlsConfig,
    check_http_exposure,
)
from argonic.server.servicer import SERVICE_FULL_NAME, InferenceServicer, add_to_server

log = logging.getLogger("argonic.server")


class InferenceServer:
    """gRPC inference service, health service and metrics endpoint over one DataPlane."""

    def __init__(
        self,
        model_repository: str | Path,
        host: str = "0.0.0.0",
        grpc_port: int = 8001,
        metrics_port: int | None = 8002,
        models: list[str] | None = None,
        drain_timeout_s: float = 30.0,
        model_control_mode: str = "none",
        repository_poll_s: float = 15.0,
        tls: TlsConfig | None = None,
        restricted: Sequence[Restriction] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        http_port: int | None = None,
        allow_grpc: bool = True,
        http_address: str | None = None,
        http_restricted: Sequence[Restriction] = (),
    ) -> None:
        self.model_repository = Path(model_repository)
        self.model_control_mode = model_control_mode
        self.repository_poll_s = repository_poll_s
        self.poller: RepositoryPoller | None = None
        self.tls = tls
        self.max_message_bytes = max_message_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.host = host
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.models = models
        self.drain_timeout_s = drain_timeout_s
        self.http_port = http_port  # None: no HTTP/REST endpoint
        self.http_address = http_address or host
        check_http_exposure(
            tls if allow_grpc else None,
            restricted if allow_grpc else (),
            self.http_address if http_port is not None else None,
            http_restricted,
        )
        self.http_restricted = RestrictionTable(http_restricted, "--http-restricted-api")
        self.allow_grpc = allow_grpc
        self._http = None
        self._health: health.ServerHealth | None = None
        self.dataplane: DataPlane | None = None
        self.errors = ErrorLog()
        self.interceptors = [RestrictedProtocols(restricted, self.errors)] if restricted else []
        self._grpc: grpc.aio.Server | None = None
        self._metrics = None
        self._stop_requested: asyncio.Event | None = None
        self._stopping: asyncio.Task | None = None

    async def start(self) -> None:
        """Load the models, then listen (ports 0 are replaced by the ports actually bound)."""
        self._stop_requested = asyncio.Event()
        credentials = self.tls.credentials() if self.tls else None  # bad files: fail first
        self.dataplane = dp = DataPlane(
            ModelRepository(self.model_repository),
            self.model_control_mode,
            self.max_inflight_bytes,
        )
        log.info("CPU %s", cpu.describe())
        await dp.load_all(self.models)
        if self.model_control_mode == "poll":
            self.poller = RepositoryPoller(dp, self.repository_poll_s)
            await self.poller.start()
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]  # a busy port is an error, not a shared port
        self._grpc = grpc.aio.server(options=options, interceptors=self.interceptors)
        add_to_server(InferenceServicer(dp, self.errors), self._grpc)
        self._health = health.ServerHealth(self._health_statuses)
        self._health.add_to(self._grpc)
        reflection.enable_server_reflection(
            [SERVICE_FULL_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self._grpc
        )
        try:
            if self.allow_grpc:
                address = f"{self.host}:{self.grpc_port}"
                self.grpc_port = (
                    self._grpc.add_secure_port(address, credentials)
                    if credentials
                    else self._grpc.add_insecure_port(address)
                )
                await self._grpc.start()
            else:
                self.grpc_port = None
            if self.http_port is not None:
                self._http, self.http_port = await start_http(
                    dp, self.http_address, self.http_port, self.http_restricted, self.errors
                )
            if self.metrics_port is not None:
                exporter = MetricsExporter(self._model_stats)
                self._metrics = start_metrics_server(exporter.render, self.host, self.metrics_port)
                self.metrics_port = self._metrics.server_port
        except (RuntimeError, OSError) as exc:
            raise ServerError(
                f"cannot listen on {self.host} (gRPC port {self.grpc_port}, HTTP port "
                f"{self.http_port}, metrics port {self.metrics_port}): {exc}"
            ) from None
        served = ", ".join(f"{n} (versions {sorted(v)})" for n, v in sorted(dp.models.items()))
        log.info(
            "serving %d model(s) from %s: %s",
            len(dp.models),
            self.model_repository,
            served or "none",
        )
        log.info(
            "gRPC%s on %s, HTTP on %s, metrics on %s",
            " (TLS, mutual)" if self.tls and self.tls.mutual else " (TLS)" if self.tls else "",
            f"{self.host}:{self.grpc_port}" if self.grpc_port is not None else "(off)",
            f"http://{self.http_address}:{self.http_port}" if self._http else "(off)",
            f"http://{self.host}:{self.metrics_port}/metrics" if self._metrics else "(off)",
        )

    def request_stop(self) -> None:
        """Ask ``wait`` to drain and stop (call on the server's event loop, e.g. from a signal)."""
        assert self._stop_requested is not None
        self._stop_requested.set()

    async def wait(self) -> dict[str, Any]:
        """Serve until ``request_stop``; then drain and return the summary."""
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        return await self.stop()

    async def stop(self) -> dict[str, Any]:
        """Drain: refuse new requests (UNAVAILABLE), finish in-flight ones, then close (idempotent)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        return await asyncio.shield(self._stopping)

    async def _stop(self) -> dict[str, Any]:
        assert self.dataplane is not None
        if self.poller is not None:
            await self.poller.stop()
        log.info("draining: refusing new requests, waiting for in-flight ones")
        if self._health is not None:
            await self._health.shutdown()
        drained = await self.dataplane.drain(self.drain_timeout_s)
        summary = self.summary()
        await self.dataplane.close()
        self.errors.flush()
        if self._grpc is not None:
            await self._grpc.stop(grace=5.0)
        if self._http is not None:
            await self._http.cleanup()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
        log.info("stopped (%s)", "all requests answered" if drained else "drain timed out")
        return {**summary, "drained": drained}

    def summary(self) -> dict[str, Any]:
        """Ports, models and request counts so far."""
        stats = [s for _, _, s in self._model_stats()]
        return {
            "grpc_port": self.grpc_port,
            "http_port": self.http_port,
            "metrics_port": self.metrics_port,
            "models": {n: sorted(v) for n, v in self.dataplane.models.items()}
            if self.dataplane
            else {},
            "requests_succeeded": sum(s.success.count for s in stats),
            "requests_failed": sum(s.fail.count for s in stats),
            "inferences": sum(s.inference_count for s in stats),
        }

    def _model_stats(self):
        models = list(self.dataplane.models.items()) if self.dataplane else []
        return [(n, str(v), m.stats) for n, versions in models for v, m in list(versions.items())]

    def _health_statuses(self) -> dict[str, int]:
        """grpc.health.v1 statuses: the server ("" and the inference service), each model."""
        dp = self.dataplane
        if dp is None:
            return {}
        status = {True: health.SERVING, False: health.NOT_SERVING}
        try:
            names = dp.repository.names()
        except OSError:  # the repository went away: the loaded models still count
            names = []
        statuses = {name: status[dp.is_ready(name)] for name in names}
        statuses.update({name: status[dp.is_ready(name)] for name in dp.models})
        statuses[""] = statuses["inference.GRPCInferenceService"] = status[dp.ready]
        return statuses


def serve(model_repository: str | Path, **options: Any) -> dict[str, Any]:
    """Run the server until SIGTERM or SIGINT, drain, and return a summary; ``options`` are
    InferenceServer's (host, grpc_port, http_port, metrics_port, models, model_control_mode, ...)."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        limit_malloc_arenas()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )

    async def main() -> dict[str, Any]:
        server = InferenceServer(model_repository, **options)
        try:
            await server.start()
        except BaseException:
            if server.dataplane is not None:
                await server.stop()
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        return await server.wait()

    return asyncio.run(main())


class ServerHandle:
    """A server running on its own event loop in a background thread."""

    def __init__(self, server: InferenceServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    @property
    def url(self) -> str:
        """host:port of the gRPC endpoint, as tritonclient wants it."""
        return f"{self.server.host}:{self.server.grpc_port}"

    @property
    def http_url(self) -> str:
        """host:port of the HTTP/REST endpoint, as tritonclient.http wants it."""
        return f"{self.server.http_address}:{self.server.http_port}"

    @property
    def metrics_url(self) -> str:
        """URL of the /metrics page."""
        return f"http://{self.server.host}:{self.server.metrics_port}/metrics"

    def begin_stop(self) -> concurrent.futures.Future:
        """Start draining; the future gives the summary when the server has stopped."""
        return asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Drain and stop; return the summary."""
        return self.begin_stop().result(timeout_s)


@contextlib.contextmanager
def running_server(
    model_repository: str | Path,
    host: str = "127.0.0.1",
    grpc_port: int = 0,
    metrics_port: int | None = 0,
    **kwargs: Any,
) -> Iterator[ServerHandle]:
    """Run a server in a background thread (port 0: any free port); stop it on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="argonic-server", daemon=True)
    thread.start()
    server = InferenceServer(model_repository, host, grpc_port, metrics_port, **kwargs)
    handle = ServerHandle(server, loop)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(300)
        yield handle
    finally:
        if server.dataplane is not None:
            handle.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
