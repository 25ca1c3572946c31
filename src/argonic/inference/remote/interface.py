"""RemoteInterface: the ModelInterface front over the remote client's modules."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from argonic.inference.base import (
    N_SCORES,
    InterfaceError,
    InvalidPatchesError,
    ModelInterface,
    validate_patches,
)
from argonic.inference.local_server import LocalServer
from argonic.inference.remote.channel import Server
from argonic.inference.remote.dispatch import Dispatcher
from argonic.inference.remote.errors import NoPlaneModel
from argonic.inference.remote.identity import ModelSignature
from argonic.inference.remote.options import CallOptions, remote_settings, repository
from argonic.inference.remote.plane import PlaneMode
from argonic.inference.remote.pool import Attempt, ServerPool
from argonic.inference.remote.shm import SharedMemoryPatches
from argonic.inference.remote.stats import CallStats, ServerStatistics
from argonic.inference.remote.wire import Encoder
from argonic.patches import encode_plane
from argonic.settings import InferenceSettings

log = logging.getLogger(__name__)


class RemoteInterface(ModelInterface):
    """ModelInterface that runs the network on KServe v2 / Triton gRPC servers.

    ``RemoteInterface(config, **overrides)``: ``config`` is the ``[inference]`` table
    (InferenceSettings or a mapping of it); ``overrides`` replace ``[inference.remote]`` keys
    (or ``batch_size``). ``predict(patches)`` blocks until every patch is scored; in "async"
    mode up to ``max_in_flight`` requests of ``batch_size`` patches travel at once.
    Concurrent calls on one instance are serialised by a lock.
    """

    def __init__(
        self, config: InferenceSettings | Mapping[str, Any] | None = None, **overrides: Any
    ) -> None:
        self.settings = remote_settings(config, **overrides)
        super().__init__(self.settings.batch_size)
        remote = self.settings.remote
        self.signature = ModelSignature.expected(
            repository(remote), remote.model_name, remote.model_version, remote.expected_sha256
        )
        options = CallOptions.from_settings(remote)
        self._pool = ServerPool(remote, self.signature, options)
        models = [remote.model_name]
        if remote.request_mode == "plane":
            models.append(remote.plane_model_name)
        self._server_stats = ServerStatistics(
            remote.server_stats, models, remote.model_version, options
        )
        self._plane = PlaneMode(remote, self.signature, options)
        window = remote.max_in_flight if remote.mode == "async" else 1
        self._shm = (
            SharedMemoryPatches(remote, self.signature, options, self.batch_size, window)
            if remote.shared_memory == "auto"
            else None
        )
        self._dispatch = Dispatcher(
            self._pool,
            Encoder(remote, self.signature),
            options,
            self.batch_size,
            window,
            self._plane.ready,
            self._shm,
        )
        self._pool.on_verified += [self._server_stats.connected, self._warn_batch_size]
        self._lock = threading.Lock()
        self._last = CallStats()
        self._total = CallStats()

    # -- the ModelInterface contract --

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """Scores [N, 4] float32 [track, em, none, michel] for patches [N, 48, 48, 1]."""
        if self.closed:
            raise InterfaceError("RemoteInterface is closed")
        x = validate_patches(patches).astype("<f4", copy=False)
        out = np.empty((len(x), N_SCORES), dtype=np.float32)
        with self._lock:
            call = CallStats(calls=1, patches=len(x))
            started = time.perf_counter()
            try:
                if len(x):
                    first = self._pool.pick(Attempt(), call)
                    self._server_stats.begin_call(self._pool.servers)
                    self._dispatch.patches(x, out, call, first)
                    call.server = self._server_stats.end_call(
                        self._pool.servers, call.requests_by_server
                    )
            finally:
                self._server_stats.abort_call()
                self._record(call, started)
        return out

    def predict_plane(
        self, image: np.ndarray, wire: np.ndarray, peak_tick: np.ndarray
    ) -> np.ndarray:
        """Scores [N, 4] of one (TPC, plane)'s hits: with ``request_mode = "plane"`` one
        request to the plane model carrying the image and the hits (argonic.patches);
        otherwise (or once a server lacked the plane model) the hits' patches."""
        if not self._plane.active:
            return super().predict_plane(image, wire, peak_tick)
        if self.closed:
            raise InterfaceError("RemoteInterface is closed")
        image = np.asarray(image, np.float32)
        if not np.isfinite(image).all():
            raise InvalidPatchesError("plane image contains NaN or inf")
        t0 = time.perf_counter()
        tensors = encode_plane(image, wire, peak_tick)
        n = len(tensors["hit_wire"])
        out = np.empty((n, N_SCORES), dtype=np.float32)
        if n == 0:
            return out
        missing = ""
        with self._lock:
            call = CallStats(calls=1, patches=n, plane_requests=1)
            call.serialise_s = time.perf_counter() - t0
            try:
                self._pool.pick(Attempt(), call)
                self._dispatch.plane(tensors, out, call)
            except NoPlaneModel as exc:
                missing = str(exc)  # nothing was sent: the patches go in their own call
                call.calls = call.patches = call.plane_requests = 0
            finally:
                self._record(call, t0)
        if missing:
            self._plane.turn_off(missing)
            return super().predict_plane(image, wire, peak_tick)
        return out

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Scores of one batch (``predict`` already sends the whole input in batches)."""
        return self.predict(batch)

    # -- the rest of the API --

    def stats(self) -> dict[str, Any]:
        """Statistics of the last predict call and of all calls so far, for ``--json``.

        Times in seconds: ``serialise_s``, ``wait_s`` (network + server), ``deserialise_s``;
        bytes are protobuf message sizes before gRPC compression (after fp16 / tensor
        compression); ``plane_requests`` counts plane-mode requests (``patches`` counts
        hits scored either way; ``server`` statistics are the patch model's only);
        ``failovers`` counts requests sent again after a failure. ``server`` holds
        ModelStatistics deltas (queue_s, compute_*_s, inferences, executions, requests)
        summed over the servers used: in "total" since each server was (re)connected (asked
        now), in "last_call" only with ``server_stats = "call"``. They include other
        clients' requests on a shared server.
        """
        total = self._total.as_dict()
        if self._server_stats.mode != "off":
            with self._lock:
                total["server"] = self._server_stats.since_connect(
                    self._pool.servers, self._total.requests_by_server
                )
        fallback = self._pool.fallback
        return {
            "last_call": self._last.as_dict(),
            "total": total,
            "servers": [s.address for s in self._pool.servers],
            "fallback_server": fallback.address if fallback else None,
        }

    @property
    def progress(self) -> tuple[int, int]:
        """(patches scored, patches asked) in the running or last predict call."""
        return self._dispatch.progress

    @property
    def fallback_server(self) -> LocalServer | None:
        """The local fallback server (argonic.inference.local_server.LocalServer) once started."""
        return self._pool.fallback

    def connect(self) -> str:
        """Check servers in order until one serves the expected model; return its address."""
        with self._lock:
            return self._pool.pick(Attempt(), CallStats()).address

    def close(self) -> None:
        """Close channels and stop the fallback server if one was started."""
        super().close()
        if self._shm is not None:
            self._shm.close()
        self._pool.close()

    # -- helpers --

    def _record(self, call: CallStats, started: float) -> None:
        call.total_s = time.perf_counter() - started
        self._last = call
        self._total.add(call)

    def _warn_batch_size(self, server: Server) -> None:
        if self.batch_size > server.model.max_batch_size:
            log.warning(
                "batch_size %d is above the max_batch_size %d of server %s: requests "
                "to it are split",
                self.batch_size,
                server.model.max_batch_size,
                server.label,
            )
