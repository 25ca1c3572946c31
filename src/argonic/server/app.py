"""Running the server: ``serve`` (blocking, SIGTERM drains) and ``running_server`` (tests)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from argonic._util import raise_open_files_limit
from argonic.repository import shipped_repository
from argonic.server.backends import cpu
from argonic.server.core.dataplane import DataPlane
from argonic.server.core.errorlog import ErrorLog
from argonic.server.core.limits import limit_malloc_arenas
from argonic.server.core.loader import ModelRepository
from argonic.server.core.metrics import MetricsExporter, start_metrics_server
from argonic.server.core.poller import RepositoryPoller
from argonic.server.errors import ServerError
from argonic.server.grpc import health
from argonic.server.grpc.security import (
    RestrictedProtocols,
    RestrictionTable,
    TlsConfig,
    check_http_exposure,
    parse_restriction,
)
from argonic.server.grpc.servicer import SERVICE_FULL_NAME, InferenceServicer, add_to_server
from argonic.server.http.endpoint import start_http
from argonic.settings import ServerSettings
from argonic.tracing import ServerTracer, parse_trace_config, tracer_provider

log = logging.getLogger("argonic.server")
SAMPLE_S = 1.0  # seconds between samples of the saturation metric
MAX_PENDING_CALLS = 1 << 16  # calls gRPC core may hold until the event loop takes them


class InferenceServer:
    """gRPC inference service, health service and metrics endpoint over one DataPlane."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = s = settings
        self.model_repository = Path(s.model_repository or shipped_repository())
        self.poller: RepositoryPoller | None = None
        self.tls = _tls(s)
        restricted = [parse_restriction(r) for r in s.grpc_restricted_protocol]
        http_restricted = [
            parse_restriction(r, "--http-restricted-api") for r in s.http_restricted_api
        ]
        # the ports actually bound replace these (0: any free; None: endpoint off)
        self.host = s.host
        self.grpc_port: int | None = s.grpc_port if s.allow_grpc else None
        self.http_port: int | None = s.http_port if s.allow_http else None
        self.metrics_port: int | None = s.metrics_port if s.allow_metrics else None
        self.http_address = s.http_address or s.host
        check_http_exposure(
            self.tls if s.allow_grpc else None,
            restricted if s.allow_grpc else (),
            self.http_address if s.allow_http else None,
            http_restricted,
        )
        self.http_restricted = RestrictionTable(http_restricted, "--http-restricted-api")
        self._http = None
        self._health: health.ServerHealth | None = None
        self.dataplane: DataPlane | None = None
        self.errors = ErrorLog()
        self.interceptors = [RestrictedProtocols(restricted, self.errors)] if restricted else []
        self._grpc: grpc.aio.Server | None = None
        self._metrics = None
        self._stop_requested: asyncio.Event | None = None
        self._stopping: asyncio.Task | None = None
        self._sampler: asyncio.Future | None = None

    async def start(self) -> None:
        """Load the models, then listen (ports 0 are replaced by the ports actually bound)."""
        self._stop_requested = asyncio.Event()
        credentials = self.tls.credentials() if self.tls else None  # bad files: fail first
        self.dataplane = dp = DataPlane(
            ModelRepository(self.model_repository),
            self.settings.model_control_mode,
            self.settings.max_inflight_bytes,
            (
                self.settings.saturation_threshold_ms,
                self.settings.saturation_window_s,
                self.settings.saturation_refuse_inference,
            ),
        )
        trace = parse_trace_config(self.settings.trace_config)
        if trace.on:
            dp.tracer = ServerTracer(trace, tracer_provider(trace, "argonic-server"))
            log.info("tracing (OpenTelemetry) to %s, one request in %d", trace.url, trace.rate)
        self._sampler = asyncio.ensure_future(self._sample_load())
        log.info("CPU %s", cpu.describe())
        await dp.load_all(self.settings.load_model or None)
        if self.settings.model_control_mode == "poll":
            self.poller = RepositoryPoller(dp, self.settings.repository_poll_secs)
            await self.poller.start()
        options = [
            ("grpc.max_send_message_length", self.settings.grpc_max_message_bytes),
            ("grpc.max_receive_message_length", self.settings.grpc_max_message_bytes),
            ("grpc.max_concurrent_streams", self.settings.grpc_max_concurrent_streams),
            ("grpc.so_reuseport", 0),
            # gRPC core drops calls the event loop has not yet taken beyond 1,000 waiting
            # (at random, all beyond 3,000) with CANCELLED, which clients do not retry; the
            # server's own admission refuses with UNAVAILABLE instead (docs/operations.md)
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ]  # a busy port is an error, not a shared port
        self._grpc = grpc.aio.server(options=options, interceptors=self.interceptors)
        add_to_server(InferenceServicer(dp, self.errors), self._grpc)
        self._health = health.ServerHealth(self._health_statuses)
        self._health.add_to(self._grpc)
        reflection.enable_server_reflection(
            [SERVICE_FULL_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self._grpc
        )
        try:
            if self.grpc_port is not None:
                address = f"{self.host}:{self.grpc_port}"
                self.grpc_port = (
                    self._grpc.add_secure_port(address, credentials)
                    if credentials
                    else self._grpc.add_insecure_port(address)
                )
                await self._grpc.start()
            if self.http_port is not None:
                self._http, self.http_port = await start_http(
                    dp, self.http_address, self.http_port, self.http_restricted, self.errors
                )
            if self.metrics_port is not None:
                exporter = MetricsExporter(self._model_stats, lambda: dp.saturation.load_ms)
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
        log.info("open files limit %d (one per client connection)", raise_open_files_limit()[0])

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

    async def _sample_load(self) -> None:
        """The saturation metric's samples, once a second (core.saturation)."""
        while True:
            if self.dataplane is not None:
                self.dataplane.saturation.sample()
            await asyncio.sleep(SAMPLE_S)

    async def _stop(self) -> dict[str, Any]:
        assert self.dataplane is not None
        if self._sampler is not None:
            self._sampler.cancel()
        if self.poller is not None:
            await self.poller.stop()
        log.info("draining: refusing new requests, waiting for in-flight ones")
        if self._health is not None:
            await self._health.shutdown()
        drained = await self.dataplane.drain(self.settings.drain_timeout_s)
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
        if self.dataplane.tracer is not None:
            self.dataplane.tracer.shutdown()  # exports the spans still batched
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


def serve(settings: ServerSettings) -> dict[str, Any]:
    """Run the server until SIGTERM or SIGINT, drain, and return a summary."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        limit_malloc_arenas()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    raise_open_files_limit()  # one per client connection (docs/operations.md)

    async def main() -> dict[str, Any]:
        server = InferenceServer(settings)
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
def running_server(model_repository: str | Path, **settings: Any) -> Iterator[ServerHandle]:
    """Run a server in a background thread; stop it on exit. ``settings`` are ServerSettings
    keys; the defaults differ from `argonic serve`'s for tests and benchmarks: loopback, any
    free gRPC and metrics port, HTTP only when ``allow_http`` or ``http_port`` is given."""
    settings.setdefault("allow_http", "http_port" in settings)
    defaults = {"host": "127.0.0.1", "grpc_port": 0, "metrics_port": 0, "http_port": 0}
    server = InferenceServer(
        ServerSettings(model_repository=str(model_repository), **{**defaults, **settings})
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="argonic-server", daemon=True)
    thread.start()
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


def _tls(s: ServerSettings) -> TlsConfig | None:
    """The TLS configuration of the gRPC endpoint, if it uses TLS."""
    if not (s.grpc_use_ssl or s.grpc_use_ssl_mutual):
        return None
    root = Path(s.grpc_root_cert) if s.grpc_root_cert else None
    return TlsConfig(Path(s.grpc_server_cert), Path(s.grpc_server_key), root, s.grpc_use_ssl_mutual)
