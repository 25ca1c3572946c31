"""Backends: one loaded model instance that runs a batch of numpy arrays.

A backend is chosen by the config's platform (or backend) string, as in Triton
(:mod:`argonic.server.backends.registry`): ``onnxruntime_onnx`` (``onnxruntime``),
``pytorch_libtorch`` (``torchscript``), ``openvino`` (``openvino``) and the plane model
(``plane``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """One model instance. ``run`` is called from one worker thread at a time."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: input name -> array, returns output name -> array (same batch size)."""
        ...

    def close(self) -> None:
        """Release the instance's resources."""
        ...


def cuda_device_count(platform: str) -> int:
    """CUDA devices usable by a platform (0 without CUDA); imports torch only when needed."""
    if platform.startswith("onnxruntime"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return 0
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count()
