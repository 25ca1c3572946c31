"""The paper's latency model (Wang et al. 2021, Eq. 1-5).

Symbols (seconds per event unless stated):
    t_cpu        CPU-only event time
    p            accelerable fraction of t_cpu (the ML inference itself)
    t_gpu        pure inference time per event on one server = patches / server throughput
    t_latency    t_preprocess + t_transmit + t_travel, paid by the client per event
    ratio        N_CPU / N_GPU, client processes per server

    t_ideal = (1 - p) t_cpu + t_gpu + t_latency                                  (Eq. 2)
    saturated when ratio > t_ideal / t_gpu                                        (Eq. 3)
    t_sonic = (1 - p) t_cpu + t_gpu [1 + max(0, ratio - t_ideal / t_gpu)] + t_latency   (Eq. 4)
    deep in saturation t_sonic ~ t_gpu * ratio                                    (Eq. 5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def t_latency(t_preprocess: float, t_transmit: float, t_travel: float) -> float:
    """Client-side latency per event: preprocessing + transmission + request round trips."""
    return t_preprocess + t_transmit + t_travel


def t_transmit(bytes_per_event: float, link_gbps: float) -> float:
    """Seconds to push one event's payload through a link of ``link_gbps`` gigabit/s."""
    return bytes_per_event * 8 / (link_gbps * 1e9)


def t_travel(n_requests: int, round_trip_s: float) -> float:
    """Round-trip time paid per event by a blocking client: one round trip per request."""
    return n_requests * round_trip_s


@dataclass(frozen=True)
class LatencyModel:
    """Parameters of Eq. 1-5; all times in seconds per event."""

    t_cpu: float
    p: float
    t_gpu: float
    t_latency: float

    @property
    def t_other(self) -> float:
        """(1 - p) t_cpu: the part of the event that stays on the CPU."""
        return (1.0 - self.p) * self.t_cpu

    @property
    def t_ideal(self) -> float:
        """Eq. 2: the event time with an unsaturated server."""
        return self.t_other + self.t_gpu + self.t_latency

    @property
    def optimal_ratio(self) -> float:
        """Eq. 3: clients per server at which the server saturates (t_ideal / t_gpu)."""
        return self.t_ideal / self.t_gpu

    def saturated(self, ratio: float | np.ndarray) -> bool | np.ndarray:
        """Eq. 3: whether ``ratio`` clients per server saturate it."""
        return np.asarray(ratio) > self.optimal_ratio

    def t_sonic(self, ratio: float | np.ndarray) -> float | np.ndarray:
        """Eq. 4: event time with ``ratio`` = N_CPU / N_GPU clients per server."""
        excess = np.maximum(0.0, np.asarray(ratio, float) - self.optimal_ratio)
        return self.t_other + self.t_gpu * (1.0 + excess) + self.t_latency

    def t_module(self, ratio: float | np.ndarray) -> float | np.ndarray:
        """The ML module's share of Eq. 4 (what a module-time-vs-clients curve measures)."""
        return self.t_sonic(ratio) - self.t_other

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "t_ideal": self.t_ideal, "optimal_ratio": self.optimal_ratio}

