"""ModelInterface: one contract, local and remote implementations, chosen by configuration.

``make_interface`` takes the ``[inference]`` table of the run configuration
(:class:`argonic.settings.InferenceSettings`, or a mapping of the same keys, validated into
one): ``interface = "local"`` runs the network in-process (ONNX Runtime or PyTorch),
``"remote"`` on a KServe v2 / Triton server. ``INTERFACES`` maps each name to its builder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from argonic.inference.base import (
    InterfaceError,
    InvalidPatchesError,
    ModelInterface,
    validate_patches,
)
from argonic.repository import MODEL_NAME
from argonic.settings import InferenceSettings, validation_message

__all__ = [
    "INTERFACES",
    "InterfaceError",
    "InvalidPatchesError",
    "ModelInterface",
    "inference_settings",
    "make_interface",
    "validate_patches",
]


def inference_settings(config: InferenceSettings | Mapping[str, Any]) -> InferenceSettings:
    """``config`` as validated InferenceSettings (InterfaceError naming a bad key)."""
    if isinstance(config, InferenceSettings):
        return config
    try:
        return InferenceSettings.model_validate(dict(config))
    except ValidationError as exc:
        raise InterfaceError(f"[inference] {validation_message(exc)}") from None


def _make_local(settings: InferenceSettings) -> ModelInterface:
    """In-process inference with the ``[inference.local]`` backend."""
    from argonic.inference.local import OnnxRuntimeInterface, RepositoryInterface, TorchInterface

    local = settings.local
    common: dict[str, Any] = {
        "model": local.model or None,
        "batch_size": settings.batch_size,
        "execution_batch_size": local.execution_batch_size,
        "threads": local.threads or None,
    }
    if local.backend == "repository":
        return RepositoryInterface(
            local.model or MODEL_NAME,
            local.repository or None,
            settings.batch_size,
            local.execution_batch_size,
        )
    if local.backend == "torch":
        return TorchInterface(**common, device=local.device)
    return OnnxRuntimeInterface(
        **common, graph_optimization=local.graph_optimization, check_sha256=local.check_sha256
    )


def _make_remote(settings: InferenceSettings) -> ModelInterface:
    """A KServe v2 / Triton gRPC client with the ``[inference.remote]`` settings."""
    from argonic.inference.remote import RemoteInterface

    return RemoteInterface(settings)


INTERFACES: dict[str, Callable[[InferenceSettings], ModelInterface]] = {
    "local": _make_local,
    "remote": _make_remote,
}


def make_interface(config: InferenceSettings | Mapping[str, Any]) -> ModelInterface:
    """Build the ModelInterface that ``config.interface`` names (default "local")."""
    settings = inference_settings(config)
    return INTERFACES[settings.interface](settings)
