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


# --- fitting the model to a measured module-time-vs-clients curve ---------------------------
#
# With one server, the ML module's time per event as a function of the number of clients
# N (ratio = N / servers) is, by Eq. 4 minus the CPU-bound part t_other:
#
#     t_module(N) = t_gpu + t_latency + t_gpu * max(0, N - t_ideal / t_gpu)
#                 = max(t_flat, t_gpu * N - t_other),   t_flat = t_gpu + t_latency
#
# (past the knee every client waits for the whole farm: the event time is t_gpu * N, Eq. 5).
# t_flat and t_gpu are fitted; t_other (the CPU modules' time per event) is measured
# directly, or fitted too when it is not given.


def module_time(
    ratio: float | np.ndarray, t_flat: float, t_gpu: float, t_other: float
) -> np.ndarray:
    """Eq. 4's module share written as max(t_flat, t_gpu * ratio - t_other)."""
    return np.maximum(t_flat, t_gpu * np.asarray(ratio, float) - t_other)


def mva_module_time(
    ratio: float | np.ndarray, t_flat: float, t_gpu: float, t_other: float
) -> np.ndarray:
    """The same system solved as a closed queueing network by exact mean value analysis.

    Each of N clients per server "thinks" for Z = t_other + t_latency (its CPU modules and
    its latency, where the server is not involved), then needs the server for t_gpu. Eq. 4
    is this system's asymptotic bound, max(t_gpu, N t_gpu - Z) + t_latency (operational
    analysis); MVA (exponential service) gives the mean, which rises smoothly before the
    knee because requests of different clients collide. Same parameters as Eq. 4.
    Non-integer ``ratio`` is interpolated between whole numbers of clients.
    """
    n = np.asarray(ratio, float)
    t_latency = t_flat - t_gpu
    think = max(0.0, t_other + t_latency)
    top = max(1, int(np.ceil(np.max(n)))) if n.size else 1
    response = np.empty(top)
    queue = 0.0
    for k in range(1, top + 1):
        r = t_gpu * (1.0 + queue)
        queue = k / (r + think) * r
        response[k - 1] = r
    return np.interp(n, np.arange(1, top + 1), response) + t_latency


FORMS = {"eq4": module_time, "mva": mva_module_time}


@dataclass(frozen=True)
class ModelFit:
    """The latency model fitted to a measured module-time curve (seconds per event)."""

    t_flat: float  # unsaturated module time = t_gpu + t_latency
    t_gpu: float  # server time per event (slope past the knee)
    t_other: float  # the CPU modules' time per event, (1 - p) t_cpu
    t_cpu: float  # CPU-only event time (for p); t_other + the local module time when known
    servers: int
    ratios: tuple[float, ...]  # measured clients per server
    measured: tuple[float, ...]  # measured module time per event at each ratio
    saturated_points: int  # measured points past the fitted knee
    t_gpu_source: str  # "slope" (fitted past the knee) or "hint"/"bound" when nothing saturated
    t_other_fitted: bool
    form: str = "eq4"  # "eq4": the paper's max(); "mva": the mean value analysis of the same system

    @property
    def model(self) -> LatencyModel:
        p = 1.0 - self.t_other / self.t_cpu if self.t_cpu > 0 else 0.0
        return LatencyModel(
            t_cpu=self.t_cpu, p=p, t_gpu=self.t_gpu, t_latency=self.t_flat - self.t_gpu
        )

    @property
    def t_ideal(self) -> float:
        return self.t_other + self.t_flat

    @property
    def knee(self) -> float:
        """N* = t_ideal / t_gpu: the clients per server at which the server saturates (Eq. 3)."""
        return self.t_ideal / self.t_gpu if self.t_gpu > 0 else float("inf")

    @property
    def optimal_clients_per_server(self) -> int:
        """The largest whole number of clients per server that does not saturate it."""
        return max(1, int(np.floor(self.knee + 1e-9)))

    def predict(self, ratio: float | np.ndarray) -> np.ndarray:
        return FORMS[self.form](ratio, self.t_flat, self.t_gpu, self.t_other)

    def relative_errors(self) -> np.ndarray:
        """(model - measured) / measured at every measured point."""
        y = np.asarray(self.measured, float)
        return (self.predict(np.asarray(self.ratios)) - y) / y

    @property
    def max_relative_error(self) -> float:
        r = self.relative_errors()
        return float(np.max(np.abs(r))) if r.size else 0.0

    def as_dict(self) -> dict[str, object]:
        r = self.relative_errors()
        return {
            "t_flat": self.t_flat,
            "t_gpu": self.t_gpu,
            "t_other": self.t_other,
            "t_latency": self.t_flat - self.t_gpu,
            "t_ideal": self.t_ideal,
            "t_cpu": self.t_cpu,
            "p": self.model.p,
            "knee_clients_per_server": self.knee,
            "optimal_clients_per_server": self.optimal_clients_per_server,
            "servers": self.servers,
            "saturated_points": self.saturated_points,
            "t_gpu_source": self.t_gpu_source,
            "t_other_fitted": self.t_other_fitted,
            "form": self.form,
            "points": [
                {
                    "clients_per_server": float(n),
                    "measured_s": float(y),
                    "model_s": float(m),
                    "relative_error": float(e),
                }
                for n, y, m, e in zip(
                    self.ratios,
                    self.measured,
                    self.predict(np.asarray(self.ratios)),
                    r,
                    strict=True,
                )
            ],
            "max_relative_error": self.max_relative_error,
        }


def _objective(params: np.ndarray, n: np.ndarray, y: np.ndarray, t_other: float | None) -> float:
    t_flat, t_gpu = params[0], params[1]
    other = params[2] if t_other is None else t_other
    if t_flat <= 0 or t_gpu <= 0:
        return 1e30
    return float(np.sum(((module_time(n, t_flat, t_gpu, other) - y) / y) ** 2))


def _best_split(
    n: np.ndarray, y: np.ndarray, t_other: float | None
) -> tuple[float, np.ndarray] | None:
    """(objective, parameters) of the best split of the points into a flat part and a
    saturated part, each solved in closed form; None if no split can be solved."""
    fit_other = t_other is None
    best: tuple[float, np.ndarray] | None = None
    w = 1.0 / y  # relative residuals: weight each point by 1 / measured
    for k in range(1, n.size):  # points [0, k) flat, [k, end) saturated
        t_flat = float(np.sum(w[:k]) / np.sum(w[:k] ** 2))
        ns, ys, ws = n[k:], y[k:], w[k:]
        if fit_other:
            if ns.size < 2 or np.ptp(ns) == 0:
                continue
            a = np.stack([ns * ws, -ws], axis=1)  # y = t_gpu n - t_other
            (t_gpu, other), *_ = np.linalg.lstsq(a, ys * ws, rcond=None)
            params = np.array([t_flat, t_gpu, max(other, 0.0)])
        else:
            t_gpu = float(np.sum(ns * ws * (ys + t_other) * ws) / np.sum((ns * ws) ** 2))
            params = np.array([t_flat, t_gpu])
        score = _objective(params, n, y, t_other)
        if best is None or score < best[0]:
            best = (score, params)
    return best


def fit_module_time(
    clients: np.ndarray | list[float],
    module_s: np.ndarray | list[float],
    t_other: float | None,
    servers: int = 1,
    t_cpu: float | None = None,
    t_gpu_hint: float | None = None,
) -> ModelFit:
    """Fit t_flat and t_gpu (and t_other when None) to module time per event vs clients.

    ``clients``: number of simultaneous clients of each measurement (on ``servers``
    servers); ``module_s``: the mean module time per event measured there. The fit
    minimises squared relative residuals of ``max(t_flat, t_gpu N - t_other)``: every
    split of the points into a flat part and a saturated part is solved in closed form
    (weighted linear least squares) and the best is polished by Nelder-Mead. When no
    point is saturated the slope is not measurable: ``t_gpu_hint`` (e.g. patches per
    event / the server's measured throughput) is used, else the largest t_gpu the
    data allow (the knee just past the last point), flagged in ``t_gpu_source``.
    ``t_cpu``: the CPU-only event time (gives p); default t_other + t_flat.
    """
    n = np.asarray(clients, float) / servers
    y = np.asarray(module_s, float)
    if n.shape != y.shape or n.size == 0:
        raise ValueError("clients and module_s must be non-empty and of the same length")
    if np.any(y <= 0) or np.any(n <= 0):
        raise ValueError("module times and client counts must be positive")
    order = np.argsort(n, kind="stable")
    n, y = n[order], y[order]
    fit_other = t_other is None
    best = _best_split(n, y, t_other)
    source = "slope"
    w = 1.0 / y
    t_flat_all = float(np.sum(w) / np.sum(w**2))
    other0 = 0.0 if fit_other else float(t_other)  # type: ignore[arg-type]
    if t_gpu_hint is not None:
        hint = np.array([t_flat_all, t_gpu_hint] + ([other0] if fit_other else []))
        if best is None or _objective(hint, n, y, t_other) <= best[0]:
            best, source = (_objective(hint, n, y, t_other), hint), "hint"
    if best is None:
        bound = (other0 + t_flat_all) / n[-1]  # knee at the last point: the largest slope allowed
        best, source = (
            (0.0, np.array([t_flat_all, bound] + ([other0] if fit_other else []))),
            "bound",
        )
    params = best[1]
    if source == "slope":
        from scipy.optimize import minimize

        res = minimize(
            _objective,
            params,
            args=(n, y, t_other),
            method="Nelder-Mead",
            options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
        )
        if res.fun <= best[0]:
            params = res.x
    t_flat, t_gpu = float(params[0]), float(params[1])
    other = float(params[2]) if fit_other else float(t_other)  # type: ignore[arg-type]
    saturated = int(np.sum(t_gpu * n - other > t_flat))
    if source == "slope" and saturated == 0:
        source = "bound"
    return ModelFit(
        t_flat=t_flat,
        t_gpu=t_gpu,
        t_other=other,
        t_cpu=float(t_cpu) if t_cpu is not None else other + t_flat,
        servers=servers,
        ratios=tuple(float(v) for v in n),
        measured=tuple(float(v) for v in y),
        saturated_points=saturated,
        t_gpu_source=source,
        t_other_fitted=fit_other,
    )


def fit_module_time_mva(
    clients: np.ndarray | list[float],
    module_s: np.ndarray | list[float],
    t_other: float,
    servers: int = 1,
    t_cpu: float | None = None,
) -> ModelFit:
    """Fit t_flat and t_gpu of ``mva_module_time`` (t_other measured), starting from the Eq. 4 fit."""
    from dataclasses import replace

    from scipy.optimize import minimize

    start = fit_module_time(clients, module_s, t_other=t_other, servers=servers, t_cpu=t_cpu)
    n, y = np.asarray(start.ratios), np.asarray(start.measured)

    def objective(params: np.ndarray) -> float:
        t_flat, t_gpu = params
        if t_flat <= 0 or t_gpu <= 0:
            return 1e30
        return float(np.sum(((mva_module_time(n, t_flat, t_gpu, t_other) - y) / y) ** 2))

    res = minimize(
        objective,
        np.array([start.t_flat, start.t_gpu]),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
    )
    t_flat, t_gpu = (float(v) for v in res.x)
    saturated = int(np.sum(t_gpu * n - t_other > t_flat))
    return replace(
        start,
        t_flat=t_flat,
        t_gpu=t_gpu,
        form="mva",
        saturated_points=saturated,
        t_gpu_source="mva",
        t_cpu=float(t_cpu) if t_cpu is not None else t_other + t_flat,
    )
