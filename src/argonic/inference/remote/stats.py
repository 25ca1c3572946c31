"""Call statistics: the client's own accounting, and the servers' ModelStatistics deltas.

``CallStats`` counts one predict call (or the sum of several). ``ServerStatistics`` asks
the servers for their cumulative ModelStatistics (queue, compute times, counts) when they
are (re)connected and, with ``server_stats = "call"``, around each call, and reports the
differences: they include other clients' requests on a shared server.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import RETRYABLE, describe
from argonic.inference.remote.options import CallOptions

log = logging.getLogger(__name__)

SERVER_STAT_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")
Counters = dict[str, float]


@dataclass
class CallStats:
    """Client-side accounting of one predict call (or the sum of several)."""

    calls: int = 0
    patches: int = 0
    requests: int = 0
    plane_requests: int = 0
    retries: int = 0
    failovers: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    total_s: float = 0.0
    serialise_s: float = 0.0
    wait_s: float = 0.0
    deserialise_s: float = 0.0
    server: dict[str, float] = field(default_factory=dict)
    requests_by_server: dict[str, int] = field(default_factory=dict)

    def add(self, other: CallStats) -> None:
        """Accumulate another call's numbers."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, f.name, mine + theirs)

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for ``--json``; ``other_s`` = connect, checks, statistics RPCs."""
        d = dataclasses.asdict(self)
        d["other_s"] = max(0.0, self.total_s - self.serialise_s - self.wait_s - self.deserialise_s)
        return d


def counters(
    response: service_pb2.ModelStatisticsResponse, names: Collection[str] | None = None
) -> Counters:
    """Cumulative queue/compute seconds and counts, summed over the versions of the models
    in ``names`` (default: every model in the response)."""
    totals: Counters = {}
    for model in response.model_stats:
        if names is not None and model.name not in names:
            continue
        totals["inferences"] = totals.get("inferences", 0) + model.inference_count
        totals["executions"] = totals.get("executions", 0) + model.execution_count
        totals["requests"] = totals.get("requests", 0) + model.inference_stats.success.count
        for name in SERVER_STAT_FIELDS:
            ns = getattr(model.inference_stats, name).ns
            totals[f"{name}_s"] = totals.get(f"{name}_s", 0) + ns * 1e-9
    return totals


class ServerStatistics:
    """The servers' ModelStatistics for ``stats()``: a baseline per (re)connection and,
    with ``mode = "call"``, a snapshot at the start of each call.

    ``mode``: "total", "call" or "off" (never ask). A server that refuses the statistics
    extension (e.g. PyTriton's default token protection) is not asked again.
    """

    def __init__(
        self, mode: str, models: str | Sequence[str], model_version: str, options: CallOptions
    ) -> None:
        self.mode = mode
        models = [models] if isinstance(models, str) else list(models)
        # one model: asked by name and version; several (the network and its plane model,
        # whose requests run the network without passing its batcher): all, then summed
        self._names = None if len(models) == 1 else set(models)
        self._request = service_pb2.ModelStatisticsRequest(
            name=models[0] if len(models) == 1 else "",
            version=model_version if len(models) == 1 else "",
        )
        self._options = options
        self._baseline: dict[Server, Counters] = {}
        self._refused: set[Server] = set()
        self._call: dict[str, Counters] | None = None  # the running call's snapshot

    def connected(self, server: Server) -> None:
        """``server`` passed its checks on a new channel: its counters from now on count."""
        if self.mode == "off":
            return
        baseline = self.query(server)
        if baseline is None:
            self._baseline.pop(server, None)
            return
        self._baseline[server] = baseline
        if self._call is not None:
            self._call.setdefault(server.address, baseline)

    def begin_call(self, servers: Iterable[Server]) -> None:
        """With ``mode = "call"``: snapshot the counters of the servers ready now."""
        if self.mode != "call":
            return
        self._call = {}
        for server in servers:
            if server.ready and server not in self._refused:
                now = self.query(server)
                if now is not None:
                    self._call[server.address] = now

    def end_call(self, servers: Iterable[Server], used: dict[str, int]) -> Counters:
        """Counters' change since ``begin_call`` over the servers that took requests
        (empty unless ``mode = "call"``); closes the call."""
        before, self._call = self._call, None
        return {} if before is None else self._delta(servers, before, used)

    def abort_call(self) -> None:
        """Forget the running call's snapshot (the call failed)."""
        self._call = None

    def since_connect(self, servers: Iterable[Server], used: dict[str, int]) -> Counters:
        """Counters' change since each server was (re)connected, over the servers used."""
        servers = list(servers)
        before = {s.address: self._baseline[s] for s in servers if s in self._baseline}
        return self._delta(servers, before, used)

    def query(self, server: Server) -> Counters | None:
        """The server's cumulative counters, or None (logged) when it gives none."""
        try:
            response = server.rpc("ModelStatistics")(
                self._request, **self._options.check(min(self._options.timeout_s, 5.0))
            )
        except grpc.RpcError as error:
            log.warning("server %s gives no model statistics (%s)", server.label, describe(error))
            if error.code() not in RETRYABLE:
                self._refused.add(server)
            return None
        return counters(response, self._names)

    def _delta(
        self, servers: Iterable[Server], before: dict[str, Counters], used: dict[str, int]
    ) -> Counters:
        """(now - before) summed over the servers in ``before`` and ``used``."""
        delta: Counters = {}
        for server in servers:
            if (
                server.address not in before
                or server.address not in used
                or server in self._refused
                or server.needs_reconnect
            ):
                continue
            after = self.query(server)
            for key, value in (after or {}).items():
                delta[key] = delta.get(key, 0.0) + value - before[server.address].get(key, 0.0)
        return delta
