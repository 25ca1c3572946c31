"""Scraping the server's Prometheus /metrics during a study (Triton's metric names).

``parse_metrics`` reads the text exposition into per-model totals (summed over versions);
``MetricsScraper`` polls a URL every ``interval_s`` in a thread and keeps timestamped
samples labelled with the study's current phase (number of clients).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

COUNTERS = (
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_request_duration_us",
)
GAUGES = ("nv_inference_pending_request_count", "nv_cpu_utilization")
BATCH = "argonic_execution_batch_size"
BATCH_BOUNDS = tuple(2**i for i in range(14))
SAMPLE_FIELDS = (
    "t_s",
    "n_clients",
    *COUNTERS,
    *GAUGES,
    f"{BATCH}_sum",
    f"{BATCH}_count",
    *(f"{BATCH}_le_{b}" for b in BATCH_BOUNDS),
)

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, model: str) -> dict[str, float]:
    """Totals of the known metrics for ``model`` (metrics without a model label are kept too)."""
    out: dict[str, float] = {k: 0.0 for k in SAMPLE_FIELDS if k not in ("t_s", "n_clients")}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        name, labels_text, value_text = m.groups()
        labels = dict(_LABEL.findall(labels_text or ""))
        if "model" in labels and labels["model"] != model:
            continue
        try:
            value = float(value_text)
        except ValueError:
            continue
        if name in COUNTERS or name in GAUGES or name in (f"{BATCH}_sum", f"{BATCH}_count"):
            out[name] += value
        elif name == f"{BATCH}_bucket" and labels.get("le") not in (None, "+Inf"):
            bound = int(float(labels["le"]))
            key = f"{BATCH}_le_{bound}"
            if key in out:
                out[key] += value
    return out


class MetricsScraper:
    """Polls ``url`` every ``interval_s`` seconds in a daemon thread; ``samples`` grows."""

    def __init__(
        self, url: str, model: str, interval_s: float = 0.5, t_zero: float | None = None
    ) -> None:
        self.url = url
        self.model = model
        self.interval_s = interval_s
        self.t_zero = time.monotonic() if t_zero is None else t_zero
        self.phase = 0
        self.samples: list[dict[str, Any]] = []
        self.failures = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape(self) -> dict[str, Any] | None:
        """One sample now (also recorded); None if the endpoint did not answer."""
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                text = response.read().decode()
        except OSError as exc:
            self.failures += 1
            self.last_error = str(exc)
            return None
        sample = {
            "t_s": time.monotonic() - self.t_zero,
            "n_clients": self.phase,
            **parse_metrics(text, self.model),
        }
        with self._lock:
            self.samples.append(sample)
        return sample

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.scrape()

        self._thread = threading.Thread(target=loop, name="argonic-scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
