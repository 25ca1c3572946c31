"""The run configuration: one typed model, the single place where every setting and its default live.

A run is configured the way LArSoft configures a job with FHiCL: one TOML file chooses the
ModelInterface and all its parameters. Values are taken, each overriding the one before:

1. the defaults below;
2. the TOML file (``--config FILE``);
3. ``ARGONIC_*`` environment variables, nested with ``__``
   (``ARGONIC_INFERENCE__REMOTE__SERVERS=gpu1:8001,gpu2:8001``);
4. ``--set section.key=value`` (TOML values) and then the commands' dedicated flags.

Every table refuses unknown keys; a wrong key or type is a :class:`SettingsError` of one line
naming the key and what was expected. ``docs/configuration.md`` is generated from this module
(``python -m argonic.settings > docs/configuration.md``; a test fails when it is stale).
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as _SourceError

from argonic import ArgonicError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: Patches per network execution inside an interface or a backend (measured best on CPUs).
EXECUTION_BATCH_SIZE = 256
#: ONNX Runtime graph optimisation of local inference: "extended" beat "all" (whose NCHWc
#: layout pass adds a costly reorder of the 44x44x48 feature map) by ~1.25x at batch 256.
GRAPH_OPTIMIZATION = "extended"


class SettingsError(ArgonicError):
    """A configuration that cannot be used: unknown key, wrong type, bad value, unreadable file."""


class _Table(BaseModel):
    """A TOML table: unknown keys refused, values checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("servers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f'{address!r} is not "host:port"')
        return value

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
        "argonic.reco.context; run on the client after any interface); `false`: the "
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


_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("argonic_settings_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, below the environment and the command line."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class Settings(BaseSettings):
    """The whole run configuration: its ``[inference]`` and ``[reco]`` tables."""

    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix="ARGONIC_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        validate_assignment=True,
    )

    inference: InferenceSettings = Field(
        default_factory=InferenceSettings, description="the ModelInterface"
    )
    reco: RecoSettings = Field(
        default_factory=RecoSettings, description="the chain after EmTrackMichelId"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)


def _parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, leaf = dotted.split(".")
    node = tree
    for t in tables:
        node = node.setdefault(t, {})
        if not isinstance(node, dict):
            raise SettingsError(f"cannot set {dotted!r}: {t!r} is not a table")
    node[leaf] = value


def _describe(error: dict[str, Any]) -> str:
    """One line for one pydantic error: the dotted key, what was expected, what was given."""
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, (str, int, float, bool)):
        return f"{key}: {message} (got {given!r})" if key else message
    return f"{key}: {message}" if key else message


def validation_message(exc: ValidationError) -> str:
    """The first problem of a ValidationError, as one line (plus a count of the others)."""
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _describe(errors[0]) + more


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Settings:
    """Defaults < TOML file < ``ARGONIC_*`` environment < ``key=value`` overrides < ``flags``.

    ``flags`` maps dotted keys to values (the commands' dedicated options; None = not given).
    """
    file_data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                file_data = tomllib.load(f)
        except FileNotFoundError:
            raise SettingsError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    given: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"override {item!r} is not of the form section.key=value")
        _set_dotted(given, key.strip(), _parse_value(value.strip()))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(given, key, value)
    token = _FILE_DATA.set(file_data)
    try:
        return Settings(**given)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise SettingsError(where + validation_message(exc)) from None
    except _SourceError as exc:  # an ARGONIC_* variable that is not valid JSON where needed
        raise SettingsError(f"environment: {exc}") from None
    finally:
        _FILE_DATA.reset(token)


# --- documentation ----------------------------------------------------------------------------

_DOC_HEAD = """\
# Run-time configuration

<!-- generated by `python -m argonic.settings > docs/configuration.md`; do not edit -->

One TOML file chooses the ModelInterface of `argonic reco`, `argonic evaluate` and
`argonic run` and all its parameters, the role FHiCL plays in LArSoft. Each source overrides
the one before it: the defaults below; the file (`--config FILE`); `ARGONIC_*` environment
variables, nested with `__` (`ARGONIC_INFERENCE__REMOTE__SERVERS=gpu1:8001,gpu2:8001`);
`--set section.key=value` (repeatable, TOML values); the commands' dedicated flags
(`--interface`, `--server`, `--batch-size`, `--request-mode`, ...). An unknown key or a wrong type
is refused with one line naming the key, exit code 2.

With no file, `argonic reco` runs the shipped model in-process with ONNX Runtime.
Examples: [configs/local.toml](../configs/local.toml), [configs/remote.toml](../configs/remote.toml).
"""

_DOC_TAIL = """
The client refuses a server whose model differs from the expected one (names, dtypes,
dims, and the sha256 where the server publishes it, as `argonic serve` does). Every hit is
classified exactly once and in order: a request that failed on one server is sent, whole,
to the next.
"""


def _type_name(info: FieldInfo) -> str:
    if get_origin(info.annotation) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(info.annotation))
    text = str(info.annotation).replace("typing.", "")
    for old, new in (("<class '", ""), ("'>", ""), ("NoneType", "None")):
        text = text.replace(old, new)
    return text


def _default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value}`"


def _tables(model: type[BaseModel], prefix: str) -> list[tuple[str, type[BaseModel]]]:
    out = [(prefix, model)] if prefix else []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _tables(sub, f"{prefix}.{name}" if prefix else name)
    return out


def settings_markdown() -> str:
    """docs/configuration.md: every table, key, type, default and description."""
    parts = [_DOC_HEAD]
    for name, model in _tables(Settings, ""):
        doc = (model.__doc__ or "").splitlines()[0].split(": ", 1)[-1]
        parts.append(f"\n## `[{name}]`\n\n{doc[0].upper()}{doc[1:]}\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                continue
            parts.append(
                f"| `{key}` | {_type_name(info)} | {_default_text(info)} | {info.description} |"
            )
    parts.append(_DOC_TAIL)
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
