"""The one reader of a model repository on disk (Triton's layout).

``<root>/<name>/config.pbtxt`` and ``<root>/<name>/<version>/<model file>`` (model.onnx,
model.pt or model.xml by default), each model file with an optional ``<file>.sha256``
checked by the repository's one rule (:func:`argonic.repository.verify_checksum`).

The server loads models through it, the client's identity check reads the expected
model and its checksum through it, and local inference and the plane model find their
network's file through it.

A model whose config has ``parameters { key: "network" value { string_value: "<model>" } }``
(the plane model; a bf16 twin read from the fp32 model.onnx) has no files of its own: its
versions, model file and checksum are those of the named model of the same repository,
followed down the chain.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository import ModelRepositoryError, expected_sha256, verify_checksum
from argonic.repository.model_config import (
    ModelConfigError,
    load_config,
    model_filename,
    parameter,
    select_versions,
)


class UnknownModel(ModelRepositoryError):
    """No such model (or version) in the repository (the server answers NOT_FOUND)."""


class RepositoryReader:
    """A Triton-layout folder of models, read-only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ModelRepositoryError(f"model repository {self.root} is not a directory")

    def names(self) -> list[str]:
        """Model names: the sub-directories of the repository (sorted)."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def model_dir(self, name: str) -> Path:
        """The directory of one model; UnknownModel if the repository has none."""
        path = self.root / name
        if "/" in name or name.startswith(".") or not path.is_dir():
            raise UnknownModel(
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

    def network_chain(self, name: str) -> list[str]:
        """The models whose files ``name`` uses, in order (``parameters network``, followed:
        the bf16 plane twin -> the bf16 network -> the fp32 network's model.onnx)."""
        chain: list[str] = []
        config = self.config(name)
        while network := parameter(config, "network", ""):
            if network == name or network in chain:
                raise ModelConfigError(
                    f"model '{name}': parameter 'network' forms a cycle ({[name, *chain, network]})"
                )
            chain.append(network)
            config = self.config(network)
        return chain

    def files_model(self, name: str) -> str:
        """The model whose version directories hold ``name``'s files (itself, or the end of
        its network chain)."""
        chain = self.network_chain(name)
        return chain[-1] if chain else name

    def selected_versions(self, name: str) -> list[int]:
        """The versions ``name``'s version_policy selects among its files' versions."""
        versions = select_versions(self.config(name), self.versions(self.files_model(name)))
        if not versions:
            where = self.model_dir(self.files_model(name))
            raise ModelConfigError(f"model '{name}' has no version directories in {where}")
        return versions

    def model_file(self, name: str, version: int | str | None = None) -> Path:
        """The model file of ``name`` (its network's, for a model that names one) in
        ``version`` (default: the latest its policy selects)."""
        files = self.files_model(name)
        number = int(version) if version not in (None, "") else self.selected_versions(name)[-1]
        if number not in self.versions(files):
            raise UnknownModel(f"model '{name}' has no version {number} in {self.root}")
        return self.model_dir(files) / str(number) / model_filename(self.config(files))

    def sha256(self, name: str, version: int | str | None = None) -> str:
        """The model file's digest, checked by the one rule (verify_checksum)."""
        return verify_checksum(self.model_file(name, version))

    def expected_sha256(self, name: str, version: int | str | None = None) -> str:
        """The digest the repository's ``.sha256`` file declares ("" without one), unread
        model bytes: what a client expects the server to publish."""
        return expected_sha256(self.model_file(name, version)) or ""

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
