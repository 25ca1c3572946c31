"""``[server]``: the settings of `argonic serve`, the one place their defaults live.

The command line keeps Triton's flag names (``--grpc-port``, ``--allow-http``,
``--grpc-use-ssl``, ``--load-model``, ...): each flag is ``--`` and the key with dashes,
unless a key names its flag in ``json_schema_extra``; cluster, Helm and Slurm configure
servers through these keys (a TOML file's ``[server]`` table or ``ARGONIC_SERVER__*``
environment variables), not through argument strings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from argonic.settings.base import _Table, split_list

GRPC_PORT = 8001  # Triton's ports
HTTP_PORT = 8000
METRICS_PORT = 8002
#: > a 4096-patch request (37.7 MB), the shipped maximum
MAX_MESSAGE_BYTES = 64 << 20
#: calls open on one gRPC connection at once (a SONIC client keeps a few)
MAX_CONCURRENT_STREAMS = 256
#: 8 requests of 1693 patches; the server's RSS peaks at about twice this
MAX_INFLIGHT_BYTES = 128 << 20


def _flag(name: str) -> dict[str, Any]:
    return {"flag": name}


class ServerSettings(_Table):
    """``[server]``: `argonic serve` (flags in Triton's spelling map onto these keys)."""

    model_repository: str = Field(
        "",
        description="model repository (Triton layout); empty: the shipped one (the checkout's "
        "`models/`, the installed copy, or `$ARGONIC_MODEL_REPOSITORY`)",
    )
    host: str = Field("0.0.0.0", description="address the gRPC and metrics endpoints listen on")
    http_address: str = Field(
        "", description="address the HTTP/REST endpoint listens on (Triton's); empty: `host`"
    )
    grpc_port: int = Field(GRPC_PORT, ge=0, le=65535, description="gRPC port (0: any free)")
    http_port: int = Field(
        HTTP_PORT, ge=0, le=65535, description="HTTP/REST port (KServe v2; 0: any free)"
    )
    metrics_port: int = Field(
        METRICS_PORT, ge=0, le=65535, description="Prometheus /metrics port (0: any free)"
    )
    allow_grpc: bool = Field(True, description="serve the gRPC endpoint (Triton's)")
    allow_http: bool = Field(True, description="serve the HTTP/REST endpoint (Triton's)")
    allow_metrics: bool = Field(True, description="serve /metrics (Triton's)")
    load_model: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="load only these models at start-up (Triton's `--load-model`, "
        "repeatable); empty: all",
    )
    model_control_mode: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="`none`: RepositoryModelLoad/Unload refused (Triton's default); "
        "`explicit`: allowed; `poll`: follow the repository on disk",
    )
    repository_poll_secs: float = Field(
        15.0, gt=0, description="poll mode: seconds between scans of the model repository"
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="seconds SIGTERM waits for in-flight requests",
        json_schema_extra=_flag("--drain-timeout"),
    )
    grpc_use_ssl: bool = Field(
        False, description="serve gRPC over TLS (needs `grpc_server_cert` and `grpc_server_key`)"
    )
    grpc_use_ssl_mutual: bool = Field(
        False, description="mutual TLS: clients need a certificate `grpc_root_cert` signed"
    )
    grpc_server_cert: str = Field("", description="PEM file of the server certificate")
    grpc_server_key: str = Field("", description="PEM file of the server key")
    grpc_root_cert: str = Field("", description="PEM file of the CA for client certificates")
    grpc_restricted_protocol: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="`CATEGORIES:KEY=VALUE`: calls of these protocols (health, metadata, "
        "inference, shared-memory, model-config, model-repository, statistics, trace, "
        "logging; comma-separated) need the header KEY: VALUE, else UNAVAILABLE (repeatable)",
    )
    http_restricted_api: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="the same for HTTP/REST (else 403); a server whose gRPC is secured "
        "refuses to start with an HTTP endpoint open where gRPC is not (docs/operations.md)",
    )
    grpc_max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=1,
        description="largest gRPC message received or sent; above it RESOURCE_EXHAUSTED",
    )
    saturation_threshold_ms: float = Field(
        0.0,
        ge=0,
        description="refuse RepositoryIndex with UNAVAILABLE (SONIC clients then skip this "
        "server) while the mean queue time per execution over `saturation_window_s` "
        "(SuperSONIC's load metric) is above this many ms; 0: never",
    )
    saturation_window_s: float = Field(
        30.0, gt=0, description="window of that metric, seconds (SuperSONIC's rate[30s])"
    )
    saturation_refuse_inference: bool = Field(
        False,
        description="while saturated, refuse new inference requests too (UNAVAILABLE), not "
        "only RepositoryIndex",
    )
    grpc_max_concurrent_streams: int = Field(
        MAX_CONCURRENT_STREAMS,
        ge=1,
        description="HTTP/2 streams (calls) one gRPC connection may have open at once; the "
        "excess is refused (REFUSED_STREAM: clients see UNAVAILABLE and retry)",
    )
    trace_config: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Triton's tracing settings, OpenTelemetry mode: `level=TIMESTAMPS` (on; "
        "default OFF), `rate=N` (one request in N; default 1000), `count=N` (-1: no limit), "
        "`opentelemetry,url=HOST:PORT/v1/traces` (OTLP/HTTP), `opentelemetry,resource=K=V`, "
        "`opentelemetry,bsp_*=N`; a request carrying a sampled W3C traceparent is always "
        "traced (repeatable; needs argonic[tracing])",
    )
    max_inflight_bytes: int = Field(
        MAX_INFLIGHT_BYTES,
        ge=0,
        description="bytes of request tensors admitted at once, server-wide (plane images "
        "counted as decoded); excess requests get UNAVAILABLE before their tensors are "
        "decoded (0: no cap)",
    )

    @field_validator(
        "load_model",
        "grpc_restricted_protocol",
        "http_restricted_api",
        "trace_config",
        mode="before",
    )
    @classmethod
    def _split(cls, value: Any) -> Any:
        """An environment variable gives one string: ``a;b`` (restrictions hold commas)."""
        return split_list(value, ";")

    @model_validator(mode="after")
    def _consistent(self) -> ServerSettings:
        if not (self.allow_http or self.allow_grpc):
            raise ValueError("allow_http and allow_grpc are both false: nothing to serve")
        if (self.grpc_use_ssl or self.grpc_use_ssl_mutual) and not (
            self.grpc_server_cert and self.grpc_server_key
        ):
            raise ValueError(
                "grpc_use_ssl needs grpc_server_cert and grpc_server_key "
                "(--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key)"
            )
        from argonic.tracing import TraceConfigError, parse_trace_config

        try:  # a bad setting fails here, before anything starts
            parse_trace_config(self.trace_config)
        except TraceConfigError as exc:
            raise ValueError(str(exc)) from None
        return self
