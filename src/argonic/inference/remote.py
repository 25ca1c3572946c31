"""Remote ModelInterface: a KServe v2 / Triton gRPC client (SONIC).

Patches [N, 48, 48, 1] float32 are sent as ModelInfer requests of ``batch_size`` rows
(the paper compares 235 with 1693); the replies "em_trk_none_netout" [n, 3] and
"michel_netout" [n, 1] are joined into [N, 4] scores [track, em, none, michel] in the
order of the patches. Every patch is answered exactly once: a request that fails on one
server is sent again, whole, to another.

Configuration: the ``[inference]`` table of the project's TOML file, as a dict::

    [inference]
    interface = "remote"
    batch_size = 235            # patches per ModelInfer request (split to the max_batch_size)

    [inference.remote]
    servers = ["gpu1:8001", "gpu2:8001"]  # "host:port" or a list; the first is preferred
    model_name = "emtrkmichelid"
    model_version = ""          # "" = the server's choice (latest)
    mode = "sync"               # "sync": block on each request (the paper); "async": pipelined
    max_in_flight = 4           # async: requests in flight at once
    timeout_s = 60.0            # per request, enforced as the gRPC deadline
    retries = 2                 # extra rounds over all servers once every server failed
    backoff_s = 0.5             # sleep before retry round k: backoff_s * 2**(k - 1)
    health_recheck_s = 10.0     # a failed server is tried last for this long
    root_cert = ""              # TLS: PEM file of the CA; enables TLS
    client_cert = ""            # TLS client certificate and key (mutual TLS), PEM files
    client_key = ""
    token = ""                  # sent as "authorization: Bearer <token>"
    compression = "none"        # "none", "gzip" or "deflate": gRPC's (both directions)
    request_mode = "patch"      # "patch": send 48x48 patches; "plane": send each (TPC, plane)
                                # image + hits to plane_model_name, the server cuts the patches
                                # (same scores; ~100x fewer bytes). No plane model on the
                                # server: a warning (once) and patch mode from then on
    plane_model_name = "emtrkmichelid_plane"
    transport = "fp32"          # patch mode: "fp32" or "fp16" (half the bytes; the server casts
                                # back to fp32; lossy: scores differ ~1e-3, near-ties may flip)
    tensor_compression = "none" # "none", "zstd" or "lz4": each request tensor compressed
                                # (lossless; argonic.transport), both modes
    fallback = false            # no server answers: start a local `argonic serve` and use it
    model_repository = ""       # for the fallback and the expected model ("": shipped models/)
    expected_sha256 = "..."     # default: <model>/<version>/model.onnx.sha256 there; "": no check
    server_stats = "total"      # ModelStatistics deltas (queue, compute time) in stats():
                                # "total" (since connect, queried by stats()), "call" (also per
                                # predict: 2 more RPCs per call), "off"

Transport options (fp16, zstd, lz4) are used only with a server that advertises them in
ModelConfig ``parameters["argonic_transport"]`` (argonic serve does; NVIDIA Triton does not:
then plain fp32, uncompressed, and a warning once).

Model identity: before a server is used, its ModelMetadata and ModelConfig (name, version,
input/output names, datatypes, dims) are compared with the expected model (the shipped
config.pbtxt) and, when the server's ModelConfig carries ``parameters["sha256"]`` (argonic
serve does; NVIDIA Triton does not, and then only a warning is logged), its checksum with
``expected_sha256``. A mismatch raises ModelMismatchError: no hit is ever classified by
another network.

API: ``RemoteInterface(config)`` (or ``make_interface`` with interface = "remote"),
``predict(patches)``, ``stats()`` (a dict for ``argonic reco --json``), ``progress``,
``predict_plane(image, wire, peak_tick)`` (one (TPC, plane): plane mode when configured),
``connect()`` (check the servers now rather than at the first predict), ``close()``
(also a context manager).

Errors: UNAVAILABLE, DEADLINE_EXCEEDED, connection errors and NOT_FOUND/not-ready models
move a request to the next server (the failed server is reconnected and checked again
before its next use); INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED and
UNIMPLEMENTED are fatal. When every server failed ``retries + 1`` times for one request,
RemoteInferenceError names the servers and the last error.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from argonic import transport as tensor_transport
from argonic.inference.base import (
    N_SCORES,
    PATCH_SHAPE,
    InterfaceError,
    InvalidPatchesError,
    ModelInterface,
    validate_patches,
)
from argonic.inference.fallback import FallbackError, LocalServer
from argonic.patches import PLANE_DATATYPES, PLANE_INPUTS, encode_plane
from argonic.repository import ModelRepositoryError, shipped_repository

log = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
RECONNECT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
COMPRESSION = {
    "none": grpc.Compression.NoCompression,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # quick reconnection after a server restart; min_reconnect_backoff_ms stays at gRPC's
    # default (20 s) because gRPC core uses it as the connect deadline: 100 ms there
    # failed every handshake over a 100 ms round trip or to a busy server
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class RemoteInferenceError(InterfaceError):
    """No server answered a request after all retries (or a server answered nonsense)."""


class ModelMismatchError(InterfaceError):
    """A server serves a model other than the expected one."""


# --- configuration --------------------------------------------------------------------------


@dataclass
class RemoteConfig:
    """The ``[inference.remote]`` keys (see the module docstring) plus ``batch_size``."""

    servers: list[str] = field(default_factory=lambda: ["127.0.0.1:8001"])
    model_name: str = "emtrkmichelid"
    model_version: str = ""
    batch_size: int = 235
    mode: str = "sync"
    max_in_flight: int = 4
    timeout_s: float = 60.0
    retries: int = 2
    backoff_s: float = 0.5
    health_recheck_s: float = 10.0
    root_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    token: str = ""
    compression: str = "none"
    fallback: bool = False
    model_repository: str = ""
    expected_sha256: str | None = None
    server_stats: str = "total"
    request_mode: str = "patch"
    plane_model_name: str = "emtrkmichelid_plane"
    transport: str = "fp32"
    tensor_compression: str = "none"

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> RemoteConfig:
        """Build from the ``[inference]`` table: ``batch_size`` there, the rest in ``remote``."""
        remote = dict(config.get("remote", {}))
        if "batch_size" in config:
            remote.setdefault("batch_size", config["batch_size"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(remote) - known)
        if unknown:
            raise InterfaceError(
                f"unknown [inference.remote] key(s) {unknown}; known: {sorted(known)}"
            )
        if isinstance(remote.get("servers"), str):
            remote["servers"] = [remote["servers"]]
        cfg = cls(**remote)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise InterfaceError naming the first bad value."""

        def bad(key: str, why: str) -> InterfaceError:
            return InterfaceError(f"[inference.remote] {key} = {getattr(self, key)!r}: {why}")

        if not self.servers and not self.fallback:
            raise bad("servers", 'give at least one "host:port" (or fallback = true)')
        for address in self.servers:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise bad("servers", f'{address!r} is not "host:port"')
        if self.mode not in ("sync", "async"):
            raise bad("mode", 'expected "sync" or "async"')
        if self.server_stats not in ("total", "call", "off"):
            raise bad("server_stats", 'expected "total", "call" or "off"')
        if self.compression not in COMPRESSION:
            raise bad("compression", f"expected one of {sorted(COMPRESSION)}")
        if self.request_mode not in ("patch", "plane"):
            raise bad("request_mode", 'expected "patch" or "plane"')
        if self.transport not in ("fp32", "fp16"):
            raise bad("transport", 'expected "fp32" or "fp16"')
        if self.tensor_compression not in tensor_transport.COMPRESSIONS:
            raise bad(
                "tensor_compression", f"expected one of {list(tensor_transport.COMPRESSIONS)}"
            )
        try:
            tensor_transport.compressor(self.tensor_compression)
        except tensor_transport.CompressionError as exc:
            raise bad("tensor_compression", str(exc)) from None
        if not self.plane_model_name:
            raise bad("plane_model_name", "expected a model name")
        for key in ("batch_size", "max_in_flight"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise bad(key, "expected a whole number >= 1")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise bad("retries", "expected a whole number >= 0")
        for key in ("timeout_s", "backoff_s", "health_recheck_s"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) < 0:
                raise bad(key, "expected a number of seconds >= 0")
        if self.timeout_s <= 0:
            raise bad("timeout_s", "expected a number of seconds > 0")
        if bool(self.client_cert) != bool(self.client_key):
            raise bad("client_cert", "client_cert and client_key go together")
        for key in ("root_cert", "client_cert", "client_key"):
            if getattr(self, key) and not Path(getattr(self, key)).is_file():
                raise bad(key, "no such file")

    def repository(self) -> Path | None:
        """The model repository for the fallback server and the expected model, if any."""
        if self.model_repository:
            return Path(self.model_repository)
        try:
            return shipped_repository()
        except ModelRepositoryError as exc:
            log.warning("%s: the expected model is the built-in emtrkmichelid signature", exc)
            return None


# --- the expected model ---------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """Name, protocol datatype and per-patch dims of one input or output."""

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSignature:
    """What the client expects the server's model to be."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str = ""

    @classmethod
    def default(cls, name: str) -> ModelSignature:
        """The EmTrackMichelId network's signature."""
        return cls(
            name,
            (TensorSpec("main_input", "FP32", PATCH_SHAPE),),
            (
                TensorSpec("em_trk_none_netout", "FP32", (3,)),
                TensorSpec("michel_netout", "FP32", (1,)),
            ),
        )

    @classmethod
    def from_config(cls, config: mc.ModelConfig, sha256: str = "") -> ModelSignature:
        """The signature a ModelConfig (config.pbtxt) declares."""

        def spec(t: Any) -> TensorSpec:
            return TensorSpec(
                t.name,
                mc.DataType.Name(t.data_type).removeprefix("TYPE_"),
                tuple(int(d) for d in t.dims),
            )

        return cls(
            config.name,
            tuple(spec(t) for t in config.input),
            tuple(spec(t) for t in config.output),
            sha256,
        )

    @classmethod
    def expected(cls, cfg: RemoteConfig) -> ModelSignature:
        """From the model repository's config.pbtxt and .sha256 file when present."""
        repository = cfg.repository()
        model_dir = repository / cfg.model_name if repository else Path()
        config_path = model_dir / "config.pbtxt"
        if repository and config_path.is_file():
            config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
            config.name = config.name or cfg.model_name
            signature = cls.from_config(config)
            filename = config.default_model_filename or "model.onnx"
        else:
            signature, filename = cls.default(cfg.model_name), "model.onnx"
        sha256 = cfg.expected_sha256
        if sha256 is None:
            sha256 = (
                "" if repository is None else _read_sha256(model_dir, cfg.model_version, filename)
            )
        return dataclasses.replace(signature, sha256=sha256.strip().lower())

    def check(
        self,
        address: str,
        metadata: service_pb2.ModelMetadataResponse,
        config: mc.ModelConfig,
        version: str,
    ) -> None:
        """Raise ModelMismatchError if the server's model differs from this one."""
        problems = []
        if metadata.name != self.name:
            problems.append(f"name '{metadata.name}' (expected '{self.name}')")
        if version and version not in metadata.versions:
            problems.append(f"versions {list(metadata.versions)} (expected {version})")
        batched = config.max_batch_size > 0
        if not batched:
            problems.append("max_batch_size 0 (the client needs a batch dimension)")
        for kind, expected, got in (
            ("input", self.inputs, metadata.inputs),
            ("output", self.outputs, metadata.outputs),
        ):
            served = {t.name: (t.datatype, tuple(t.shape[1:] if batched else t.shape)) for t in got}
            wanted = {t.name: (t.datatype, t.dims) for t in expected}
            if served != wanted:
                problems.append(f"{kind}s {_describe(served)} (expected {_describe(wanted)})")
        served_sha = (
            config.parameters["sha256"].string_value.strip().lower()
            if "sha256" in config.parameters
            else ""
        )
        if self.sha256 and served_sha and served_sha != self.sha256:
            problems.append(f"sha256 {served_sha} (expected {self.sha256})")
        if problems:
            raise ModelMismatchError(
                f"server {address} serves a different {self.name} model: " + "; ".join(problems)
            )
        if self.sha256 and not served_sha:
            log.warning(
                "server %s does not publish the sha256 of model '%s': checked names, "
                "shapes and datatypes only",
                address,
                self.name,
            )


def _describe(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> str:
    return ", ".join(f"{name} {dt} {list(dims)}" for name, (dt, dims) in sorted(tensors.items()))


def _read_sha256(model_dir: Path, version: str, filename: str) -> str:
    """The checksum in ``<model_dir>/<version>/<filename>.sha256`` (latest version if "")."""
    if not version:
        versions = [int(p.name) for p in model_dir.glob("*") if p.name.isdigit()]
        if not versions:
            return ""
        version = str(max(versions))
    path = model_dir / version / f"{filename}.sha256"
    text = path.read_text().split() if path.is_file() else []
    return text[0] if text else ""


# --- statistics -----------------------------------------------------------------------------

SERVER_STAT_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")


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


def _server_counters(response: service_pb2.ModelStatisticsResponse) -> dict[str, float]:
    """Cumulative queue/compute ns and counts summed over the model's versions."""
    totals: dict[str, float] = {}
    for model in response.model_stats:
        totals["inferences"] = totals.get("inferences", 0) + model.inference_count
        totals["executions"] = totals.get("executions", 0) + model.execution_count
        totals["requests"] = totals.get("requests", 0) + model.inference_stats.success.count
        for name in SERVER_STAT_FIELDS:
            ns = getattr(model.inference_stats, name).ns
            totals[f"{name}_s"] = totals.get(f"{name}_s", 0) + ns * 1e-9
    return totals


# --- one server -----------------------------------------------------------------------------


class _Server:
    """A server address, its channel, and its health."""

    def __init__(
        self, address: str, credentials: grpc.ChannelCredentials | None, fallback: bool = False
    ) -> None:
        self.address = address
        self.fallback = fallback
        self.label = f"{address} (local fallback)" if fallback else address
        self._credentials = credentials
        self.channel: grpc.Channel | None = None
        self._callables: dict[tuple[str, bool], grpc.UnaryUnaryMultiCallable] = {}
        self._retired: list[grpc.Channel] = []
        self.verified = False
        self.max_batch_size = 0
        self.failed_at: float | None = None
        self.needs_reconnect = False
        self.stats_ok = True
        self.baseline: dict[str, float] | None = None  # ModelStatistics at (re)connection
        self.transport: frozenset[str] = frozenset()  # what it decodes (argonic_transport)
        self.plane: bool | None = None  # serves the plane model (None: not checked yet)

    def rpc(self, method: str, raw: bool = False) -> grpc.UnaryUnaryMultiCallable:
        """A callable for one method; ``raw``: bytes in and out (the client serialises)."""
        if self.channel is None or self.needs_reconnect:
            self.reconnect()
        assert self.channel is not None
        key = (method, raw)
        if key not in self._callables:
            if raw:
                self._callables[key] = self.channel.unary_unary(SERVICE + method)
            else:
                request = getattr(service_pb2, f"{method}Request")
                response = getattr(service_pb2, f"{method}Response")
                self._callables[key] = self.channel.unary_unary(
                    SERVICE + method,
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                )
        return self._callables[key]

    def reconnect(self) -> None:
        """Open a fresh channel; the model is checked again before the next request."""
        if self.channel is not None:
            self._retired.append(self.channel)  # in-flight calls may still use it
        self.channel = (
            grpc.secure_channel(self.address, self._credentials, CHANNEL_OPTIONS)
            if self._credentials
            else grpc.insecure_channel(self.address, CHANNEL_OPTIONS)
        )
        self._callables.clear()
        self.needs_reconnect = False
        self.verified = False
        self.plane = None

    def healthy(self, recheck_s: float) -> bool:
        """Not failed recently."""
        return self.failed_at is None or time.monotonic() - self.failed_at >= recheck_s

    def mark_failed(self, code: grpc.StatusCode | None) -> None:
        """Record a failure: checked again before its next use; connection-like failures
        also get a fresh channel."""
        self.failed_at = time.monotonic()
        self.verified = False
        if code is None or code in RECONNECT:
            self.needs_reconnect = True

    def close_retired(self) -> None:
        """Close the channels replaced by reconnections (call when nothing is in flight)."""
        for channel in self._retired:
            channel.close()
        self._retired.clear()

    def close(self) -> None:
        """Close every channel this server opened."""
        for channel in [*self._retired, self.channel]:
            if channel is not None:
                channel.close()
        self._retired.clear()
        self.channel = None


@dataclass
class _Job:
    """One ModelInfer request: patches [start, stop) and its retry state."""

    start: int
    stop: int
    payload: bytes = b""
    encoding: tuple[str, str] = ("", "")  # (datatype, tensor compression) of ``payload``
    plane: dict[str, np.ndarray] | None = None  # a plane-mode request's tensors
    round: int = 0
    tried: set[str] = field(default_factory=set)
    last_error: str = ""


def _rpc_error_text(error: grpc.RpcError) -> str:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code else 'ERROR'}: {details}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --- the interface --------------------------------------------------------------------------


class RemoteInterface(ModelInterface):
    """ModelInterface that runs the network on KServe v2 / Triton gRPC servers.

    ``predict(patches)`` blocks until every patch is scored; in "async" mode up to
    ``max_in_flight`` requests of ``batch_size`` patches travel at once. Concurrent
    ``predict`` calls on one instance are serialised by a lock.
    """

    def __init__(
        self, config: RemoteConfig | Mapping[str, Any] | None = None, **overrides: Any
    ) -> None:
        if hasattr(config, "model_dump"):  # InferenceSettings
            config = config.model_dump()
        if config is None or isinstance(config, Mapping):
            table = dict(config or {})
            remote = {**table.get("remote", {}), **overrides}
            cfg = RemoteConfig.from_dict({**table, "remote": remote})
        else:
            cfg = dataclasses.replace(config, **overrides)
            cfg.validate()
        super().__init__(cfg.batch_size)
        self.config = cfg
        self.signature = ModelSignature.expected(cfg)
        credentials = self._credentials(cfg)
        self._servers = [_Server(a, credentials) for a in cfg.servers]
        self._metadata = (("authorization", f"Bearer {cfg.token}"),) if cfg.token else None
        self._compression = COMPRESSION[cfg.compression]
        self._fallback: LocalServer | None = None
        self._fallback_starts = 0
        self._before: dict[str, dict[str, float]] | None = None  # server stats at call start
        self._lock = threading.Lock()
        self._last = CallStats()
        self._total = CallStats()
        self._progress = (0, 0)
        self._header = self._request_header()
        self._compress = tensor_transport.compressor(cfg.tensor_compression)
        self._warned: set[str] = set()
        self._plane_off = False  # the plane model was missing: patch mode from then on

    @staticmethod
    def _credentials(cfg: RemoteConfig) -> grpc.ChannelCredentials | None:
        if not (cfg.root_cert or cfg.client_cert):
            return None

        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            read(cfg.root_cert), read(cfg.client_key), read(cfg.client_cert)
        )

    # -- public API --

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
                    first = self._pick_server(_Job(0, 0), call)
                    per_call = self.config.server_stats == "call"
                    self._before = self._snapshot_server_stats() if per_call else None
                    self._run(x, out, call, first)
                    if self._before is not None:
                        call.server = self._server_stats_delta(
                            self._before, call.requests_by_server
                        )
            finally:
                self._before = None
                call.total_s = time.perf_counter() - started
                self._last = call
                self._total.add(call)
        return out

    def predict_plane(
        self, image: np.ndarray, wire: np.ndarray, peak_tick: np.ndarray
    ) -> np.ndarray:
        """Scores [N, 4] of one (TPC, plane)'s hits: with ``request_mode = "plane"`` one
        request to the plane model carrying the image and the hits (argonic.patches);
        otherwise (or once a server lacked the plane model) the hits' patches."""
        if self.config.request_mode != "plane" or self._plane_off:
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
            started = t0
            try:
                self._pick_server(_Job(0, 0), call)
                try:
                    self._drain(
                        np.empty((n, 0), np.float32),
                        out,
                        call,
                        deque([_Job(0, n, plane=tensors)]),
                        deque(),
                        1,
                    )
                except _NoPlaneModel as exc:
                    missing = str(exc)  # nothing was sent: the patches go in their own call
                    call.calls = call.patches = call.plane_requests = 0
                finally:
                    for server in self._servers:
                        server.close_retired()
            finally:
                call.total_s = time.perf_counter() - started
                self._last = call
                self._total.add(call)
        if missing:
            self._plane_off = True
            log.warning(
                "server %s does not serve the plane model '%s': using patch mode from now on",
                missing,
                self.config.plane_model_name,
            )
            return super().predict_plane(image, wire, peak_tick)
        return out

    def _plane_ready(self, server: _Server) -> bool:
        """Whether ``server`` serves the plane model for our network (checked once per connection).

        ModelMismatchError if it serves one whose tensors or network checksum differ."""
        if server.plane is not None:
            return server.plane
        cfg = self.config
        model = {"name": cfg.plane_model_name, "version": cfg.model_version}
        kwargs: dict[str, Any] = {"timeout": cfg.timeout_s, "metadata": self._metadata}
        try:
            ready = server.rpc("ModelReady")(service_pb2.ModelReadyRequest(**model), **kwargs).ready
            if ready:
                metadata = server.rpc("ModelMetadata")(
                    service_pb2.ModelMetadataRequest(**model), **kwargs
                )
                config = server.rpc("ModelConfig")(
                    service_pb2.ModelConfigRequest(**model), **kwargs
                ).config
        except grpc.RpcError as error:
            log.warning(
                "server %s: plane model '%s' unavailable (%s)",
                server.label,
                cfg.plane_model_name,
                _rpc_error_text(error),
            )
            ready = False
        if not ready:
            server.plane = False
            return False
        inputs = {t.name: t.datatype for t in metadata.inputs}
        outputs = {t.name for t in metadata.outputs}
        problems = []
        if inputs != PLANE_DATATYPES:
            problems.append(f"inputs {inputs} (expected {PLANE_DATATYPES})")
        if not {s.name for s in self.signature.outputs} <= outputs:
            problems.append(f"outputs {sorted(outputs)}")
        served_sha = (
            config.parameters["sha256"].string_value.strip().lower()
            if "sha256" in config.parameters
            else ""
        )
        if self.signature.sha256 and served_sha and served_sha != self.signature.sha256:
            problems.append(f"network sha256 {served_sha} (expected {self.signature.sha256})")
        if problems:
            raise ModelMismatchError(
                f"server {server.label} serves a different plane model "
                f"'{cfg.plane_model_name}': " + "; ".join(problems)
            )
        server.plane = True
        return True

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Scores of one batch (``predict`` already sends the whole input in batches)."""
        return self.predict(batch)

    def stats(self) -> dict[str, Any]:
        """Statistics of the last predict call and of all calls so far, for ``--json``.

        Times in seconds: ``serialise_s``, ``wait_s`` (network + server), ``deserialise_s``;
        bytes are protobuf message sizes before gRPC compression (after fp16 / tensor
        compression); ``plane_requests`` counts plane-mode requests (``patches`` counts
        hits scored either way; ``server`` statistics are the patch model's only);
        ``failovers`` counts
        requests sent again after a failure. ``server`` holds ModelStatistics deltas
        (queue_s, compute_*_s, inferences, executions, requests) summed over the servers
        used: in "total" since each server was (re)connected (asked now), in "last_call"
        only with ``server_stats = "call"``. They include other clients' requests on a
        shared server.
        """
        total = self._total.as_dict()
        if self.config.server_stats != "off":
            with self._lock:
                baselines = {s.address: s.baseline for s in self._servers if s.baseline is not None}
                total["server"] = self._server_stats_delta(
                    baselines, self._total.requests_by_server
                )
        return {
            "last_call": self._last.as_dict(),
            "total": total,
            "servers": [s.address for s in self._servers],
            "fallback_server": self._fallback.address if self._fallback else None,
        }

    @property
    def progress(self) -> tuple[int, int]:
        """(patches scored, patches asked) in the running or last predict call."""
        return self._progress

    def connect(self) -> str:
        """Check servers in order until one serves the expected model; return its address."""
        with self._lock:
            return self._pick_server(_Job(0, 0), CallStats()).address

    def close(self) -> None:
        """Close channels and stop the fallback server if one was started."""
        super().close()
        for server in self._servers:
            server.close()
        if self._fallback is not None:
            self._fallback.stop()

    # -- requests --

    def _request_header(self) -> bytes:
        """The serialised ModelInferRequest without shape and data (same for all requests)."""
        request = service_pb2.ModelInferRequest(
            model_name=self.config.model_name, model_version=self.config.model_version
        )
        for spec in self.signature.outputs:
            request.outputs.add().name = spec.name
        return request.SerializeToString()

    def _serialise(self, x: np.ndarray, job: _Job, encoding: tuple[str, str]) -> bytes:
        """ModelInferRequest bytes: the fixed header, the input tensor and its raw bytes.

        Protobuf messages concatenate, so the raw patch bytes are appended as field 7
        (raw_input_contents) without another copy through the protobuf runtime.
        ``encoding``: (datatype "FP32"/"FP16", tensor compression) for this server.
        """
        if job.plane is not None:
            return self._serialise_plane(job.plane, encoding[1])
        spec = self.signature.inputs[0]
        datatype, compression = encoding
        tensor = service_pb2.ModelInferRequest(
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name=spec.name, datatype=datatype, shape=[job.stop - job.start, *spec.dims]
                )
            ]
        )
        if compression != "none":
            tensor.parameters[tensor_transport.PARAMETER].string_param = compression
        rows = x[job.start : job.stop]
        data = (rows.astype("<f2") if datatype == "FP16" else rows).tobytes()
        if compression != "none":
            assert self._compress is not None
            data = self._compress(data)
        return b"".join(
            (self._header, tensor.SerializeToString(), b"\x3a", _varint(len(data)), data)
        )

    def _serialise_plane(self, tensors: dict[str, np.ndarray], compression: str) -> bytes:
        """The ModelInferRequest of one plane-mode request (argonic.patches tensors)."""
        request = service_pb2.ModelInferRequest(
            model_name=self.config.plane_model_name, model_version=self.config.model_version
        )
        for name in PLANE_INPUTS:
            array = np.ascontiguousarray(
                tensors[name], "<f4" if PLANE_DATATYPES[name] == "FP32" else "<i4"
            )
            request.inputs.add(name=name, datatype=PLANE_DATATYPES[name], shape=list(array.shape))
            data = array.tobytes()
            if compression != "none":
                assert self._compress is not None
                data = self._compress(data)
            request.raw_input_contents.append(data)
        for spec in self.signature.outputs:
            request.outputs.add().name = spec.name
        if compression != "none":
            request.parameters[tensor_transport.PARAMETER].string_param = compression
        return request.SerializeToString()

    def _encoding(self, server: _Server) -> tuple[str, str]:
        """(datatype, tensor compression) to send to ``server``: the configured transport
        where the server advertises it, else fp32 / none (with a warning, once)."""
        spec = self.signature.inputs[0]
        datatype = spec.datatype
        if self.config.transport == "fp16" and spec.datatype == "FP32":
            if "fp16" in server.transport:
                datatype = "FP16"
            else:
                self._warn_once(
                    f"fp16-{server.address}",
                    "server %s does not accept FP16 for FP32 inputs: sending fp32",
                    server.label,
                )
        compression = self.config.tensor_compression
        if compression != "none" and compression not in server.transport:
            self._warn_once(
                f"{compression}-{server.address}",
                "server %s does not decode %s tensors: sending them uncompressed",
                server.label,
                compression,
            )
            compression = "none"
        return datatype, compression

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _deserialise(self, raw: bytes, job: _Job, out: np.ndarray) -> None:
        """Write one ModelInferResponse into rows [start, stop) of ``out``."""
        response = service_pb2.ModelInferResponse.FromString(raw)
        rows = job.stop - job.start
        served = {o.name: i for i, o in enumerate(response.outputs)}
        column = 0
        for spec in self.signature.outputs:
            width = int(np.prod(spec.dims))
            if spec.name not in served or served[spec.name] >= len(response.raw_output_contents):
                raise RemoteInferenceError(f"reply has no raw output '{spec.name}'")
            tensor = response.outputs[served[spec.name]]
            values = np.frombuffer(response.raw_output_contents[served[spec.name]], dtype="<f4")
            if tensor.datatype != "FP32" or values.size != rows * width:
                raise RemoteInferenceError(
                    f"reply output '{spec.name}' is {tensor.datatype} {list(tensor.shape)} with "
                    f"{values.size} values; expected FP32 [{rows}, {width}]"
                )
            out[job.start : job.stop, column : column + width] = values.reshape(rows, width)
            column += width
        if column != N_SCORES:
            raise RemoteInferenceError(
                f"the model's outputs give {column} scores per patch, not {N_SCORES}"
            )

    def _run(self, x: np.ndarray, out: np.ndarray, call: CallStats, first: _Server) -> None:
        """Send all requests, at most max_in_flight at once, resending failed ones."""
        rows = min(self.batch_size, first.max_batch_size)
        pending = deque(_Job(s, min(s + rows, len(x))) for s in range(0, len(x), rows))
        window = self.config.max_in_flight if self.config.mode == "async" else 1
        in_flight: deque[tuple[_Job, _Server, grpc.Future]] = deque()
        self._progress = (0, len(x))
        try:
            self._drain(x, out, call, pending, in_flight, window)
        except BaseException:
            for _, _, future in in_flight:
                future.cancel()
            raise
        finally:
            for server in self._servers:
                server.close_retired()

    def _drain(
        self,
        x: np.ndarray,
        out: np.ndarray,
        call: CallStats,
        pending: deque[_Job],
        in_flight: deque[tuple[_Job, _Server, grpc.Future]],
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
                call.wait_s += time.perf_counter() - t0
                self._failed(job, server, error)
                call.failovers += 1
                pending.appendleft(job)
                continue
            t1 = time.perf_counter()
            self._deserialise(raw, job, out)
            call.wait_s += t1 - t0
            call.deserialise_s += time.perf_counter() - t1
            call.bytes_received += len(raw)
            server.failed_at = None
            done += job.stop - job.start
            self._progress = (done, len(x))

    def _submit(
        self, pending: deque[_Job], x: np.ndarray, call: CallStats
    ) -> tuple[_Job, _Server, grpc.Future]:
        """Send the next pending request to the best server; split it if it is too big."""
        job = pending.popleft()
        server = self._pick_server(job, call)
        if job.plane is not None:
            if not self._plane_ready(server):
                raise _NoPlaneModel(server.label)
        elif job.stop - job.start > server.max_batch_size:
            rest = _Job(job.start + server.max_batch_size, job.stop)
            job = _Job(job.start, rest.start)
            pending.appendleft(rest)
        encoding = self._encoding(server)
        if not job.payload or job.encoding != encoding:
            t0 = time.perf_counter()
            job.payload = self._serialise(x, job, encoding)
            job.encoding = encoding
            call.serialise_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        future = server.rpc("ModelInfer", raw=True).future(
            job.payload,
            timeout=self.config.timeout_s,
            metadata=self._metadata,
            compression=self._compression,
        )
        call.serialise_s += time.perf_counter() - t0  # the send is queued here
        call.requests += 1
        call.bytes_sent += len(job.payload)
        call.requests_by_server[server.address] = call.requests_by_server.get(server.address, 0) + 1
        return job, server, future

    def _failed(self, job: _Job, server: _Server, error: grpc.RpcError) -> None:
        """Record a failed request; raise at once when the error is not worth a retry."""
        code = error.code() if hasattr(error, "code") else None
        text = _rpc_error_text(error)
        if code not in RETRYABLE:
            raise RemoteInferenceError(
                f"server {server.label} refused the request: {text}"
            ) from None
        log.warning("server %s failed a request (%s); trying another", server.label, text)
        server.mark_failed(code)
        job.tried.add(server.address)
        job.last_error = f"{server.label}: {text}"

    # -- choosing a server --

    def _pick_server(self, job: _Job, call: CallStats) -> _Server:
        """The first usable server this job has not tried in its current round.

        Healthy servers come first, in configured order, then recently failed ones. When a
        round is used up: start the fallback server (once, if allowed), or back off and
        begin the next round, or raise RemoteInferenceError after ``retries`` rounds.
        """
        while True:
            candidates = [s for s in self._servers if s.address not in job.tried]
            candidates.sort(key=lambda s: not s.healthy(self.config.health_recheck_s))
            for server in candidates:
                if self._usable(server, job):
                    return server
            if self._start_fallback():
                continue
            if job.round >= self.config.retries:
                names = ", ".join(s.label for s in self._servers)
                raise RemoteInferenceError(
                    f"no server answered after {job.round + 1} round(s) over [{names}] "
                    f"for model '{self.config.model_name}'; last error: {job.last_error}"
                )
            job.round += 1
            job.tried.clear()
            call.retries += 1
            time.sleep(self.config.backoff_s * 2 ** (job.round - 1))

    def _usable(self, server: _Server, job: _Job) -> bool:
        """Whether the server can take requests: connected, ready and serving our model."""
        if server.verified and not server.needs_reconnect:
            return True
        try:
            self._verify(server)
            return True
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            text = _rpc_error_text(error)
            if code not in RETRYABLE:
                raise RemoteInferenceError(
                    f"server {server.label} refused the connection checks: {text}"
                ) from None
            server.mark_failed(code)
        except _NotReady as exc:
            server.mark_failed(None)
            text = str(exc)
        log.warning("server %s is not usable: %s", server.label, text)
        job.tried.add(server.address)
        job.last_error = f"{server.label}: {text}"
        return False

    def _verify(self, server: _Server) -> None:
        """Readiness and model identity checks (ModelMismatchError on a wrong model)."""
        cfg, timeout = self.config, self.config.timeout_s
        kwargs: dict[str, Any] = {"timeout": timeout, "metadata": self._metadata}
        if not server.rpc("ServerReady")(service_pb2.ServerReadyRequest(), **kwargs).ready:
            raise _NotReady("server not ready")
        model = {"name": cfg.model_name, "version": cfg.model_version}
        if not server.rpc("ModelReady")(service_pb2.ModelReadyRequest(**model), **kwargs).ready:
            raise _NotReady(f"model '{cfg.model_name}' not ready")
        metadata = server.rpc("ModelMetadata")(service_pb2.ModelMetadataRequest(**model), **kwargs)
        config = server.rpc("ModelConfig")(service_pb2.ModelConfigRequest(**model), **kwargs).config
        self.signature.check(server.label, metadata, config, cfg.model_version)
        server.max_batch_size = config.max_batch_size
        advertised = (
            config.parameters[tensor_transport.TRANSPORT_PARAMETER].string_value
            if (tensor_transport.TRANSPORT_PARAMETER in config.parameters)
            else ""
        )
        server.transport = frozenset(w.strip() for w in advertised.split(",") if w.strip())
        server.plane = None
        server.verified = True
        if self.config.server_stats != "off":
            server.baseline = self._server_counters(server)
            if self._before is not None and server.baseline is not None:
                self._before.setdefault(server.address, server.baseline)
        if self.batch_size > config.max_batch_size:
            log.warning(
                "batch_size %d is above the max_batch_size %d of server %s: requests "
                "to it are split",
                self.batch_size,
                config.max_batch_size,
                server.label,
            )

    def _start_fallback(self) -> bool:
        """Start (or restart) the local fallback server; False if not allowed or already up."""
        if not self.config.fallback:
            return False
        if self._fallback is None:
            repository = self.config.repository()
            if repository is None:
                raise FallbackError(
                    "cannot start a fallback server: no model repository "
                    "(set [inference.remote] model_repository)"
                )
            self._fallback = LocalServer(repository, self.config.model_name)
        elif self._fallback.alive or self._fallback_starts > self.config.retries:
            return False
        log.warning("no configured server answers: starting a local fallback server")
        self._fallback_starts += 1
        address = self._fallback.start()
        for server in self._servers:
            if server.fallback:
                server.close()
        self._servers = [s for s in self._servers if not s.fallback]
        self._servers.append(_Server(address, None, fallback=True))
        return True

    # -- server statistics --

    def _snapshot_server_stats(self) -> dict[str, dict[str, float]]:
        """Cumulative ModelStatistics of the verified servers, keyed by address."""
        snapshot = {}
        for server in self._servers:
            if server.verified and server.stats_ok and not server.needs_reconnect:
                counters = self._server_counters(server)
                if counters is not None:
                    snapshot[server.address] = counters
        return snapshot

    def _server_counters(self, server: _Server) -> dict[str, float] | None:
        """The server's cumulative ModelStatistics, or None (a server that refuses the
        statistics extension, e.g. PyTriton's default token protection, is not asked again)."""
        request = service_pb2.ModelStatisticsRequest(
            name=self.config.model_name, version=self.config.model_version
        )
        try:
            response = server.rpc("ModelStatistics")(
                request, timeout=min(self.config.timeout_s, 5.0), metadata=self._metadata
            )
        except grpc.RpcError as error:
            log.warning(
                "server %s gives no model statistics (%s)", server.label, _rpc_error_text(error)
            )
            if error.code() not in RETRYABLE:
                server.stats_ok = False
            return None
        return _server_counters(response)

    def _server_stats_delta(
        self, before: dict[str, dict[str, float]], used: dict[str, int]
    ) -> dict[str, float]:
        """(now - before) ModelStatistics summed over the servers in ``used``."""
        delta: dict[str, float] = {}
        for server in self._servers:
            if (
                server.address not in before
                or server.address not in used
                or not server.stats_ok
                or server.needs_reconnect
            ):
                continue
            after = self._server_counters(server)
            for key, value in (after or {}).items():
                delta[key] = delta.get(key, 0.0) + value - before[server.address].get(key, 0.0)
        return delta


class _NotReady(Exception):
    """A server or model that answers but is not ready."""


class _NoPlaneModel(Exception):
    """The chosen server does not serve the plane model."""
