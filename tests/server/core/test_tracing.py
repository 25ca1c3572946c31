"""OpenTelemetry tracing: Triton's --trace-config, the server's spans (SDK in-memory
exporter), traceparent propagation over gRPC and HTTP, and one trace covering client and
server exported over OTLP/HTTP to a real receiver (oteltest's sink)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError
from support.models import random_patches

from argonic.procs import free_port
from argonic.server import running_server
from argonic.settings import ServerSettings
from argonic.tracing import (
    DEFAULT_URL,
    ServerTracer,
    TraceConfigError,
    parse_trace_config,
    tracer_provider,
)

SUPERSONIC = [  # the flags SuperSONIC's Helm chart gives Triton
    "mode=opentelemetry",
    "opentelemetry,resource=pod_name=server-0",
    "opentelemetry,url=collector:4318/v1/traces",
    "rate=100",
    "level=TIMESTAMPS",
    "count=-1",
]


def test_triton_trace_config_spelling():
    c = parse_trace_config(SUPERSONIC)
    assert (c.level, c.rate, c.count, c.on) == ("TIMESTAMPS", 100, -1, True)
    assert c.url == "http://collector:4318/v1/traces"
    assert c.resource == {"pod_name": "server-0"}
    c = parse_trace_config(
        ["opentelemetry,bsp_max_queue_size=4096", "opentelemetry,bsp_schedule_delay=200"]
    )
    assert c.bsp == {"max_queue_size": 4096, "schedule_delay_millis": 200}
    assert parse_trace_config([]).on is False and parse_trace_config([]).url == DEFAULT_URL


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("mode=triton", "mode=opentelemetry"),
        ("triton,file=/tmp/trace.json", "OpenTelemetry only"),
        ("level=TENSORS", "OFF or TIMESTAMPS"),
        ("rate=often", "not an integer"),
        ("sampling=3", "unknown setting"),
        ("opentelemetry,port=4318", "unknown opentelemetry setting"),
        ("rate", "KEY=VALUE"),
    ],
)
def test_bad_trace_config_is_refused(item, message):
    with pytest.raises(TraceConfigError, match=message):
        parse_trace_config([item])
    with pytest.raises(ValidationError, match=message):  # before the server starts
        ServerSettings(trace_config=[item])


@pytest.fixture()
def traced_server(tiny_repo):
    """A server whose tracer writes to an in-memory exporter; (handle, exporter, set_config)."""
    exporter = InMemorySpanExporter()
    with running_server(tiny_repo, allow_http=True, allow_metrics=False) as handle:

        def configure(*items: str) -> None:
            config = parse_trace_config(items)
            handle.server.dataplane.tracer = ServerTracer(
                config, tracer_provider(config, "argonic-server", exporter)
            )

        yield handle, exporter, configure
        tracer = handle.server.dataplane.tracer
        if tracer is not None:
            tracer.shutdown()


def _infer(url: str, n: int, headers: dict[str, str] | None = None) -> None:
    client = grpcclient.InferenceServerClient(url)
    x = random_patches(8)
    inp = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(n):
        client.infer("emtrkmichelid", [inp], headers=headers)
    client.close()


def _spans(exporter: InMemorySpanExporter, handle) -> list:
    handle.server.dataplane.tracer.provider.force_flush()
    return list(exporter.get_finished_spans())


def test_server_spans_have_tritons_structure(traced_server):
    handle, exporter, configure = traced_server
    configure("level=TIMESTAMPS", "rate=1")
    _infer(handle.url, 3)
    spans = _spans(exporter, handle)
    roots = [s for s in spans if s.name == "InferRequest"]
    assert len(roots) == 3 and len(spans) == 9
    for root in roots:
        assert root.kind == trace.SpanKind.SERVER and root.parent is None
        (model,) = [s for s in spans if s.parent and s.parent.span_id == root.context.span_id]
        (compute,) = [s for s in spans if s.parent and s.parent.span_id == model.context.span_id]
        assert model.name == "emtrkmichelid" and compute.name == "compute"
        assert model.attributes["model_name"] == "emtrkmichelid"
        assert model.attributes["model_version"] == "1"
        assert [e.name for e in model.events] == ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
        names = [e.name for e in compute.events]
        assert names == [
            "COMPUTE_START",
            "COMPUTE_INPUT_END",
            "COMPUTE_OUTPUT_START",
            "COMPUTE_END",
        ]
        times = [e.timestamp for e in (*model.events[:2], *compute.events, model.events[2])]
        assert times == sorted(times)  # Triton's trace points in order
        assert root.start_time <= model.start_time <= compute.start_time
        assert compute.end_time <= model.end_time <= root.end_time
        assert {s.context.trace_id for s in (root, model, compute)} == {root.context.trace_id}


def test_rate_and_count_pick_the_traced_requests(traced_server):
    handle, exporter, configure = traced_server
    configure("level=TIMESTAMPS", "rate=3")
    _infer(handle.url, 7)
    assert len([s for s in _spans(exporter, handle) if s.name == "InferRequest"]) == 2
    exporter.clear()
    configure("level=TIMESTAMPS", "rate=1", "count=2")
    _infer(handle.url, 5)
    assert len([s for s in _spans(exporter, handle) if s.name == "InferRequest"]) == 2


def test_traceparent_makes_the_server_span_a_child_over_grpc_and_http(traced_server):
    """rate=0: only propagated requests are traced (Triton's rule); gRPC metadata and HTTP
    headers both carry the W3C traceparent."""
    handle, exporter, configure = traced_server
    configure("level=TIMESTAMPS", "rate=0")
    client_exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(client_exporter))
    tracer = provider.get_tracer("test-client")
    _infer(handle.url, 2)  # no traceparent: not traced at rate 0
    assert _spans(exporter, handle) == []
    parents = []
    for protocol in ("grpc", "http"):
        with tracer.start_as_current_span(f"client-{protocol}") as span:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            parents.append(span.get_span_context())
            if protocol == "grpc":
                _infer(handle.url, 1, carrier)
            else:
                client = httpclient.InferenceServerClient(handle.http_url)
                x = random_patches(4)
                inp = httpclient.InferInput("main_input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                client.infer("emtrkmichelid", [inp], headers=carrier)
                client.close()
    roots = sorted(
        (s for s in _spans(exporter, handle) if s.name == "InferRequest"),
        key=lambda s: s.attributes["rpc.system"],
    )
    assert [r.attributes["rpc.system"] for r in roots] == ["grpc", "http"]
    for root, parent in zip(roots, parents, strict=True):
        assert root.context.trace_id == parent.trace_id
        assert root.parent.span_id == parent.span_id


def test_failed_request_span_has_error_status(traced_server):
    handle, exporter, configure = traced_server
    configure("level=TIMESTAMPS", "rate=1")
    client = grpcclient.InferenceServerClient(handle.url)
    x = np.zeros((2, 48, 48, 2), np.float32)  # wrong shape: INVALID_ARGUMENT
    inp = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(Exception, match="shape"):
        client.infer("emtrkmichelid", [inp])
    client.close()
    (root,) = _spans(exporter, handle)
    assert root.name == "InferRequest" and root.status.status_code == trace.StatusCode.ERROR


class _Collected:
    """oteltest listener: every span received, with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def handle_trace(self, request, headers) -> None:  # noqa: ARG002
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource_spans.scope_spans:
                    self.spans += [(service, s) for s in scope.spans]

    def handle_metrics(self, request, headers) -> None:  # noqa: ARG002
        pass

    def handle_logs(self, request, headers) -> None:  # noqa: ARG002
        pass


@pytest.mark.slow
def test_one_trace_covers_client_and_server_over_otlp(tiny_repo, mini_events, tmp_path):
    """`argonic reco` (OTEL_* environment) against a server with --trace-config, both
    exporting OTLP/HTTP to a real receiver: the server's request spans are children of the
    client's ModelInfer spans, under plane and event spans, in the same traces."""
    from oteltest.sink import HttpSink

    port = free_port()
    collected = _Collected()
    sink = HttpSink(collected, logging.getLogger("oteltest"), port=port)
    sink.start()
    url = f"127.0.0.1:{port}/v1/traces"
    try:
        with running_server(
            tiny_repo,
            allow_metrics=False,
            trace_config=[
                "mode=opentelemetry",
                f"opentelemetry,url={url}",
                "level=TIMESTAMPS",
                "rate=0",
            ],
        ) as handle:
            env = {
                **os.environ,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://{url}",
                "OTEL_SERVICE_NAME": "reco-job",
            }
            run = subprocess.run(
                [sys.executable, "-m", "argonic.cli", "reco", str(mini_events), "-o",
                 str(tmp_path / "reco.h5"), "--interface", "remote", "--server", handle.url,
                 "--set", f"inference.remote.model_repository={tiny_repo}", "-q"],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 30  # the server's batch processor exports on stop
        while time.monotonic() < deadline and not any(
            s == "argonic-server" for s, _ in collected.spans
        ):
            time.sleep(0.2)
    finally:
        sink.stop()
    spans = {s.span_id: (service, s) for service, s in collected.spans}
    by_name: dict[str, list] = {}
    for service, s in spans.values():
        by_name.setdefault(f"{service}:{s.name}", []).append(s)
    events = by_name["reco-job:event"]
    assert len(events) == 2  # the two mini events
    assert {
        "reco-job:read",
        "reco-job:hitfinding",
        "reco-job:emtrackmichelid",
        "reco-job:plane",
    } <= set(by_name)
    requests = by_name["reco-job:ModelInfer"]
    server_roots = by_name["argonic-server:InferRequest"]
    assert len(server_roots) == len(requests) > 0  # rate 0: exactly the propagated ones
    for root in server_roots:
        service, parent = spans[root.parent_span_id]
        assert (service, parent.name) == ("reco-job", "ModelInfer")
        assert parent.trace_id == root.trace_id
        chain = [parent.name]
        while parent.parent_span_id:
            parent = spans[parent.parent_span_id][1]
            chain.append(parent.name)
        assert chain == ["ModelInfer", "plane", "emtrackmichelid", "event"]
    assert len(by_name["argonic-server:compute"]) == len(server_roots)
