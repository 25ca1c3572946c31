"""Saturation: SuperSONIC's load metric, measured by the server itself.

The metric is the mean queue time per model execution over the last ``window_s`` seconds,
in ms: ``sum(rate(nv_inference_queue_duration_us[30s])) /
(sum(rate(nv_inference_exec_count[30s])) * 1000)``, the query SuperSONIC's proxy and its
KEDA autoscaler use (deploy/prometheus/argonic-rules.yml records the same). Above
``threshold_ms`` the server refuses ``RepositoryIndex`` with UNAVAILABLE, the signal CMS's
SONIC client (and argonic's) reads as "skip this server", and, when configured, new
inference requests too. Sampled once a second on the event loop from the models'
statistics; idle (no execution in the window): 0 ms, never saturated.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable

from argonic.server.core.stats import ModelStats
from argonic.server.errors import Unavailable


class Saturation:
    """Queue time per execution over a sliding window, against a threshold (0: off)."""

    def __init__(
        self,
        stats: Callable[[], Iterable[ModelStats]],
        threshold_ms: float = 0.0,
        window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.threshold_ms = threshold_ms
        self.window_s = window_s
        self.clock = clock
        self.refused = 0
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def sample(self) -> None:
        """Record the queue time and execution count so far (call about once a second)."""
        queue_ns = executions = 0
        for s in self.stats():
            queue_ns += s.queue.ns
            executions += s.execution_count
        now = self.clock()
        self._samples.append((now, queue_ns, executions))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    @property
    def load_ms(self) -> float:
        """Mean queue time per execution over the window, ms (0 with no execution in it)."""
        if len(self._samples) < 2:
            return 0.0
        (_, q0, n0), (_, q1, n1) = self._samples[0], self._samples[-1]
        return (q1 - q0) / 1e6 / (n1 - n0) if n1 > n0 else 0.0

    @property
    def saturated(self) -> bool:
        return self.threshold_ms > 0 and self.load_ms > self.threshold_ms

    def check(self, what: str) -> None:
        """UNAVAILABLE while saturated (``what``: the refused call, for the message)."""
        if self.saturated:
            self.refused += 1
            raise Unavailable(
                f"{what} refused: server saturated, queue time {self.load_ms:.1f} ms per "
                f"execution above the threshold {self.threshold_ms:g} ms"
            )
