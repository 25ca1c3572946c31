"""``[study]``: the settings of `argonic study` (its flags map onto these keys)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from argonic.settings.base import _Table, host_port, split_list

#: farm sizes (clients) and server counts of the sizing report
DEFAULT_FARMS = (400, 2000)
DEFAULT_SERVERS = (1, 2, 4, 8, 16, 32)

_Counts = Annotated[list[Annotated[int, Field(ge=1)]], NoDecode]


class StudySettings(_Table):
    """``[study]``: `argonic study`, N simultaneous clients against a server."""

    output: str = Field("study", description="output folder", json_schema_extra={"aliases": ["-o"]})
    clients: _Counts = Field(
        default_factory=lambda: [1, 2, 4, 8],
        min_length=1,
        description="simultaneous client counts (N), e.g. `[1, 2, 4, 8]` or `1,2,4,8`",
    )
    events: int = Field(4, ge=1, description="events per client (K)")
    pool: int | None = Field(
        None,
        ge=1,
        description="events to simulate; unset: `events` (every client runs each event "
        "once, in its own order, so every N sees the same work)",
    )
    batch_size: int = Field(1693, ge=1, description="patches per ModelInfer request")
    server: str | None = Field(
        None,
        description='`"host:port"` of the server to study; unset: start a local argonic serve',
    )
    metrics_url: str | None = Field(
        None,
        description="the server's /metrics URL; unset: `http://HOST:8002/metrics`, "
        "or the local server's",
    )
    servers: int = Field(
        1,
        ge=1,
        description="servers behind `server` (clients per server = N / servers in the fit)",
        json_schema_extra={"flag": "--server-count", "deprecated": ["--servers"]},
    )
    events_file: str | None = Field(None, description="event file; unset: simulate `pool` events")
    detector: Literal["protodune-sp", "mini"] = Field("mini", description="detector to simulate")
    seed: int = Field(1, ge=0, description="simulation seed")
    client_cpu: Literal["emulated", "real"] = Field(
        "emulated",
        description="`emulated`: the clients' non-ML CPU work is a sleep of its measured "
        "duration, inference requests are real; `real`: the clients run the whole chain "
        "(needs a core per client)",
    )
    cpu_scale: float = Field(
        1.0, ge=0, description="emulated: multiply the measured non-ML CPU durations"
    )
    max_patches: int | None = Field(
        None, ge=1, description="emulated: send at most this many patches per event"
    )
    rtt_ms: float = Field(0.0, ge=0, description="emulated network round trip (TCP proxy), ms")
    link_gbps: float | None = Field(
        None, gt=0, description="emulated link rate per direction, Gbit/s"
    )
    shared_link: bool = Field(False, description="all clients share one emulated link")
    model_repository: str | None = Field(
        None, description="the local server's model repository; unset: the shipped one"
    )
    model_name: str = Field("emtrkmichelid", min_length=1, description="the served model")
    dynamic_batching: bool = Field(
        True, description="local server: `false` serves a copy without `dynamic_batching`"
    )
    scrape_interval_s: float = Field(
        0.5,
        gt=0,
        description="seconds between /metrics scrapes",
        json_schema_extra={"flag": "--scrape-interval"},
    )
    local_baseline: bool = Field(
        True, description="measure local (in-process ONNX Runtime) inference per event"
    )
    farms: _Counts = Field(
        default_factory=lambda: list(DEFAULT_FARMS),
        description="farm sizes (clients) for the sizing report",
        json_schema_extra={"flag": "--farm"},
    )
    farm_servers: _Counts = Field(
        default_factory=lambda: list(DEFAULT_SERVERS),
        description="server counts for the sizing report",
    )
    plots: bool = Field(True, description="draw the PNG figures")
    ready_timeout_s: float = Field(
        300.0, gt=0, description="seconds for the server and the clients to get ready"
    )
    phase_timeout_s: float = Field(1800.0, gt=0, description="seconds one N may take")
    show_progress: bool = Field(True, description="progress bars on stderr")

    @field_validator("clients", "farms", "farm_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("server")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return None if value is None else host_port(value)

    @model_validator(mode="after")
    def _consistent(self) -> StudySettings:
        if self.client_cpu == "real" and (self.cpu_scale != 1.0 or self.max_patches):
            raise ValueError("cpu_scale and max_patches apply to emulated clients only")
        if self.server is not None and (not self.dynamic_batching or self.model_repository):
            raise ValueError(
                "dynamic_batching and model_repository choose the local server's model: "
                "configure the remote server itself"
            )
        return self

    @property
    def label(self) -> str:
        """The one line every output of the study carries: what was emulated."""
        parts = ["emulated client CPU" if self.client_cpu == "emulated" else "real client CPU"]
        if self.client_cpu == "emulated" and self.cpu_scale != 1.0:
            parts.append(f"x{self.cpu_scale:g}")
        if self.max_patches:
            parts.append(f"<= {self.max_patches} patches/event")
        parts.append(f"batch {self.batch_size}")
        if self.rtt_ms or self.link_gbps:
            parts.append(
                f"RTT {self.rtt_ms:g} ms" + (f", {self.link_gbps:g} Gbps" if self.link_gbps else "")
            )
        if not self.dynamic_batching:
            parts.append("no dynamic batching")
        return ", ".join(parts)
