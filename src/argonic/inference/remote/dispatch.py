"""Dispatch: one call's patches as ModelInfer requests, in flight at most ``window`` at once.

The patches are cut into requests of ``batch_size`` rows (fewer where a server's
max_batch_size is smaller: the request is split when it is sent). Replies are taken oldest
first and written into the rows of their patches; a request that failed goes back to the
front of the queue, whole, and the pool sends it to another server. Every patch is answered
exactly once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import NoPlaneModel
from argonic.inference.remote.options import CallOptions
from argonic.inference.remote.pool import Attempt, ServerPool
from argonic.inference.remote.shm import SharedMemoryPatches, Slot
from argonic.inference.remote.stats import CallStats
from argonic.inference.remote.wire import Encoder, Encoding
from argonic.tracing import end_request_span, start_request_span


@dataclass
class Job:
    """One ModelInfer request: patches [start, stop), its bytes, and its way through the pool."""

    start: int
    stop: int
    payload: bytes = b""
    encoding: Encoding = ("", "")  # of ``payload``
    plane: dict[str, np.ndarray] | None = None  # a plane-mode request's tensors
    slot: Slot | None = None  # the shared memory slot holding its patches (same-host server)
    attempt: Attempt = field(default_factory=Attempt)
    span: Any = None  # its OpenTelemetry span while in flight (argonic.tracing)


InFlight = tuple[Job, Server, grpc.Future]


class Dispatcher:
    """Sends one call's requests through the pool and collects the scores.

    ``window``: requests in flight at once (1 in "sync" mode); ``plane_ready(server)``: whether
    a server takes plane-mode requests (plane.PlaneMode.ready).
    """

    def __init__(
        self,
        pool: ServerPool,
        encoder: Encoder,
        options: CallOptions,
        batch_size: int,
        window: int,
        plane_ready: Callable[[Server], bool],
        shm: SharedMemoryPatches | None = None,
    ) -> None:
        self.pool = pool
        self.encoder = encoder
        self.options = options
        self.batch_size = batch_size
        self.window = window
        self.plane_ready = plane_ready
        self.shm = shm
        self.progress = (0, 0)  # (patches scored, patches asked) in the running or last call

    def patches(self, x: np.ndarray, out: np.ndarray, call: CallStats, first: Server) -> None:
        """Scores of patches ``x`` into ``out``; ``first``: the server picked for the call."""
        rows = min(self.batch_size, first.model.max_batch_size)
        pending = deque(Job(s, min(s + rows, len(x))) for s in range(0, len(x), rows))
        in_flight: deque[InFlight] = deque()
        self.progress = (0, len(x))
        try:
            self._drain(x, out, call, pending, in_flight, self.window)
        except BaseException:
            for job, _, future in in_flight:
                future.cancel()
                end_request_span(job.span)
                self._free_slot(job)
            raise
        finally:
            self.pool.close_retired()

    def plane(self, tensors: dict[str, np.ndarray], out: np.ndarray, call: CallStats) -> None:
        """Scores of one plane-mode request into ``out``; NoPlaneModel (nothing sent) if the
        chosen server lacks the plane model."""
        n = len(out)
        try:
            self._drain(
                np.empty((n, 0), np.float32),
                out,
                call,
                deque([Job(0, n, plane=tensors)]),
                deque(),
                1,
            )
        finally:
            self.pool.close_retired()

    def _drain(
        self,
        x: np.ndarray,
        out: np.ndarray,
        call: CallStats,
        pending: deque[Job],
        in_flight: deque[InFlight],
        window: int,
    ) -> None:
        """Keep ``window`` requests in flight; take replies oldest first; requeue failures."""
        done = 0
        while pending or in_flight:
            while pending and len(in_flight) < window:
                in_flight.append(self._submit(pending, x, call))
            job, server, future = in_flight.popleft()
            t0 = time.perf_counter()
            try:
                raw = future.result()
            except grpc.RpcError as error:
                end_request_span(job.span, error)
                in_shm = job.slot is not None
                self._free_slot(job)
                call.wait_s += time.perf_counter() - t0
                if in_shm and self.shm.refused(server, error):
                    pending.appendleft(job)  # e.g. a balancer's other replica: over the wire
                    continue
                self.pool.failed(job.attempt, server, error)
                call.failovers += 1
                pending.appendleft(job)
                continue
            t1 = time.perf_counter()
            end_request_span(job.span)
            if job.slot is not None:
                try:
                    self.shm.scores(job.slot, raw, out[job.start : job.stop])
                finally:
                    self._free_slot(job)
            else:
                self.encoder.scores(raw, out[job.start : job.stop])
            call.wait_s += t1 - t0
            call.deserialise_s += time.perf_counter() - t1
            call.bytes_received += len(raw)
            server.answered()
            done += job.stop - job.start
            self.progress = (done, len(x))

    def _submit(self, pending: deque[Job], x: np.ndarray, call: CallStats) -> InFlight:
        """Send the next pending request to the best server; split it if it is too big."""
        job = pending.popleft()
        server = self.pool.pick(job.attempt, call)
        if job.plane is not None:
            if not self.plane_ready(server):
                raise NoPlaneModel(server.label)
        elif job.stop - job.start > server.model.max_batch_size:
            rest = Job(job.start + server.model.max_batch_size, job.stop)
            job = Job(job.start, rest.start)
            pending.appendleft(rest)
        encoding = self.encoder.encoding(server)
        if (
            self.shm is not None
            and job.plane is None
            and encoding == ("FP32", "none")
            and self.shm.usable(server)
        ):
            t0 = time.perf_counter()
            job.slot = self.shm.acquire()
            job.payload = self.shm.request(job.slot, x[job.start : job.stop])
            job.encoding = ("shm", "")
            call.serialise_s += time.perf_counter() - t0
        elif not job.payload or job.encoding != encoding:
            t0 = time.perf_counter()
            if job.plane is not None:
                job.payload = self.encoder.plane(job.plane, encoding[1])
            else:
                job.payload = self.encoder.patches(x[job.start : job.stop], encoding)
            job.encoding = encoding
            call.serialise_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        job.span, traceparent = start_request_span("ModelInfer", server.address)
        options = self.options.infer(traceparent)
        future = server.rpc("ModelInfer", raw=True).future(job.payload, **options)
        call.serialise_s += time.perf_counter() - t0  # the send is queued here
        call.requests += 1
        call.bytes_sent += len(job.payload)
        call.requests_by_server[server.address] = call.requests_by_server.get(server.address, 0) + 1
        return job, server, future

    def _free_slot(self, job: Job) -> None:
        """Give a job's slot back; its payload names the slot, so it is built again."""
        if job.slot is not None:
            self.shm.release(job.slot)
            job.slot, job.payload = None, b""
