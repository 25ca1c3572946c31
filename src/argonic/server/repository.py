"""The model repository on disk, in Triton's layout.

``<root>/<name>/config.pbtxt`` and ``<root>/<name>/<version>/<model file>`` (model.onnx or
model.pt by default). An optional ``<model file>.sha256`` next to the model (hex digest,
optionally followed by the file name, as ``sha256sum`` writes) is checked at load: a model
whose bytes do not match is refused. The digest is served in ModelConfig's ``parameters``
under the key ``sha256``.

A model whose config has ``parameters { key: "network" value { string_value: "<model>" } }``
(the plane model, ``backend: "python"``; a bf16 twin read from the fp32 model.onnx) has no
files of its own: its versions, model file and checksum are those of the named model of the
same repository, followed down the chain.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from argonic.server.backends import Backend, cuda_device_count
from argonic.server.config import (
    CONFIG_FILE,
    InstanceSpec,
    instance_specs,
    load_config,
    model_filename,
    parameter,
    platform_of,
    select_versions,
)
from argonic.server.errors import InvalidArgument, NotFound
from argonic.server.registry import create_backend

_PLANE = ("python", "argonic_plane")  # platforms of plane models: they run a network


@dataclass
class LoadedFiles:
    """One version's backends, built off the event loop, ready to be wrapped in a batcher."""

    version: int
    sha256: str
    backends: list[Backend]
    instances: list[InstanceSpec]
    model_file: Path


class ModelRepository:
    """A Triton-layout folder of models."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidArgument(f"model repository {self.root} is not a directory")

    def names(self) -> list[str]:
        """Model names: the sub-directories of the repository (sorted)."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def model_dir(self, name: str) -> Path:
        """The directory of one model; NotFound if the repository has none."""
        path = self.root / name
        if "/" in name or name.startswith(".") or not path.is_dir():
            raise NotFound(
                f"failed to load '{name}', no version is available: "
                f"no model directory '{name}' in {self.root}"
            )
        return path

    def config(self, name: str) -> mc.ModelConfig:
        """The parsed config.pbtxt of one model."""
        return load_config(self.model_dir(name))

    def versions(self, name: str) -> list[int]:
        """Version numbers present on disk for one model."""
        return sorted(
            int(p.name) for p in self.model_dir(name).iterdir() if p.is_dir() and p.name.isdigit()
        )

    def fingerprint(self, name: str) -> tuple:
        """(path, size, mtime) of every file of a model, and of its network's for the plane
        model: what poll mode compares to see a model change."""
        dirs = [self.root / name]
        with contextlib.suppress(Exception):  # a broken config is a change like any other
            dirs += [self.root / n for n in self.network_chain(name)]
        files = []
        for d in dirs:
            for path in sorted(d.rglob("*")):
                with contextlib.suppress(OSError):
                    if path.is_file():
                        st = path.stat()
                        files.append((str(path.relative_to(self.root)), st.st_size, st.st_mtime_ns))
        return tuple(files)

    def network_chain(self, name: str) -> list[str]:
        """The models whose files ``name`` uses, in order (``parameters network``, followed:
        the bf16 plane twin -> the bf16 network -> the fp32 network's model.onnx)."""
        chain: list[str] = []
        config = load_config(self.model_dir(name))
        while network := parameter(config, "network", ""):
            if network == name or network in chain:
                raise InvalidArgument(
                    f"model '{name}': parameter 'network' forms a cycle ({[name, *chain, network]})"
                )
            chain.append(network)
            config = load_config(self.model_dir(network))
        return chain

    def load(self, name: str) -> tuple[mc.ModelConfig, list[LoadedFiles]]:
        """Read the config and build every instance of every version its policy selects (blocking)."""
        model_dir = self.model_dir(name)
        config = load_config(model_dir)
        for unsupported in ("sequence_batching", "ensemble_scheduling"):
            if config.HasField(unsupported):
                raise InvalidArgument(
                    f"model '{name}': {unsupported} is not supported by argonic serve"
                )
        if not config.input or not config.output:
            raise InvalidArgument(f"model '{name}': {CONFIG_FILE} must list its inputs and outputs")
        files_dir, files_config = model_dir, config
        chain = self.network_chain(name)
        if chain:  # plane model or twin: the last network's files, versions and checksum
            files_dir = self.model_dir(chain[-1])
            files_config = load_config(files_dir)
        versions = select_versions(config, self.versions(files_dir.name))
        if not versions:
            raise InvalidArgument(f"model '{name}' has no version directories in {files_dir}")
        # the platform that runs the network decides whether CUDA is usable
        runner = next(
            (c for c in (config, *map(self.config, chain)) if platform_of(c) not in _PLANE),
            files_config,
        )
        specs = instance_specs(config, cuda_device_count(platform_of(runner)))
        loaded = []
        for version in versions:
            model_file = files_dir / str(version) / model_filename(files_config)
            digest = checked_sha256(model_file)
            backends = [create_backend(config, model_file, spec) for spec in specs]
            loaded.append(LoadedFiles(version, digest, backends, specs, model_file))
        return config, loaded


def checked_sha256(model_file: Path) -> str:
    """sha256 of a model file, verified against ``<file>.sha256`` when that file exists."""
    if not model_file.is_file():
        raise InvalidArgument(f"model file {model_file} does not exist")
    digest = _sha256(model_file)
    expected_file = model_file.with_name(model_file.name + ".sha256")
    if expected_file.is_file():
        words = expected_file.read_text().split()
        expected = words[0].lower() if words else ""
        if expected != digest:
            raise InvalidArgument(
                f"{model_file} has sha256 {digest} but {expected_file.name} "
                f"says {expected or '(empty)'}: refusing to serve the wrong model"
            )
    return digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
