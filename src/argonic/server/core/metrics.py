"""Prometheus metrics with Triton's names and labels, served over HTTP at ``/metrics``.

The nv_* families are written by hand so that counters keep Triton's exact names
(prometheus_client would append ``_total``), e.g. SuperSONIC's autoscaling query
``sum(rate(nv_inference_queue_duration_us[30s])) / (sum(rate(nv_inference_exec_count[30s]))*1000)``
works unchanged. Durations are cumulative microseconds, as Triton's. Also exposed:
``argonic_execution_batch_size`` (histogram of rows per model execution),
``argonic_queue_time_ms`` (SuperSONIC's load metric over the saturation window, core.saturation) and
prometheus_client's process metrics (``process_cpu_seconds_total``, memory).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from argonic.server.core.stats import ModelStats

log = logging.getLogger("argonic.server")

# name -> (type, help, value of a ModelStats)
_FAMILIES: dict[str, tuple[str, str, Callable[[ModelStats], float]]] = {
    "nv_inference_request_success": (
        "counter",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    "nv_inference_request_failure": (
        "counter",
        "Number of failed inference requests, all batch sizes",
        lambda s: s.fail.count,
    ),
    "nv_inference_count": (
        "counter",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    "nv_inference_exec_count": (
        "counter",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    "nv_inference_request_duration_us": (
        "counter",
        "Cumulative inference request duration in microseconds",
        lambda s: s.success.ns // 1000,
    ),
    "nv_inference_queue_duration_us": (
        "counter",
        "Cumulative inference queuing duration in microseconds",
        lambda s: s.queue.ns // 1000,
    ),
    "nv_inference_compute_input_duration_us": (
        "counter",
        "Cumulative compute input duration in microseconds",
        lambda s: s.compute_input.ns // 1000,
    ),
    "nv_inference_compute_infer_duration_us": (
        "counter",
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer.ns // 1000,
    ),
    "nv_inference_compute_output_duration_us": (
        "counter",
        "Cumulative inference compute output duration in microseconds",
        lambda s: s.compute_output.ns // 1000,
    ),
    "nv_inference_pending_request_count": (
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        lambda s: s.pending,
    ),
}
BATCH_BUCKETS = tuple(2**i for i in range(14))  # 1 .. 8192 rows

ModelSource = Callable[[], Iterable[tuple[str, str, ModelStats]]]  # (model, version, stats)


def _labels(**labels: str) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + body + "}" if body else ""


class CpuUtilization:
    """System CPU utilization (0..1) between successive calls, from /proc/stat (Linux)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)

    def __call__(self) -> float:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] == last[0]:
            return 0.0
        return 1.0 - (now[1] - last[1]) / (now[0] - last[0])


def _gpu_utilization() -> dict[str, float]:
    """Utilisation of each CUDA device, when a backend already uses CUDA (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    try:
        if not torch.cuda.is_available():
            return {}
        return {str(i): torch.cuda.utilization(i) / 100.0 for i in range(torch.cuda.device_count())}
    except Exception:  # noqa: BLE001 - needs pynvml; the metric is simply left out
        return {}


class MetricsExporter:
    """Renders the text exposition for the models ``source`` lists."""

    def __init__(self, source: ModelSource, load_ms: Callable[[], float] | None = None) -> None:
        self.source = source
        self.load_ms = load_ms  # the saturation metric (core.saturation), if the server has one
        self.cpu = CpuUtilization()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """The full /metrics page."""
        models = list(self.source())
        lines: list[str] = []
        for name, (kind, help_text, value) in _FAMILIES.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{_labels(model=m, version=v)} {value(s)}" for m, v, s in models]
        lines += [
            "# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]",
            "# TYPE nv_cpu_utilization gauge",
            f"nv_cpu_utilization {self.cpu():.6f}",
        ]
        gpus = _gpu_utilization()
        if gpus:
            lines += [
                "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)",
                "# TYPE nv_gpu_utilization gauge",
            ]
            lines += [f"nv_gpu_utilization{_labels(gpu_uuid=g)} {u}" for g, u in gpus.items()]
        if self.load_ms is not None:
            lines += [
                "# HELP argonic_queue_time_ms Mean queue time per execution over the "
                "saturation window, ms (SuperSONIC's load metric)",
                "# TYPE argonic_queue_time_ms gauge",
                f"argonic_queue_time_ms {self.load_ms():.6f}",
            ]
        lines += [
            "# HELP argonic_execution_batch_size Rows per model execution",
            "# TYPE argonic_execution_batch_size histogram",
        ]
        for m, v, s in models:
            with s.lock:
                counts = {size: d[0].count for size, d in s.batches.items()}
            for bound in BATCH_BUCKETS:
                cumulative = sum(c for size, c in counts.items() if size <= bound)
                lines.append(
                    f"argonic_execution_batch_size_bucket{_labels(model=m, version=v, le=str(float(bound)))} {cumulative}"
                )
            total = sum(counts.values())
            lines += [
                f"argonic_execution_batch_size_bucket{_labels(model=m, version=v, le='+Inf')} {total}",
                f"argonic_execution_batch_size_sum{_labels(model=m, version=v)} "
                f"{sum(size * c for size, c in counts.items())}",
                f"argonic_execution_batch_size_count{_labels(model=m, version=v)} {total}",
            ]
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


def start_metrics_server(render: Callable[[], bytes], host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``render()`` at http://host:port/metrics in a daemon thread; ``port`` 0 picks one."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body = render()
            except Exception as exc:  # noqa: BLE001
                log.exception("rendering metrics failed")
                self.send_error(500, str(exc))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("metrics: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="argonic-metrics", daemon=True).start()
    return server
