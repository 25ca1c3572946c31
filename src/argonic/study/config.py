"""The options of `argonic study` (``StudyConfig``), their checks and the one-line label
every output carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from argonic import ArgonicError
from argonic.study.sizing import DEFAULT_FARMS, DEFAULT_SERVERS

CPU_MODES = ("emulated", "real")


class StudyError(ArgonicError):
    """The study could not run (a client failed, the server is unreachable, bad options)."""


@dataclass
class StudyConfig:
    """Options of `argonic study` (see ``argonic study --help``)."""

    output: str = "study"
    clients: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    events: int = 4  # events per client
    pool: int | None = (
        None  # events simulated (default: events, so every client runs every event once)
    )
    batch_size: int = 1693
    server: str | None = None  # "host:port"; None: start a local argonic serve
    metrics_url: str | None = None  # default http://<server host>:8002/metrics
    servers: int = 1  # servers behind ``server`` (clients per server = N / servers in the fit)
    events_file: str | None = None  # default: simulate ``events`` events of ``detector``
    detector: str = "mini"
    seed: int = 1
    client_cpu: str = "emulated"
    cpu_scale: float = 1.0  # emulated: multiply the measured non-ML CPU durations
    max_patches: int | None = None  # emulated: send at most this many patches per event
    rtt_ms: float = 0.0
    link_gbps: float | None = None
    shared_link: bool = False
    model_repository: str | None = None  # local server's repository (default: the shipped one)
    model_name: str = "emtrkmichelid"
    dynamic_batching: bool = True  # local server: False serves a copy without dynamic_batching
    scrape_interval_s: float = 0.5
    local_baseline: bool = True  # measure local (in-process ONNX Runtime) inference per event
    farms: list[int] = field(default_factory=lambda: list(DEFAULT_FARMS))
    farm_servers: list[int] = field(default_factory=lambda: list(DEFAULT_SERVERS))
    plots: bool = True
    ready_timeout_s: float = 300.0
    phase_timeout_s: float = 1800.0
    show_progress: bool = True

    def validate(self) -> None:
        def bad(key: str, why: str) -> StudyError:
            return StudyError(f"{key} = {getattr(self, key)!r}: {why}")

        if not self.clients or any(int(n) < 1 for n in self.clients):
            raise bad("clients", "give client counts >= 1")
        if self.events < 1:
            raise bad("events", "expected >= 1")
        if self.pool is not None and self.pool < 1:
            raise bad("pool", "expected >= 1")
        if self.batch_size < 1:
            raise bad("batch_size", "expected >= 1")
        if self.client_cpu not in CPU_MODES:
            raise bad("client_cpu", f"choose from {', '.join(CPU_MODES)}")
        if self.cpu_scale < 0:
            raise bad("cpu_scale", "expected >= 0")
        if self.client_cpu == "real" and (self.cpu_scale != 1.0 or self.max_patches):
            raise StudyError("cpu_scale and max_patches apply to emulated clients only")
        if self.max_patches is not None and self.max_patches < 1:
            raise bad("max_patches", "expected >= 1")
        if self.rtt_ms < 0 or (self.link_gbps is not None and self.link_gbps <= 0):
            raise StudyError("rtt_ms must be >= 0 and link_gbps > 0")
        if self.server is not None:
            host, _, port = self.server.rpartition(":")
            if not host or not port.isdigit():
                raise bad("server", 'expected "host:port"')
            if not self.dynamic_batching or self.model_repository:
                raise StudyError(
                    "dynamic_batching and model_repository choose the local server's model: "
                    "configure the remote server itself"
                )
        if self.servers < 1:
            raise bad("servers", "expected >= 1")

    @property
    def label(self) -> str:
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
