"""The KServe v2 / Triton inference server (``argonic serve``).

Sub-packages by role, each importing only those below it (import-linter contracts):

- ``app``: the process (settings in, endpoints up, SIGTERM drains);
- ``http/``: the HTTP/REST endpoint (``endpoint``, ``rest``: KServe v2 JSON and binary);
- ``grpc/``: the gRPC endpoint (``servicer``, ``codec``, ``wire``, ``health``, ``security``);
- ``core/``: the data plane (``dataplane``), request validation (``model_version``), the
  dynamic batcher, memory limits, statistics and Prometheus metrics, shared memory, and
  model loading (``loader``, over argonic.repository.reader);
- ``backends/``: ONNX Runtime, TorchScript, OpenVINO, the plane model, and the CPU checks;
- ``errors``: the statuses every layer answers with.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["InferenceServer", "ServerHandle", "register_backend", "running_server", "serve"]
_HOMES = {"register_backend": "argonic.server.backends.registry"}


def __getattr__(name: str) -> Any:
    """Import the server lazily: ``argonic.server.grpc.health.check`` (``argonic health``, the
    container's HEALTHCHECK) must not pay for ONNX Runtime and aiohttp."""
    if name not in __all__:
        raise AttributeError(f"module 'argonic.server' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES.get(name, "argonic.server.app")), name)
