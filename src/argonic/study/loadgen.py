"""Many clients from one process: recorded ModelInfer requests replayed over thousands of
connections, with per-client throughput, latency and every status a server answered.

Each simulated client is one asyncio task with its own gRPC channel, hence its own TCP
connection and HTTP/2 session (``grpc.use_local_subchannel_pool``: channels to the same
address do not share a connection), as one process of a farm would have. A client checks
``ServerLive``, waits until every client is connected (so the server's memory per open
connection can be read), then sends its requests one at a time at ``rate`` per second
(the next one leaves at its scheduled time or when the previous one is answered, whichever
is later). A refused request (argonic's RETRYABLE statuses) is sent again after an
exponential backoff with full jitter, as SONIC clients do, until it is answered or
``deadline_s`` has passed.

Statuses are sorted into *clean* refusals (UNAVAILABLE, RESOURCE_EXHAUSTED: a server that
says "not now") and *unclean* ones (CANCELLED, UNKNOWN, INTERNAL, ...: a standard client
does not retry them). Written by hand because no maintained load generator (perf_analyzer,
ghz, locust) speaks Triton's protocol over thousands of separate connections with a SONIC
client's retry rules from one process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from argonic._util import raise_open_files_limit
from argonic.inference.remote import channel
from argonic.inference.remote.channel import SERVICE
from argonic.inference.remote.errors import RETRYABLE
from argonic.study.errors import StudyError

#: refusals that ask the client to come back later
CLEAN_REFUSALS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
#: file descriptors kept free for everything but the connections (files, the event loop)
FD_MARGIN = 64
#: argonic's client channel options, and one connection per channel
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), *channel.CHANNEL_OPTIONS]


class LoadError(StudyError):
    """The load cannot be generated as asked (e.g. too few file descriptors)."""


@dataclass(frozen=True)
class LoadSpec:
    """What each client sends: ``requests`` of the recorded payloads (taken in turn, each
    client starting at its own offset), at most ``rate`` per second (0: as fast as answered)."""

    connections: int
    requests: int = 3
    rate: float = 0.0
    deadline_s: float = 600.0  # give up on a request this long after its first try
    backoff_s: tuple[float, float] = (0.05, 2.0)  # first backoff, largest backoff
    connect_timeout_s: float = 120.0


@dataclass
class ClientRecord:
    """One client's outcome."""

    answered: int = 0
    latency_s: list[float] = field(default_factory=list)  # first try to answer, per request
    statuses: Counter[str] = field(default_factory=Counter)  # refusals seen, by status name
    started: float = 0.0
    finished: float = 0.0
    error: str = ""  # why it stopped early (a fatal status, a request past its deadline)

    @property
    def throughput(self) -> float:
        """Requests answered per second of this client's run."""
        elapsed = self.finished - self.started
        return self.answered / elapsed if elapsed > 0 else 0.0


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one takes all."""
    x = np.asarray(values, float)
    denominator = len(x) * float((x * x).sum())
    return float(x.sum() ** 2 / denominator) if denominator > 0 else 1.0


def ensure_fd_limit(connections: int) -> int:
    """Raise this process's open-file limit to what ``connections`` need (up to the hard
    limit) and return it; LoadError with the fix when the hard limit is too low."""
    need = connections + FD_MARGIN
    soft, hard = raise_open_files_limit(need)
    if soft < need:
        raise LoadError(
            f"{connections} connections need about {need} open files, but this process may "
            f"open at most {hard} (hard limit); raise it (ulimit -Hn, LimitNOFILE, "
            "limits.conf) or ask for fewer connections"
        )
    return soft


class _Client:
    """One connection and its requests."""

    def __init__(self, index: int, address: str, spec: LoadSpec, payloads: Sequence[bytes]):
        self.index = index
        self.spec = spec
        self.payloads = payloads
        self.record = ClientRecord()
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._live = self.channel.unary_unary(
            SERVICE + "ServerLive",
            request_serializer=service_pb2.ServerLiveRequest.SerializeToString,
            response_deserializer=service_pb2.ServerLiveResponse.FromString,
        )
        self._infer = self.channel.unary_unary(SERVICE + "ModelInfer")  # bytes in and out
        self._random = random.Random(index)

    async def connect(self) -> bool:
        return await self._retry(
            self._live, service_pb2.ServerLiveRequest(), self.spec.connect_timeout_s
        )

    async def run(self, go: asyncio.Event) -> None:
        await go.wait()
        r = self.record
        r.started = time.perf_counter()
        period = 1.0 / self.spec.rate if self.spec.rate > 0 else 0.0
        # clients start spread over one period so that a paced load is smooth, not a burst
        next_send = r.started + self._random.uniform(0.0, period)
        for k in range(self.spec.requests):
            await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
            payload = self.payloads[(self.index + k) % len(self.payloads)]
            t0 = time.perf_counter()
            if not await self._retry(self._infer, payload, self.spec.deadline_s):
                break
            r.answered += 1
            r.latency_s.append(time.perf_counter() - t0)
            next_send = max(next_send + period, time.perf_counter())
        r.finished = time.perf_counter()

    async def _retry(self, call: Any, request: Any, deadline_s: float) -> bool:
        """``call(request)`` until answered (True) or fatal / past the deadline (False)."""
        first, cap = self.spec.backoff_s
        end = time.perf_counter() + deadline_s
        attempt = 0
        while True:
            try:
                await call(request, timeout=max(0.001, end - time.perf_counter()))
                return True
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self.record.statuses[code.name] += 1
                if code not in RETRYABLE or code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self.record.error = f"{code.name}: {exc.details()}"
                    return False
            # full jitter: uniform in [0, min(cap, first * 2^attempt)]
            pause = self._random.uniform(0.0, min(cap, first * 2**attempt))
            attempt += 1
            if time.perf_counter() + pause >= end:
                self.record.error = f"no answer within {deadline_s:g} s"
                return False
            await asyncio.sleep(pause)


async def run_load(
    address: str,
    payloads: Sequence[bytes],
    spec: LoadSpec,
    on_connected: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Open ``spec.connections`` clients to ``address`` and replay ``payloads``; the report.

    ``on_connected`` is called once every client has passed ``ServerLive`` and before any
    request is sent (e.g. to read the server's memory with all connections open); what it
    returns is in the report as ``connected``.
    """
    if not payloads:
        raise LoadError("no requests to replay")
    ensure_fd_limit(spec.connections)
    clients = [_Client(i, address, spec, payloads) for i in range(spec.connections)]
    go = asyncio.Event()
    try:
        t0 = time.perf_counter()
        connected = await asyncio.gather(*(c.connect() for c in clients))
        connect_s = time.perf_counter() - t0
        refused = [c.record.error for c, ok in zip(clients, connected, strict=True) if not ok]
        if refused:
            raise LoadError(
                f"{len(refused)} of {spec.connections} clients could not connect to "
                f"{address}; first: {refused[0]}"
            )
        extra = on_connected() if on_connected is not None else None
        runs = [asyncio.ensure_future(c.run(go)) for c in clients]
        t1 = time.perf_counter()
        go.set()
        await asyncio.gather(*runs)
        wall_s = time.perf_counter() - t1
    finally:
        await asyncio.gather(*(c.channel.close() for c in clients), return_exceptions=True)
    report = summarize([c.record for c in clients], spec, wall_s)
    report.update(address=address, connect_s=connect_s, connected=extra)
    return report


def summarize(records: Sequence[ClientRecord], spec: LoadSpec, wall_s: float) -> dict[str, Any]:
    """Totals, statuses, latency percentiles and fairness of one run."""
    statuses: Counter[str] = Counter()
    for r in records:
        statuses.update(r.statuses)
    latencies = np.concatenate([r.latency_s for r in records if r.latency_s] or [np.zeros(0)])
    clean = {c.name for c in CLEAN_REFUSALS}
    answered = sum(r.answered for r in records)
    return {
        "connections": len(records),
        "requests_per_client": spec.requests,
        "rate_per_client": spec.rate,
        "requests": len(records) * spec.requests,
        "answered": answered,
        "lost": len(records) * spec.requests - answered,
        "clients_incomplete": sum(r.answered < spec.requests for r in records),
        "errors": sorted({r.error for r in records if r.error})[:5],
        "refusals": dict(statuses),
        "clean_refusals": sum(n for s, n in statuses.items() if s in clean),
        "unclean_statuses": sum(n for s, n in statuses.items() if s not in clean),
        "wall_s": wall_s,
        "requests_per_s": answered / wall_s if wall_s > 0 else 0.0,
        "latency_ms": {
            f"p{q}": float(np.percentile(latencies, q) * 1e3) if len(latencies) else None
            for q in (50, 90, 99)
        },
        "jain_fairness": jain_index([r.throughput for r in records]),
        "client_throughput": {
            "min": min((r.throughput for r in records), default=0.0),
            "max": max((r.throughput for r in records), default=0.0),
        },
    }


def format_load(report: dict[str, Any]) -> str:
    """The report in a few lines."""
    lat = report["latency_ms"]
    lines = [
        f"{report['connections']} connections to {report['address']} "
        f"(connected in {report['connect_s']:.1f} s), {report['requests']} requests",
        f"answered {report['answered']}, lost {report['lost']}, clean refusals "
        f"{report['clean_refusals']}, unclean statuses {report['unclean_statuses']} "
        f"{report['refusals']}",
        f"{report['requests_per_s']:.1f} requests/s over {report['wall_s']:.1f} s; latency ms "
        + ", ".join(f"{k} {v:.0f}" for k, v in lat.items() if v is not None),
        f"per-client throughput min {report['client_throughput']['min']:.3f} max "
        f"{report['client_throughput']['max']:.3f} requests/s, Jain fairness "
        f"{report['jain_fairness']:.3f}",
    ]
    if report["errors"]:
        lines.append("errors: " + "; ".join(report["errors"]))
    return "\n".join(lines)
