"""OpenTelemetry tracing for the server and the client, configured as Triton's.

The server takes Triton's ``--trace-config`` settings (``mode=opentelemetry``,
``level=TIMESTAMPS``, ``rate=N``: one of every N requests, ``count=N``: at most N traces,
-1 for no limit; ``opentelemetry,url=...``, ``opentelemetry,resource=key=value`` and the
batch span processor's ``bsp_*``) and exports OTLP over HTTP, as Triton does. A request that
carries a W3C ``traceparent`` (gRPC metadata or HTTP header) is traced whatever the rate, as
a child of the caller's span (Triton 24.01+), so one trace covers client and server. Off
(the default: level OFF) nothing of OpenTelemetry is imported.

The client side uses the OpenTelemetry API only: its spans (event, plane, request) are
recorded when the application installed a tracer provider (``install``, from
``[tracing]`` or ``OTEL_*`` settings, or its own), and cost a no-op call otherwise.

The SDK and exporter are the ``tracing`` extra (``pip install 'argonic[tracing]'``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from argonic import ArgonicError

TRACEPARENT = "traceparent"
DEFAULT_URL = "http://localhost:4318/v1/traces"
LEVELS = ("OFF", "TIMESTAMPS")
BSP_KEYS = {
    "bsp_max_queue_size": "max_queue_size",
    "bsp_schedule_delay": "schedule_delay_millis",
    "bsp_max_export_batch_size": "max_export_batch_size",
}


class TraceConfigError(ArgonicError):
    """A ``--trace-config`` setting argonic cannot honour."""


@dataclass(frozen=True)
class TraceConfig:
    """Triton's trace settings (only the OpenTelemetry mode)."""

    level: str = "OFF"
    rate: int = 1000
    count: int = -1
    url: str = DEFAULT_URL
    resource: dict[str, str] = field(default_factory=dict)
    bsp: dict[str, int] = field(default_factory=dict)

    @property
    def on(self) -> bool:
        return self.level != "OFF"


def parse_trace_config(items: Sequence[str]) -> TraceConfig:
    """``--trace-config`` values, Triton's spelling: ``key=value`` for the global settings,
    ``opentelemetry,key=value`` for the exporter's."""
    config: dict[str, Any] = {"resource": {}, "bsp": {}}
    for item in items:
        section, _, setting = item.partition(",") if "," in item else ("", "", item)
        key, eq, value = setting.partition("=")
        if not eq:
            raise TraceConfigError(f"--trace-config {item!r}: expected [SECTION,]KEY=VALUE")
        if section == "triton":
            raise TraceConfigError(
                f"--trace-config {item!r}: argonic traces with OpenTelemetry only "
                "(mode=opentelemetry); Triton's JSON trace file is not written"
            )
        if section not in ("", "opentelemetry"):
            raise TraceConfigError(f"--trace-config {item!r}: unknown section {section!r}")
        _set(config, section, key, value, item)
    return TraceConfig(**config)


def _set(config: dict[str, Any], section: str, key: str, value: str, item: str) -> None:
    if section == "opentelemetry":
        _set_exporter(config, key, value, item)
    elif key == "mode":
        if value != "opentelemetry":
            raise TraceConfigError(f"--trace-config {item!r}: argonic supports mode=opentelemetry")
    elif key == "level":
        levels = {v.strip().upper() for v in value.split(",")}
        if "TENSORS" in levels or not levels <= set(LEVELS):
            raise TraceConfigError(f"--trace-config {item!r}: level is OFF or TIMESTAMPS")
        config["level"] = "TIMESTAMPS" if "TIMESTAMPS" in levels else "OFF"
    elif key in ("rate", "count"):
        config[key] = _int(value, item)
    else:
        raise TraceConfigError(f"--trace-config {item!r}: unknown setting {key!r}")


def _set_exporter(config: dict[str, Any], key: str, value: str, item: str) -> None:
    if key == "url":
        config["url"] = value if "://" in value else f"http://{value}"
    elif key == "resource":
        name, eq, attr = value.partition("=")
        if not eq:
            raise TraceConfigError(f"--trace-config {item!r}: resource=KEY=VALUE")
        config["resource"][name] = attr
    elif key in BSP_KEYS:
        config["bsp"][BSP_KEYS[key]] = _int(value, item)
    else:
        raise TraceConfigError(f"--trace-config {item!r}: unknown opentelemetry setting")


def _int(value: str, item: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TraceConfigError(f"--trace-config {item!r}: {value!r} is not an integer") from None


def _sdk() -> Any:
    try:
        from opentelemetry.sdk import trace as sdk_trace
    except ImportError:
        raise TraceConfigError(
            "tracing needs the OpenTelemetry SDK: pip install 'argonic[tracing]'"
        ) from None
    return sdk_trace


def tracer_provider(config: TraceConfig, service_name: str, exporter: Any = None) -> Any:
    """An SDK TracerProvider exporting OTLP/HTTP to ``config.url`` through a batch span
    processor (``exporter``: another SpanExporter, e.g. the SDK's in-memory one)."""
    sdk_trace = _sdk()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.url)
    resource = Resource.create({"service.name": service_name, **config.resource})
    provider = sdk_trace.TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, **config.bsp))
    return provider


class ServerTracer:
    """Decides which requests are traced and writes their spans with Triton's structure:
    ``InferRequest`` (received to answered) > the model's span (REQUEST_START, QUEUE_START,
    REQUEST_END events) > ``compute`` (COMPUTE_START, COMPUTE_INPUT_END, COMPUTE_OUTPUT_START,
    COMPUTE_END)."""

    def __init__(self, config: TraceConfig, provider: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.config = config
        self.provider = provider
        self.tracer = provider.get_tracer("argonic.server")
        self._propagator = TraceContextTextMapPropagator()
        self._requests = itertools.count(1)
        self._traced = 0

    def begin(self, headers: Iterable[tuple[str, Any]], protocol: str) -> RequestTrace | None:
        """The trace of a request now received (None: not traced)."""
        ctx = self.context(headers)
        return None if ctx is None else RequestTrace(self, ctx, time.time_ns(), protocol)

    def context(self, headers: Iterable[tuple[str, Any]]) -> Any | None:
        """The context a request is traced in (None: not traced): a propagated sampled
        parent always, else one request of every ``rate`` while ``count`` allows."""
        carrier = {k.lower(): v for k, v in headers if k.lower() == TRACEPARENT}
        if carrier:
            from opentelemetry import trace

            ctx = self._propagator.extract(carrier)
            if trace.get_current_span(ctx).get_span_context().trace_flags.sampled:
                return ctx
        rate, count = self.config.rate, self.config.count
        if rate <= 0 or (count >= 0 and self._traced >= count):
            return None
        if next(self._requests) % rate:
            return None
        self._traced += 1
        from opentelemetry.context import Context

        return Context()

    def record(
        self, ctx: Any, start_ns: int, end_ns: int, protocol: str, model: str, result: Any
    ) -> None:
        """The spans of one answered request; ``result`` carries its timestamps
        (``core.model_version.Timestamps``) or is the error it failed with."""
        from opentelemetry import trace

        root = self.tracer.start_span(
            "InferRequest", ctx, trace.SpanKind.SERVER, start_time=start_ns
        )
        root.set_attribute("rpc.system", protocol)
        stamps = getattr(result, "timestamps", None)
        if stamps is None:
            root.set_status(trace.StatusCode.ERROR, str(result))
            root.end(end_time=end_ns)
            return
        inner = trace.set_span_in_context(root, ctx)
        span = self.tracer.start_span(model, inner, start_time=stamps.request_start)
        for name, value in (
            ("model_name", model),
            ("model_version", result.model_version),
            ("request_id", result.id),
        ):
            span.set_attribute(name, value)
        span.add_event("REQUEST_START", timestamp=stamps.request_start)
        span.add_event("QUEUE_START", timestamp=stamps.queue_start)
        compute = self.tracer.start_span(
            "compute", trace.set_span_in_context(span, inner), start_time=stamps.compute_start
        )
        for name, t in stamps.compute_events():
            compute.add_event(name, timestamp=t)
        compute.end(end_time=stamps.compute_end)
        span.add_event("REQUEST_END", timestamp=stamps.request_end)
        span.end(end_time=stamps.request_end)
        root.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is left and stop."""
        self.provider.shutdown()


@dataclass
class RequestTrace:
    """One traced request, from its arrival; ``end`` writes its spans."""

    tracer: ServerTracer
    context: Any
    start_ns: int
    protocol: str

    def end(self, model: str, result: Any) -> None:
        """``result``: the InferResponse, or the exception the request failed with."""
        self.tracer.record(
            self.context, self.start_ns, time.time_ns(), self.protocol, model, result
        )


# --- the client: the OpenTelemetry API's spans, recorded when a provider is installed ------


@functools.cache
def client_tracer() -> Any | None:
    """The tracer of argonic's client spans (None without the OpenTelemetry API); its spans
    are no-ops until a tracer provider is installed (``install_client_tracing`` or the
    application's own)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("argonic.client")


@contextlib.contextmanager
def client_span(name: str, **attributes: Any) -> Iterator[Any]:
    """A client span (event, plane) around the block, current inside it."""
    tracer = client_tracer()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        yield span


def start_request_span(name: str, server: str) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """A CLIENT span for one RPC, child of the current span, and its W3C traceparent as gRPC
    metadata (empty when the span is not recorded). End it with ``end_request_span``."""
    tracer = client_tracer()
    if tracer is None:
        return None, ()
    from opentelemetry import trace

    span = tracer.start_span(name, kind=trace.SpanKind.CLIENT)
    if not span.is_recording():
        return span, ()
    span.set_attribute("server.address", server)
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return span, tuple(carrier.items())


def end_request_span(span: Any, error: BaseException | None = None) -> None:
    """End a request span (with the error status the RPC failed with)."""
    if span is None:
        return
    if error is not None and span.is_recording():
        from opentelemetry import trace

        span.set_status(trace.StatusCode.ERROR, str(error))
    span.end()


def install_client_tracing() -> bool:
    """Install an SDK tracer provider exporting OTLP/HTTP when OpenTelemetry's standard
    environment asks for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; sampling: ``OTEL_TRACES_SAMPLER`` and
    ``OTEL_TRACES_SAMPLER_ARG``; ``OTEL_SERVICE_NAME``, default argonic-client). Returns
    whether it did; the spans still batched are exported at exit."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    sdk_trace = _sdk()
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", "argonic-client")
    provider = sdk_trace.TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    return True
