"""The backend registry: which class loads a model, by its config's platform/backend string.

Built-in backends are the table ``BUILTIN`` (Triton's names for ONNX Runtime and
TorchScript, OpenVINO, plus argonic's plane model); :func:`register_backend` adds others (tests and
plug-ins), :func:`create_backend` loads one instance of a model with the backend its config
names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository.model_config import InstanceSpec, parameter, platform_of
from argonic.server.backends.base import Backend
from argonic.server.backends.onnxruntime import OnnxRuntimeBackend
from argonic.server.backends.openvino import OpenVinoBackend
from argonic.server.backends.plane import PlaneBackend
from argonic.server.backends.torchscript import TorchScriptBackend
from argonic.server.errors import InvalidArgument, repository_errors

BackendFactory = Callable[[mc.ModelConfig, Path, InstanceSpec], Backend]


def _plane(config: mc.ModelConfig, model_file: Path, instance: InstanceSpec) -> Backend:
    return PlaneBackend(config, model_file, instance, create_backend)


def _python(config: mc.ModelConfig, model_file: Path, instance: InstanceSpec) -> Backend:
    """Triton's Python backend: argonic serve runs only the plane model's model.py (a
    ``parameters["network"]`` model), with its built-in plane backend."""
    if not parameter(config, "network", ""):
        raise InvalidArgument(
            f"model '{config.name}': argonic serve runs Python-backend models only as the "
            "plane model (parameters network = <the network model>)"
        )
    return _plane(config, model_file, instance)


BUILTIN: dict[str, BackendFactory] = {
    "onnxruntime_onnx": OnnxRuntimeBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "pytorch_libtorch": TorchScriptBackend,
    "pytorch": TorchScriptBackend,
    "openvino": OpenVinoBackend,
    "argonic_plane": _plane,
    "python": _python,
}
_FACTORIES: dict[str, BackendFactory] = dict(BUILTIN)


def register_backend(platform: str, factory: BackendFactory) -> None:
    """Make ``factory(config, model_file, instance)`` the backend for a platform/backend string."""
    _FACTORIES[platform] = factory


def create_backend(config: mc.ModelConfig, model_file: Path, instance: InstanceSpec) -> Backend:
    """Load one instance of a model with the backend its config names."""
    platform = platform_of(config)
    if platform not in _FACTORIES:
        raise InvalidArgument(
            f"model '{config.name}': platform/backend '{platform}' is not "
            f"supported (supported: {', '.join(sorted(_FACTORIES))})"
        )
    if not model_file.is_file():
        raise InvalidArgument(f"model '{config.name}': model file {model_file} does not exist")
    with repository_errors():  # a parameter of its config it cannot use
        return _FACTORIES[platform](config, model_file, instance)
