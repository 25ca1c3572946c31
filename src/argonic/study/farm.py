"""A discrete-event model of a SONIC farm (SimPy): C clients at S sites, servers of G GPUs
each, per-site links, dynamic batching and an autoscaler that follows the KEDA rule.

Each client runs events: its non-ML CPU work (``t_other``, drawn from the measured events),
then EmTrackMichelId: client-side preprocessing, and its requests (rows each), at most
``window`` in flight. A request crosses its site's uplink (FIFO at ``site_gbps``, shared by
the site's clients), half a round trip, the server's queue, an execution, and half a round
trip back. A server's GPUs take from one queue as Triton's dynamic batcher does: whole
requests, oldest first, up to ``max_rows`` rows per execution, which lasts
``overhead_s + rows / rows_per_s``. Clients send to the server with the fewest outstanding
requests (Envoy's least_request). The autoscaler polls SuperSONIC's metric, queue time per
execution over a window (ms), and adds a server (ready ``startup_s`` later) while it is
above the threshold, as KEDA does.

Written on SimPy because no maintained simulator models Triton's batching and a SONIC
client; ``farm_from_study`` builds the model of an `argonic study` run from its own files,
and ``paper_config`` the paper's farm from its published figures (docs/reference.md, 1).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import simpy


@dataclass(frozen=True)
class ServiceModel:
    """One GPU's execution time: ``overhead_s + rows / rows_per_s``, at most ``max_rows``
    rows per execution; ``gpus`` executors share one server's queue."""

    overhead_s: float
    rows_per_s: float
    max_rows: int = 256
    gpus: int = 1

    def seconds(self, rows: int) -> float:
        return self.overhead_s + rows / self.rows_per_s

    @classmethod
    def fit(cls, rows: Sequence[float], seconds: Sequence[float], **kw: Any) -> ServiceModel:
        """Least squares through measured (rows, seconds per execution) points."""
        slope, intercept = np.polyfit(np.asarray(rows, float), np.asarray(seconds, float), 1)
        return cls(max(0.0, float(intercept)), 1.0 / float(slope), **kw)


@dataclass(frozen=True)
class EventModel:
    """One event as a client runs it: ``t_other_s`` of non-ML CPU, ``t_preprocess_s`` of
    EmTrackMichelId on the client, and its requests (rows of each)."""

    t_other_s: float
    t_preprocess_s: float
    requests: tuple[int, ...]


@dataclass(frozen=True)
class ClientModel:
    """A client's events (each client runs them in turn from a random start), sent
    ``window`` requests at a time, ``bytes_per_row`` on the wire, over ``rtt_s`` round trips,
    with ``request_overhead_s`` per request outside the execution (protocol, copies)."""

    events: tuple[EventModel, ...]
    bytes_per_row: float
    rtt_s: float = 0.0
    window: int = 1
    request_overhead_s: float = 0.0

    @property
    def bytes_per_event(self) -> float:
        return float(np.mean([sum(e.requests) for e in self.events])) * self.bytes_per_row

    @property
    def t_other_mean_s(self) -> float:
        return float(np.mean([e.t_other_s for e in self.events]))


@dataclass(frozen=True)
class Autoscaler:
    """KEDA's rule on SuperSONIC's metric (queue time per execution over ``window_s``, ms),
    polled every ``poll_s``, as the Helm chart's ScaledObject sets it (``metricType:
    Value``): the Kubernetes HPA wants ceil(servers x metric / ``threshold_ms``) servers
    (no change within 10 % of the threshold), grows by at most max(100 %, 4 servers) per
    poll (its default scale-up policy), never shrinks here (scale-in waits
    ``cooldownPeriod``, 300 s); a new server serves ``startup_s`` later."""

    threshold_ms: float
    window_s: float = 30.0
    poll_s: float = 15.0
    startup_s: float = 60.0
    max_servers: int | None = None  # the HPA's maxReplicas (None: no limit)


@dataclass(frozen=True)
class FarmConfig:
    clients: int
    servers: int
    client: ClientModel
    service: ServiceModel
    events: int = 4  # per client
    sites: int = 1
    site_gbps: float | None = None  # each site's uplink; None: unlimited
    autoscaler: Autoscaler | None = None
    seed: int = 0
    # clients start at random within this many seconds (None: one mean event's CPU time, as
    # independent grid jobs; 0: together, as the study's clients leave their barrier)
    stagger_s: float | None = None
    # clients and server on one host of this many cores (an `argonic study` here): each
    # request's overhead takes one core, an execution all of them (ONNX Runtime's threads)
    host_cores: int | None = None


@dataclass
class _Request:
    rows: int
    arrived: float
    done: simpy.Event
    server: _Server


@dataclass
class _Server:
    index: int
    queue: deque[_Request] = field(default_factory=deque)
    outstanding: int = 0
    idle: list[simpy.Event] = field(default_factory=list)  # GPUs waiting for a request
    executions: list[tuple[float, float]] = field(default_factory=list)  # (time, queue s)


class _Farm:
    def __init__(self, config: FarmConfig) -> None:
        self.c = config
        self.env = simpy.Environment()
        self.rng = np.random.default_rng(config.seed)
        self.links = [simpy.Resource(self.env, 1) for _ in range(config.sites)]
        self.servers: list[_Server] = []
        self.rows: list[dict[str, Any]] = []
        self.timeline: list[tuple[float, int, float]] = []  # (time, servers, metric ms)
        self.pending_servers = 0
        self.cores = (
            simpy.Container(self.env, config.host_cores, init=config.host_cores)
            if config.host_cores
            else None
        )
        for _ in range(config.servers):
            self._add_server()

    def _add_server(self) -> None:
        server = _Server(len(self.servers))
        self.servers.append(server)
        for _ in range(self.c.service.gpus):
            self.env.process(self._gpu(server))

    def _gpu(self, server: _Server):
        service = self.c.service
        while True:
            if not server.queue:
                wake = self.env.event()
                server.idle.append(wake)
                yield wake
                continue
            batch = [server.queue.popleft()]
            rows = batch[0].rows
            while server.queue and rows + server.queue[0].rows <= service.max_rows:
                rows += server.queue[0].rows
                batch.append(server.queue.popleft())
            now = self.env.now
            for r in batch:
                server.executions.append((now, now - r.arrived))
            # a request larger than max_rows runs in several executions
            chunks = max(1, math.ceil(rows / service.max_rows))
            yield from self._busy(
                self.c.host_cores or 0, chunks * service.overhead_s + rows / service.rows_per_s
            )
            for r in batch:
                r.done.succeed()

    def _busy(self, cores: int, seconds: float):
        """``seconds`` of work on ``cores`` of the shared host (just time without one)."""
        if self.cores is None or cores == 0:
            yield self.env.timeout(seconds)
            return
        yield self.cores.get(cores)
        yield self.env.timeout(seconds)
        yield self.cores.put(cores)

    def _send(self, site: int, rows: int):
        c = self.c.client
        if self.c.site_gbps:
            with self.links[site].request() as turn:
                yield turn
                yield self.env.timeout(rows * c.bytes_per_row * 8 / (self.c.site_gbps * 1e9))
        if self.cores is None:  # no shared host: half a round trip and the overhead at once
            yield self.env.timeout(c.rtt_s / 2 + c.request_overhead_s)
        else:
            yield self.env.timeout(c.rtt_s / 2)
            yield from self._busy(1, c.request_overhead_s)
        server = min(self.servers, key=lambda s: s.outstanding)
        request = _Request(rows, self.env.now, self.env.event(), server)
        server.outstanding += 1
        server.queue.append(request)
        if server.idle:
            server.idle.pop().succeed()
        yield request.done
        server.outstanding -= 1
        yield self.env.timeout(c.rtt_s / 2)

    def _client(self, index: int):
        c = self.c.client
        site = index % self.c.sites
        start = int(self.rng.integers(len(c.events)))
        window = simpy.Resource(self.env, c.window)
        stagger = self.c.stagger_s
        stagger = c.t_other_mean_s if stagger is None else stagger
        yield self.env.timeout(self.rng.uniform(0.0, stagger) if stagger > 0 else 0.0)
        for k in range(self.c.events):
            event = c.events[(start + k) % len(c.events)]
            t0 = self.env.now
            yield self.env.timeout(event.t_other_s)
            t1 = self.env.now
            yield self.env.timeout(event.t_preprocess_s)
            if c.window == 1:  # one request at a time: no process per request
                for rows in event.requests:
                    yield from self._send(site, rows)
            else:
                sent = []
                for rows in event.requests:
                    slot = window.request()
                    yield slot
                    sent.append(self.env.process(self._request(window, slot, site, rows)))
                yield self.env.all_of(sent)
            self.rows.append(
                {
                    "client": index,
                    "event": k,
                    "start": t0,
                    "module_s": self.env.now - t1,
                    "event_s": self.env.now - t0,
                    "end": self.env.now,
                }
            )

    def _request(self, window: simpy.Resource, slot: Any, site: int, rows: int):
        yield from self._send(site, rows)
        window.release(slot)

    def _autoscale(self, a: Autoscaler):
        while True:
            yield self.env.timeout(a.poll_s)
            metric = self.metric_ms(a.window_s)
            self.timeline.append((self.env.now, len(self.servers), metric))
            current = len(self.servers) + self.pending_servers
            ratio = metric / a.threshold_ms
            desired = math.ceil(current * ratio) if abs(ratio - 1.0) > 0.1 else current
            desired = min(desired, max(2 * current, current + 4))
            if a.max_servers is not None:
                desired = min(desired, a.max_servers)
            for _ in range(desired - current):
                self.pending_servers += 1
                self.env.process(self._start_server(a.startup_s))

    def _start_server(self, delay: float):
        yield self.env.timeout(delay)
        self.pending_servers -= 1
        self._add_server()

    def metric_ms(self, window_s: float) -> float:
        """Queue time per execution over the last ``window_s`` (ms), all servers together."""
        since = self.env.now - window_s
        waits = [q for s in self.servers for t, q in s.executions if t >= since]
        return 1e3 * sum(waits) / len(waits) if waits else 0.0

    def run(self) -> dict[str, Any]:
        clients = [self.env.process(self._client(i)) for i in range(self.c.clients)]
        if self.c.autoscaler is not None:
            self.env.process(self._autoscale(self.c.autoscaler))
        self.env.run(until=self.env.all_of(clients))
        return summarize(self.rows, self.c, self.timeline, len(self.servers))


def summarize(
    rows: list[dict[str, Any]], config: FarmConfig, timeline: list, servers: int
) -> dict[str, Any]:
    """Means over the events run while every client was running (begun after the last
    client's start, ended before the first client's end: the study's "all clients running"
    for clients that start together), and over all events."""
    ends: dict[int, float] = {}
    starts: dict[int, float] = {}
    for r in rows:  # one pass (a scan of every event per client was quadratic in clients)
        ends[r["client"]] = max(ends.get(r["client"], r["end"]), r["end"])
        starts[r["client"]] = min(starts.get(r["client"], r["start"]), r["start"])
    first_done, all_started = min(ends.values()), max(starts.values())
    steady = [r for r in rows if r["start"] >= all_started and r["end"] <= first_done]
    steady = steady or [r for r in rows if r["end"] <= first_done] or rows
    span = max(r["end"] for r in rows)
    return {
        "clients": config.clients,
        "servers": config.servers,
        "servers_at_end": servers,
        "gpus": config.servers * config.service.gpus,
        "module_s": float(np.mean([r["module_s"] for r in steady])),
        "event_s": float(np.mean([r["event_s"] for r in steady])),
        "module_s_all": float(np.mean([r["module_s"] for r in rows])),
        "events_per_s": len(rows) / span if span > 0 else 0.0,
        "uplink_gbps_per_site": (
            config.client.bytes_per_event * 8 / 1e9 * len(rows) / span / config.sites
            if span > 0
            else 0.0
        ),
        "timeline": timeline,
        "_rows": rows,
    }


def simulate(config: FarmConfig) -> dict[str, Any]:
    """Run the model until every client has finished its events; the summary."""
    return _Farm(config).run()


def sweep(config: FarmConfig, clients: Sequence[int]) -> list[dict[str, Any]]:
    """``simulate`` at each client count (the rest of ``config`` unchanged; a lone client
    runs every event of its pool once, so that its mean is the pool's)."""
    out = []
    for n in clients:
        events = max(config.events, len(config.client.events)) if n == 1 else config.events
        r = simulate(replace(config, clients=n, events=events))
        r.pop("_rows")
        out.append(r)
    return out


# --- the farms: the paper's, and an `argonic study` run's -----------------------------------

#: The paper's published farm (docs/reference.md, section 1): 55,000 patches per event,
#: 110 s of other modules and 7 s of preprocessing per event, a 12 ms round trip, T4 GPUs
#: serving ~20,000 inferences/s at batch 235 and ~31,250 at 1693 (80,000 / 125,000 on 4).
PAPER = {
    "patches": 55_000,
    "t_other_s": 110.0,
    "t_preprocess_s": 7.0,
    "rtt_s": 0.012,
    "gpu_rows_per_s": {235: 20_000.0, 1693: 31_250.0},
    "planes": 36,  # (TPC, plane) images with hits per event: one plane-mode request each
    # events differ: hits per full event here 54,548 +- 10,668 (BENCHMARKS.md,
    # "Simulation"); CPU time, patches and requests scale with them (a 16-event pool)
    "event_spread": 10_668 / 54_548,
    "pool": 16,
}
#: Bytes on the wire per hit, measured here (BENCHMARKS.md, "Bytes per event": TCP bytes
#: of a full ProtoDUNE-SP event, 47,595 hits): patch mode fp32 and plane mode.
WIRE_BYTES_PER_HIT = {"patch": 439.42e6 / 47_595, "plane": 3.23e6 / 47_595}


def normal_quantiles(n: int) -> np.ndarray:
    """``n`` evenly spaced quantiles of the standard normal (a deterministic sample)."""
    from scipy.stats import norm

    return norm.ppf((np.arange(n) + 0.5) / n)


def split_rows(rows: int, batch: int) -> tuple[int, ...]:
    """``rows`` cut into requests of at most ``batch``."""
    return tuple(min(batch, rows - s) for s in range(0, rows, batch))


def paper_service(batch: int, gpus: int = 1) -> ServiceModel:
    """A T4's execution time through the two published (batch, throughput) points; each
    request runs alone (``max_rows`` = its size), as the published throughputs were
    measured per request size."""
    rate = PAPER["gpu_rows_per_s"]
    rows = sorted(rate)
    return ServiceModel.fit(rows, [r / rate[r] for r in rows], max_rows=batch, gpus=gpus)


def paper_config(
    clients: int,
    gpus: int,
    batch: int = 1693,
    mode: str = "patch",
    events: int = 3,
    sites: int = 1,
    site_gbps: float | None = None,
    autoscaler: Autoscaler | None = None,
) -> FarmConfig:
    """The paper's farm with ``gpus`` T4 servers (one GPU each) and ``clients`` jobs, whose
    events vary as this simulation's do around the paper's means; plane mode sends one
    request per (TPC, plane), its patches cut by the server."""
    scales = 1.0 + PAPER["event_spread"] * normal_quantiles(PAPER["pool"])
    events_pool = []
    for f in scales:
        n = round(PAPER["patches"] * f)
        rows = split_rows(n, math.ceil(n / PAPER["planes"]) if mode == "plane" else batch)
        events_pool.append(EventModel(PAPER["t_other_s"] * f, PAPER["t_preprocess_s"] * f, rows))
    service = paper_service(batch)
    if mode == "plane":  # the server cuts a plane's patches and runs them as one request
        service = replace(service, max_rows=max(max(e.requests) for e in events_pool))
    client = ClientModel(tuple(events_pool), WIRE_BYTES_PER_HIT[mode], rtt_s=PAPER["rtt_s"])
    return FarmConfig(clients, gpus, client, service, events, sites, site_gbps, autoscaler)


def study_client(
    workload: list[dict[str, Any]], batch_size: int, cpu_scale: float, request_overhead_s: float
) -> ClientModel:
    """The emulated clients of an `argonic study` run (its workload.json): read and hit
    finding as non-ML CPU, each plane's patch building as client-side module time, and one
    request per ``batch_size`` patches of each plane, sent one at a time."""
    events = tuple(
        EventModel(
            (w["read_s"] + w["hitfinding_s"]) * cpu_scale,
            sum(w["plane_patches_s"]) * cpu_scale,
            tuple(r for count in w["plane_patches"] for r in split_rows(count, batch_size)),
        )
        for w in workload
    )
    return ClientModel(events, WIRE_BYTES_PER_HIT["patch"], request_overhead_s=request_overhead_s)
