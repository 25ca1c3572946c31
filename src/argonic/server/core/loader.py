"""Loading models: the repository's files (argonic.repository.reader) built into backends.

The digest of each loaded model file is served in ModelConfig's ``parameters`` under the
key ``sha256`` (the client compares it with the one it expects).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository import ModelRepositoryError
from argonic.repository.model_config import CONFIG_FILE, InstanceSpec, instance_specs, platform_of
from argonic.repository.reader import RepositoryReader
from argonic.server.backends.base import Backend, cuda_device_count
from argonic.server.backends.registry import create_backend
from argonic.server.errors import repository_errors

_PLANE = ("python", "argonic_plane")  # platforms of plane models: they run a network


@dataclass
class LoadedFiles:
    """One version's backends, built off the event loop, ready to be wrapped in a batcher."""

    version: int
    sha256: str
    backends: list[Backend]
    instances: list[InstanceSpec]
    model_file: Path


class ModelRepository(RepositoryReader):
    """The server's view of the repository: the reader's errors as Triton's statuses
    (unknown model NOT_FOUND, anything else INVALID_ARGUMENT), and ``load``."""

    def __init__(self, root: str | Path) -> None:
        with repository_errors():
            super().__init__(root)

    def model_dir(self, name: str) -> Path:
        with repository_errors():
            return super().model_dir(name)

    def load(self, name: str) -> tuple[mc.ModelConfig, list[LoadedFiles]]:
        """Read the config and build every instance of every version its policy selects (blocking)."""
        with repository_errors():
            return self._load(name)

    def _load(self, name: str) -> tuple[mc.ModelConfig, list[LoadedFiles]]:
        config = self.config(name)
        for unsupported in ("sequence_batching", "ensemble_scheduling"):
            if config.HasField(unsupported):
                raise ModelRepositoryError(
                    f"model '{name}': {unsupported} is not supported by argonic serve"
                )
        if not config.input or not config.output:
            raise ModelRepositoryError(
                f"model '{name}': {CONFIG_FILE} must list its inputs and outputs"
            )
        chain = self.network_chain(name)
        # the platform that runs the network decides whether CUDA is usable
        runner = next(
            (c for c in (config, *map(self.config, chain)) if platform_of(c) not in _PLANE),
            self.config(self.files_model(name)),
        )
        specs = instance_specs(config, cuda_device_count(platform_of(runner)))
        loaded = []
        for version in self.selected_versions(name):
            model_file = self.model_file(name, version)
            digest = self.sha256(name, version)
            backends = [create_backend(config, model_file, spec) for spec in specs]
            loaded.append(LoadedFiles(version, digest, backends, specs, model_file))
        return config, loaded
