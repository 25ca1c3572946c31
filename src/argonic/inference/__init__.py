"""ModelInterface: one contract, local and remote implementations, chosen by configuration.

``make_interface`` takes the ``[inference]`` table of the run configuration::

    {"interface": "local", "batch_size": 256,
     "local": {"backend": "onnxruntime", "threads": 2, "execution_batch_size": 256}}

(keys of the "local" table may also be given at the top level). ``INTERFACES`` maps each
interface name to a builder taking that whole table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from argonic.inference.base import (
    InterfaceError,
    InvalidPatchesError,
    ModelInterface,
    validate_patches,
)

__all__ = [
    "INTERFACES",
    "InterfaceError",
    "InvalidPatchesError",
    "ModelInterface",
    "make_interface",
    "validate_patches",
]


def _make_local(config: Mapping[str, Any]) -> ModelInterface:
    """In-process inference: ``backend`` "onnxruntime" (default) or "torch"."""
    from argonic.inference.local import OnnxRuntimeInterface, TorchInterface

    options = {k: v for k, v in config.items() if k not in INTERFACES and k != "interface"}
    options.update(config.get("local", {}))
    backend = options.pop("backend", "onnxruntime")
    backends: dict[str, type[ModelInterface]] = {
        "onnxruntime": OnnxRuntimeInterface,
        "torch": TorchInterface,
    }
    if backend not in backends:
        raise InterfaceError(
            f"unknown local backend {backend!r}: choose from {', '.join(backends)}"
        )
    try:
        return backends[backend](**options)
    except TypeError as exc:  # an option the backend does not take
        raise InterfaceError(f"bad option for the local {backend} interface: {exc}") from exc


def _make_remote(config: Mapping[str, Any]) -> ModelInterface:
    """A KServe v2 / Triton gRPC client (keys: argonic.inference.remote's docstring)."""
    from argonic.inference.remote import RemoteInterface

    return RemoteInterface(config)


INTERFACES: dict[str, Callable[[Mapping[str, Any]], ModelInterface]] = {
    "local": _make_local,
    "remote": _make_remote,
}


def make_interface(config: Mapping[str, Any]) -> ModelInterface:
    """Build the ModelInterface named by ``config["interface"]`` (default "local")."""
    name = config.get("interface", "local")
    if name not in INTERFACES:
        raise InterfaceError(
            f"unknown model interface {name!r}: choose from {', '.join(sorted(INTERFACES))}"
        )
    return INTERFACES[name](config)
