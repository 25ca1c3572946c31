"""The client's tables: ``[inference]`` (the ModelInterface, local or remote) and ``[reco]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from argonic.settings.base import _Table, host_port, split_list

#: Patches per network execution inside an interface or a backend (measured best on CPUs).
EXECUTION_BATCH_SIZE = 256
#: ONNX Runtime graph optimisation of local inference: "extended" beat "all" (whose NCHWc
#: layout pass adds a costly reorder of the 44x44x48 feature map) by ~1.25x at batch 256.
GRAPH_OPTIMIZATION = "extended"


class LocalSettings(_Table):
    """``[inference.local]``: in-process inference."""

    backend: Literal["onnxruntime", "torch", "repository"] = Field(
        "onnxruntime",
        description="`onnxruntime` (about 3x faster on CPU), `torch`, or `repository`: a model "
        "of a model repository by name, run by the backend `argonic serve` loads for it "
        "(ONNX Runtime, OpenVINO, TorchScript)",
    )
    model: str = Field(
        "",
        description="the ONNX file (torch also reads checkpoints), or with `repository` the "
        "model's name; empty: the shipped model",
    )
    repository: str = Field(
        "", description="with backend `repository`: the repository folder; empty: the shipped one"
    )
    threads: int = Field(0, ge=0, description="intra-op threads; 0: the runtime's default")
    execution_batch_size: int = Field(
        EXECUTION_BATCH_SIZE,
        ge=1,
        description="patches per execution, independent of `batch_size`: the hardware's best",
    )
    graph_optimization: Literal["basic", "extended", "all", "all-no-nchwc"] = Field(
        GRAPH_OPTIMIZATION, description="ONNX Runtime graph optimisation level"
    )
    device: str = Field("cpu", description="torch: `cpu`, `cuda`, `cuda:1`, ...")
    check_sha256: bool = Field(
        True, description="refuse a model file whose sha256 differs from its `.sha256` file"
    )


class RemoteSettings(_Table):
    """``[inference.remote]``: a KServe v2 / Triton gRPC server (SONIC)."""

    servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost:8001"],
        description="`host:port` list (or one comma-separated string); the first is "
        "preferred, the others take over on failure",
    )
    model_name: str = Field("emtrkmichelid", min_length=1, description="the served model")
    model_version: str = Field("", description="empty: the server's latest version")
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="`sync`: one blocking request at a time (the paper); "
        "`async`: `max_in_flight` requests pipelined",
    )
    max_in_flight: int = Field(4, ge=1, description="requests in flight at once (async mode)")
    timeout_s: float = Field(60.0, gt=0, description="per request, enforced as the gRPC deadline")
    retries: int = Field(2, ge=0, description="extra rounds over all servers after all failed")
    backoff_s: float = Field(
        0.5, ge=0, description="sleep before retry round k: `backoff_s * 2**(k - 1)`"
    )
    check_index: bool = Field(
        True,
        description="ask a server for RepositoryIndex before using it (at start and after a "
        "failure) and skip one that refuses: a saturated server refuses it (SuperSONIC's "
        "signal, CMS's rule); `false` where the model-repository protocol is restricted",
    )
    health_recheck_s: float = Field(
        10.0, ge=0, description="a failed server is tried last for this long"
    )
    root_cert: str = Field("", description="TLS: PEM file of the CA; enables TLS")
    client_cert: str = Field("", description="mutual TLS: client certificate (PEM file)")
    client_key: str = Field("", description="mutual TLS: client key (PEM file)")
    token: str = Field("", description="sent as `authorization: Bearer <token>`")
    compression: Literal["none", "gzip", "deflate"] = Field(
        "none", description="gRPC message compression, both directions"
    )
    fallback: bool = Field(
        False, description="no server answers: start a local `argonic serve` and use it"
    )
    model_repository: str = Field(
        "",
        description="repository of the fallback server and the expected model; "
        "empty: the shipped `models/`",
    )
    expected_sha256: str | None = Field(
        None,
        description="checksum the server must report; unset: the repository's "
        "`.sha256`; empty: no check",
    )
    server_stats: Literal["total", "call", "off"] = Field(
        "total",
        description="ModelStatistics deltas in the summary: since connect (`total`), "
        "per predict (`call`: 2 more RPCs per call) or `off`",
    )
    request_mode: Literal["patch", "plane"] = Field(
        "plane",
        description="`plane`: send each (TPC, plane)'s pixels near hits and the hit "
        "coordinates, the server cuts the same patches (identical scores, ~140x fewer bytes, "
        "module time within a few % of local: benchmarks/BENCHMARKS.md); `patch`: send 48x48 "
        "patches (for servers without the plane model, e.g. NVIDIA Triton serving only the "
        "network: a plane-mode client falls back to it by itself)",
    )
    plane_model_name: str = Field(
        "",
        description="the server's plane-mode model; empty: `<model_name>_plane` "
        "(`emtrkmichelid_plane`, `emtrkmichelid_int8_plane`, ...)",
    )
    transport: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="patch-mode tensor precision; `fp16` halves the bytes but is lossy "
        "(near-tie hits may change class)",
    )
    shared_memory: Literal["auto", "off"] = Field(
        "off",
        description="`auto`: patch requests to a server on this host that offers Triton's "
        "system shared memory travel in /dev/shm (only tensor descriptions cross the "
        "socket; for jobs next to their server); `off`: always over the wire (what the "
        "scaling study measures)",
    )
    tensor_compression: Literal["none", "zstd", "lz4"] = Field(
        "none", description="lossless compression of request tensors (servers that advertise it)"
    )

    @field_validator("servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("servers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        return [host_port(address) for address in value]

    @model_validator(mode="after")
    def _consistent(self) -> RemoteSettings:
        if not self.plane_model_name:  # the plane twin of the chosen network
            self.plane_model_name = f"{self.model_name}_plane"
        if not self.servers and not self.fallback:
            raise ValueError('servers: give at least one "host:port" (or fallback = true)')
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key go together")
        for key in ("root_cert", "client_cert", "client_key"):
            if getattr(self, key) and not Path(getattr(self, key)).is_file():
                raise ValueError(f"{key} = {getattr(self, key)!r}: no such file")
        return self


class InferenceSettings(_Table):
    """``[inference]``: which ModelInterface runs the network, and its parameters."""

    interface: Literal["local", "remote"] = Field(
        "local", description="`local` (in-process) or `remote` (a KServe v2 / Triton server)"
    )
    batch_size: int = Field(
        256,
        ge=1,
        description="patches per call (local) or per ModelInfer request (remote); "
        "the paper compares 235 with 1693",
    )
    local: LocalSettings = Field(default_factory=LocalSettings, description="in-process")
    remote: RemoteSettings = Field(default_factory=RemoteSettings, description="remote server")


class RecoSettings(_Table):
    """``[reco]``: the reconstruction chain after EmTrackMichelId."""

    michel_context: bool = Field(
        True,
        description="refine every hit's scores with its neighbours' (the MichelContext stage, "
        "argonic.reco.michel_context; run on the client after any interface); `false`: the "
        "network's scores as they are",
    )
    context_weights: str = Field(
        "", description="weights file of that stage; empty: the shipped one"
    )
    coherent_noise: bool = Field(
        False,
        description="noise filtering of raw waveforms also removes each front-end board's "
        "coherent noise (the median of its 16 channels at each tick, outside their signal), "
        "as ProtoDUNE-SP's noise filter does; for events simulated with `--coherent-noise` "
        "(it costs the induction planes a few percent of their charge)",
    )
    keep_frames: bool = Field(
        False,
        description="store each event's deconvolved frames (regions of interest, the layout "
        "of the event file's frames/) in the reco output, beside the hits and scores",
    )
