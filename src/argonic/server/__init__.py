"""The KServe v2 / Triton gRPC inference server (``argonic serve``).

Layers, one module each: ``servicer`` (protocol messages only) -> ``dataplane`` (models,
inference, repository control, draining) -> ``model`` (request validation) -> ``batcher``
(Triton's dynamic batching, plus splitting into execution chunks) -> ``backends``
(ONNX Runtime, TorchScript). ``repository``/``config`` read Triton's model repository;
``stats``/``metrics`` keep Triton's statistics and Prometheus metrics.
"""

from argonic.server.app import InferenceServer, ServerHandle, running_server, serve
from argonic.server.registry import register_backend

__all__ = ["InferenceServer", "ServerHandle", "register_backend", "running_server", "serve"]
