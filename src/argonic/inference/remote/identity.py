"""Model identity: the model the client expects, and the checks a server must pass first.

Before a server is used, its ModelMetadata and ModelConfig (name, version, input/output
names, datatypes, dims) are compared with the expected model (the repository's
config.pbtxt) and, when the server's ModelConfig carries ``parameters["sha256"]`` (argonic
serve does; NVIDIA Triton does not, and then only a warning is logged), its checksum with
the expected one. A mismatch raises ModelMismatchError: no hit is ever classified by
another network. The plane model is checked the same way (its tensors and the checksum of
the network it runs).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from argonic import transport as tensor_transport
from argonic.inference.base import PATCH_SHAPE
from argonic.inference.remote.channel import ServedModel, Server
from argonic.inference.remote.errors import ModelMismatchError, NotReady, describe
from argonic.inference.remote.options import CallOptions
from argonic.patches import PLANE_DATATYPES
from argonic.repository import ModelRepositoryError
from argonic.repository.model_config import CONFIG_FILE
from argonic.repository.reader import RepositoryReader

log = logging.getLogger(__name__)


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
    def expected(
        cls,
        repository: Path | None,
        model_name: str,
        model_version: str = "",
        sha256: str | None = None,
    ) -> ModelSignature:
        """From the repository's config.pbtxt and the model file's .sha256 (read by
        argonic.repository.reader) when present; ``sha256`` (if not None) replaces the
        file's checksum ("": no checksum check)."""
        if repository and (repository / model_name / CONFIG_FILE).is_file():
            reader = RepositoryReader(repository)
            signature = cls.from_config(reader.config(model_name))
            if sha256 is None:
                try:
                    sha256 = reader.expected_sha256(model_name, model_version or None)
                except ModelRepositoryError:  # no such version or file: nothing to compare
                    sha256 = ""
        else:
            signature = cls.default(model_name)
        return dataclasses.replace(signature, sha256=(sha256 or "").strip().lower())

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
        problems += self._sha256_problems(config, "sha256")
        if problems:
            raise ModelMismatchError(
                f"server {address} serves a different {self.name} model: " + "; ".join(problems)
            )
        if self.sha256 and not served_sha256(config):
            log.warning(
                "server %s does not publish the sha256 of model '%s': checked names, "
                "shapes and datatypes only",
                address,
                self.name,
            )

    def check_plane(
        self,
        address: str,
        plane_model: str,
        metadata: service_pb2.ModelMetadataResponse,
        config: mc.ModelConfig,
    ) -> None:
        """Raise ModelMismatchError if the plane model's tensors or network checksum differ
        (it takes argonic.patches' plane tensors and returns this network's outputs)."""
        inputs = {t.name: t.datatype for t in metadata.inputs}
        outputs = {t.name for t in metadata.outputs}
        problems = []
        if inputs != PLANE_DATATYPES:
            problems.append(f"inputs {inputs} (expected {PLANE_DATATYPES})")
        if not {s.name for s in self.outputs} <= outputs:
            problems.append(f"outputs {sorted(outputs)}")
        problems += self._sha256_problems(config, "network sha256")
        if problems:
            raise ModelMismatchError(
                f"server {address} serves a different plane model '{plane_model}': "
                + "; ".join(problems)
            )

    def _sha256_problems(self, config: mc.ModelConfig, what: str) -> list[str]:
        """The checksum problem, if the server publishes a checksum other than the expected."""
        served = served_sha256(config)
        if self.sha256 and served and served != self.sha256:
            return [f"{what} {served} (expected {self.sha256})"]
        return []


def served_sha256(config: mc.ModelConfig) -> str:
    """The checksum a ModelConfig publishes in ``parameters["sha256"]`` ("" if none)."""
    if "sha256" not in config.parameters:
        return ""
    return config.parameters["sha256"].string_value.strip().lower()


def _describe(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> str:
    return ", ".join(f"{name} {dt} {list(dims)}" for name, (dt, dims) in sorted(tensors.items()))


def verify(
    server: Server,
    signature: ModelSignature,
    model_name: str,
    version: str,
    options: CallOptions,
    check_index: bool = True,
) -> ServedModel:
    """Readiness and identity checks of ``server`` (NotReady, ModelMismatchError,
    grpc.RpcError); what it serves when they pass. ``check_index``: RepositoryIndex first,
    which a saturated server refuses with UNAVAILABLE (the caller then skips it)."""
    kwargs = options.check()
    if check_index:
        server.rpc("RepositoryIndex")(service_pb2.RepositoryIndexRequest(ready=True), **kwargs)
    if not server.rpc("ServerReady")(service_pb2.ServerReadyRequest(), **kwargs).ready:
        raise NotReady("server not ready")
    model = {"name": model_name, "version": version}
    if not server.rpc("ModelReady")(service_pb2.ModelReadyRequest(**model), **kwargs).ready:
        raise NotReady(f"model '{model_name}' not ready")
    metadata = server.rpc("ModelMetadata")(service_pb2.ModelMetadataRequest(**model), **kwargs)
    config = server.rpc("ModelConfig")(service_pb2.ModelConfigRequest(**model), **kwargs).config
    signature.check(server.label, metadata, config, version)
    advertised = (
        config.parameters[tensor_transport.TRANSPORT_PARAMETER].string_value
        if tensor_transport.TRANSPORT_PARAMETER in config.parameters
        else ""
    )
    return ServedModel(
        config.max_batch_size, frozenset(w.strip() for w in advertised.split(",") if w.strip())
    )


def serves_plane_model(
    server: Server,
    signature: ModelSignature,
    plane_model: str,
    version: str,
    options: CallOptions,
) -> bool:
    """Whether ``server`` serves ``plane_model`` for this network (a warning when it cannot
    say); ModelMismatchError when it serves one whose tensors or network checksum differ."""
    model = {"name": plane_model, "version": version}
    kwargs = options.check()
    try:
        ready = server.rpc("ModelReady")(service_pb2.ModelReadyRequest(**model), **kwargs).ready
        if ready:
            metadata = server.rpc("ModelMetadata")(
                service_pb2.ModelMetadataRequest(**model), **kwargs
            )
            config = server.rpc("ModelConfig")(service_pb2.ModelConfigRequest(**model), **kwargs)
    except grpc.RpcError as error:
        log.warning(
            "server %s: plane model '%s' unavailable (%s)",
            server.label,
            plane_model,
            describe(error),
        )
        return False
    if not ready:
        return False
    signature.check_plane(server.label, plane_model, metadata, config.config)
    return True
