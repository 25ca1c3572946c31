"""The KServe v2 / Triton gRPC inference server (``argonic serve``).

Layers, one module each: ``servicer`` (protocol messages only) -> ``dataplane`` (models,
inference, repository control, draining) -> ``model`` (request validation) -> ``batcher``
(Triton's dynamic batching, plus splitting into execution chunks) -> ``backends``
(ONNX Runtime, TorchScript). ``repository``/``config`` read Triton's model repository;
``stats``/``metrics`` keep Triton's statistics and Prometheus metrics.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["InferenceServer", "ServerHandle", "register_backend", "running_server", "serve"]
_HOMES = {"register_backend": "argonic.server.registry"}


def __getattr__(name: str) -> Any:
    """Import the server lazily: ``argonic.server.health.check`` (``argonic health``, the
    container's HEALTHCHECK) must not pay for ONNX Runtime and aiohttp."""
    if name not in __all__:
        raise AttributeError(f"module 'argonic.server' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES.get(name, "argonic.server.app")), name)
