"""The data plane: loaded models, inference, repository control and draining.

Everything the gRPC servicer answers comes from here; the servicer only converts messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from argonic.patches import MAX_PLANE_PIXELS
from argonic.repository.model_config import parameter
from argonic.server.backends.calibrate import calibrate
from argonic.server.core.batcher import DynamicBatcher
from argonic.server.core.limits import IdleTrim, InflightBytes
from argonic.server.core.loader import LoadedFiles, ModelRepository
from argonic.server.core.model_version import ModelVersion, batch_policy
from argonic.server.core.saturation import Saturation
from argonic.server.core.shm import SystemSharedMemory
from argonic.server.core.stats import ModelStats
from argonic.server.core.tensors import InferRequest, InferResponse
from argonic.server.errors import (
    HostUnsupported,
    InvalidArgument,
    NotFound,
    ServerError,
    Unavailable,
    repository_errors,
    unknown_model,
)
from argonic.settings.server import MAX_INFLIGHT_BYTES
from argonic.tracing import RequestTrace, ServerTracer

log = logging.getLogger("argonic.server")


MODEL_CONTROL_MODES = ("none", "explicit", "poll")
CONTROL_REFUSED = "explicit model load / unload is not allowed if polling is enabled"  # Triton's


@dataclass(frozen=True)
class IndexEntry:
    """One row of RepositoryIndex: a model (version) and its state."""

    name: str
    version: str
    state: str
    reason: str = ""


class DataPlane:
    """Holds the loaded models and serves them; all methods run on the server's event loop."""

    def __init__(
        self,
        repository: ModelRepository,
        model_control_mode: str = "none",
        max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
        saturation: tuple[float, float, bool] = (0.0, 30.0, False),
    ) -> None:
        """``saturation``: (threshold ms, window s, refuse inference too); see core.saturation."""
        if model_control_mode not in MODEL_CONTROL_MODES:
            raise ValueError(f"model control mode must be one of {MODEL_CONTROL_MODES}")
        self.repository = repository
        self.model_control_mode = model_control_mode
        self.admission = InflightBytes(max_inflight_bytes)
        self.trim = IdleTrim()
        self.models: dict[str, dict[int, ModelVersion]] = {}
        self.failures: dict[str, str] = {}  # model in the repository -> why its last load failed
        self.startup_failures: set[str] = set()
        self.unloaded: set[str] = set()
        self.unloading: set[str] = set()  # unloaded, their in-flight requests still running
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._repository_lock = asyncio.Lock()  # one load/unload at a time
        self.shared_memory = SystemSharedMemory()
        threshold_ms, window_s, self.refuse_inference = saturation
        self.saturation = Saturation(self._all_stats, threshold_ms, window_s)
        self.tracer: ServerTracer | None = None  # set by the server when tracing is on

    def _all_stats(self) -> list[ModelStats]:
        return [m.stats for versions in list(self.models.values()) for m in list(versions.values())]

    # --- health -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Ready: not draining, and every model asked for at start-up has loaded (Triton's rule)."""
        return not self.draining and not self.startup_failures

    def model(self, name: str, version: str = "") -> ModelVersion:
        """A loaded version (empty: the highest loaded); NotFound otherwise."""
        versions = self.models.get(name)
        if not versions:
            raise unknown_model(name)
        if not version:
            return versions[max(versions)]
        if not version.isdigit() or int(version) not in versions:
            raise unknown_model(name, version)
        return versions[int(version)]

    def versions(self, name: str) -> list[ModelVersion]:
        """All loaded versions of a model, oldest first; NotFound if none."""
        if not self.models.get(name):
            raise unknown_model(name)
        return [v for _, v in sorted(self.models[name].items())]

    def selected(self, name: str, version: str = "") -> list[ModelVersion]:
        """One version if given, else every loaded version (metadata, statistics)."""
        return [self.model(name, version)] if version else self.versions(name)

    def statistics(self, name: str = "", version: str = "") -> list[tuple[str, ModelVersion]]:
        """(model name, version) pairs ModelStatistics reports: one model (all its versions
        unless ``version``) or, with no name, every loaded model."""
        names = [name] if name else sorted(self.models)
        return [(n, v) for n in names for v in self.selected(n, version)]

    def is_ready(self, name: str, version: str = "") -> bool:
        """ModelReady: loaded (and not draining)."""
        try:
            self.model(name, version)
        except NotFound:
            return False
        return not self.draining

    # --- inference ----------------------------------------------------------------------

    def begin_trace(self, headers: Any, protocol: str) -> RequestTrace | None:
        """The trace of a request now received, if tracing is on and picks it."""
        return None if self.tracer is None else self.tracer.begin(headers or (), protocol)

    async def infer(
        self, request: InferRequest, trace: RequestTrace | None = None
    ) -> InferResponse:
        """Run one request (its spans written when ``trace``); UNAVAILABLE once draining."""
        if trace is None:
            return await self._infer(request)
        try:
            response = await self._infer(request)
        except BaseException as exc:
            trace.end(request.model_name, exc)
            raise
        trace.end(request.model_name, response)
        return response

    async def _infer(self, request: InferRequest) -> InferResponse:
        if self.draining:
            raise Unavailable("Server is shutting down: new requests are refused")
        if self.refuse_inference:
            self.saturation.check("inference")
        model = self.model(request.model_name, request.model_version)
        self._in_flight += 1
        self._idle.clear()
        self.trim.busy()
        try:
            for t in request.inputs:
                if t.shm is not None:
                    t.raw = self.shared_memory.read(t.shm, f"input '{t.name}'")
            with self.admission.admit(plane_image_bytes(request)):
                response = await model.infer(request)
            for out in response.outputs:
                ref = request.output_regions.get(out.name)
                if ref is not None:
                    self.shared_memory.write(ref, out.data, f"output '{out.name}'")
                    out.shm = ref
            return response
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
                self.trim.idle()

    # --- repository ---------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """RepositoryIndex: every model in the repository with its state (UNAVAILABLE while
        saturated: core.saturation)."""
        self.saturation.check("RepositoryIndex")
        entries = []
        for name in sorted(set(self.repository.names()) | set(self.models) | self.unloading):
            if self.models.get(name):
                entries += [IndexEntry(name, str(v), "READY") for v in sorted(self.models[name])]
            elif name in self.unloading and not ready_only:  # Triton's state while it drains
                entries.append(IndexEntry(name, "", "UNLOADING", "in-flight requests finishing"))
            elif not ready_only:
                reason = self.failures.get(name, "unloaded" if name in self.unloaded else "")
                entries.append(IndexEntry(name, "", "UNAVAILABLE", reason))
        return entries

    def check_control(self) -> None:
        """RepositoryModelLoad/Unload from a client: only in explicit mode (Triton's rule)."""
        if self.model_control_mode != "explicit":
            raise Unavailable(CONTROL_REFUSED)

    async def load(self, name: str, parameters: Mapping | None = None) -> list[ModelVersion]:
        """Load (or reload) a model: the new versions replace the old, which drain then close.
        Load ``parameters`` (Triton's config/file overrides) are refused."""
        if parameters:
            names = sorted(map(str, parameters)) if isinstance(parameters, Mapping) else parameters
            raise InvalidArgument(
                f"load parameters {names} are not supported: "
                "edit the model repository and load again"
            )
        async with self._repository_lock:
            try:
                config, loaded = await asyncio.to_thread(self.repository.load, name)
            except NotFound:
                raise
            except ServerError as exc:
                self.failures[name] = str(exc)
                raise
            except Exception as exc:  # noqa: BLE001 - a broken model file must not stop the server
                self.failures[name] = f"failed to load '{name}': {type(exc).__name__}: {exc}"
                raise InvalidArgument(self.failures[name]) from exc
            with repository_errors():  # a config the batcher or validation refuses
                versions = await self._build_versions(name, config, loaded)
            old = self.models.get(name, {})
            self.models[name] = versions
            self.failures.pop(name, None)
            self.startup_failures.discard(name)
            self.unloaded.discard(name)
        await self._close(old.values())
        return list(versions.values())

    async def _build_versions(
        self, name: str, config: Any, loaded: list[LoadedFiles]
    ) -> dict[int, ModelVersion]:
        """Each loaded version wrapped in its batcher (execution size calibrated if "auto")."""
        versions = {}
        for files in loaded:
            stats = ModelStats()
            on_gpu = all(spec.device == "cuda" for spec in files.instances)
            exec_size = None
            if parameter(config, "execution_batch_size") == "auto" and config.max_batch_size > 0:
                exec_size, rates = await asyncio.to_thread(
                    calibrate, config, files.model_file, files.instances[0]
                )
                log.info(
                    "model '%s' version %d: execution_batch_size auto -> %d (rows/s: %s)",
                    name,
                    files.version,
                    exec_size,
                    ", ".join(f"{k}: {v:.0f}" for k, v in rates.items()),
                )
            batcher = DynamicBatcher(
                files.backends,
                batch_policy(config, on_gpu, exec_size),
                stats,
                name=f"{name}-v{files.version}",
            )
            versions[files.version] = ModelVersion(
                config, files.version, files.sha256, stats, batcher
            )
            log.info(
                "loaded model '%s' version %d (%s, %d instance(s) on %s, sha256 %s)",
                name,
                files.version,
                versions[files.version].platform,
                len(files.backends),
                ",".join(sorted({s.device for s in files.instances})),
                files.sha256[:12],
            )
        return versions

    async def unload(self, name: str) -> None:
        """Unload a model; its queued and running requests finish first."""
        async with self._repository_lock:
            if name not in self.models and name not in self.repository.names():
                raise unknown_model(name)
            old = self.models.pop(name, {})
            self.unloaded.add(name)
            self.failures.pop(name, None)
            self.unloading.add(name)
        try:
            await self._close(old.values())
        finally:
            self.unloading.discard(name)
        log.info("unloaded model '%s'", name)

    async def load_all(self, names: list[str] | None = None) -> None:
        """Load the named models (default: every model in the repository); log failures."""
        for name in names if names is not None else self.repository.names():
            try:
                await self.load(name)
            except HostUnsupported as exc:  # e.g. bf16 on a CPU without bf16: not a failure
                log.warning("model '%s' not loaded: %s", name, exc)
            except ServerError as exc:
                self.startup_failures.add(name)
                log.error("model '%s' failed to load: %s", name, exc)

    # --- shutdown -----------------------------------------------------------------------

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new requests and wait for in-flight ones; True if all finished in time."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Unload every model (their queued and running requests finish first)."""
        models = [v for versions in self.models.values() for v in versions.values()]
        self.models = {}
        self.shared_memory.close()
        await self._close(models)

    @staticmethod
    async def _close(models: Iterable[ModelVersion]) -> None:
        await asyncio.gather(*(m.batcher.close() for m in models))


def plane_image_bytes(request: InferRequest) -> int:
    """Bytes of the image a plane-mode request is decoded into (float32 [wires, bins]),
    counted by the in-flight cap beside the request's own bytes; 0 for other requests and
    for a ``plane_shape`` the plane model refuses anyway."""
    shape = next((t for t in request.inputs if t.name == "plane_shape"), None)
    if shape is None or shape.datatype != "INT32":
        return 0
    if shape.raw is not None:
        dims = np.frombuffer(shape.raw, "<i4") if len(shape.raw) == 8 else np.zeros(0)
    else:
        dims = np.asarray(shape.values or [], np.int64)
    if dims.size != 2 or (dims < 1).any() or int(dims[0]) * int(dims[1]) > MAX_PLANE_PIXELS:
        return 0
    return int(dims[0]) * int(dims[1]) * 4
