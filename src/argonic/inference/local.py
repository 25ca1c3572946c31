"""Local (in-process) ModelInterface implementations: ONNX Runtime and PyTorch.

Both run each caller batch in execution chunks of ``execution_batch_size`` patches: the
fastest size for the hardware (CPU: ~256, the 44x44x48 feature map of larger batches
spills the cache), independent of the caller's batch size.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np

from argonic.inference.base import N_SCORES, InterfaceError, ModelInterface
from argonic.repository import INPUT_NAME, OUTPUT_NAMES, onnx_path, verify_checksum
from argonic.server.cpu import check_int8_model
from argonic.server.errors import HostUnsupported
from argonic.settings import EXECUTION_BATCH_SIZE, GRAPH_OPTIMIZATION


class _ChunkedInterface(ModelInterface):
    """A local interface that executes batches in chunks of ``execution_batch_size``."""

    def __init__(
        self, batch_size: int = 256, execution_batch_size: int = EXECUTION_BATCH_SIZE
    ) -> None:
        super().__init__(batch_size)
        if not isinstance(execution_batch_size, (int, np.integer)) or execution_batch_size < 1:
            raise InterfaceError(
                f"execution_batch_size must be a whole number >= 1, got {execution_batch_size!r}"
            )
        self.execution_batch_size = int(execution_batch_size)

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), N_SCORES), np.float32)
        for start in range(0, len(batch), self.execution_batch_size):
            chunk = batch[start : start + self.execution_batch_size]
            out[start : start + len(chunk)] = self._execute(chunk)
        return out

    @abc.abstractmethod
    def _execute(self, chunk: np.ndarray) -> np.ndarray:
        """Scores [n, 4] of one execution chunk."""


def _model_file(model: str | os.PathLike[str] | None) -> Path:
    path = Path(model) if model is not None else onnx_path()
    if not path.is_file():
        raise InterfaceError(f"model file {path} not found")
    return path


class OnnxRuntimeInterface(_ChunkedInterface):
    """ONNX Runtime on the CPU.

    model: an exported ``model.onnx`` (default: the shipped repository's, checked against
    its ``.sha256`` file when ``check_sha256``). threads: intra-op threads (None or 0: ONNX
    Runtime's default, one per core). graph_optimization: "basic", "extended", "all" or
    "all-no-nchwc" (all but the NCHWc layout transformer).
    """

    _LEVELS = {
        "basic": "ORT_ENABLE_BASIC",
        "extended": "ORT_ENABLE_EXTENDED",
        "all": "ORT_ENABLE_ALL",
        "all-no-nchwc": "ORT_ENABLE_ALL",
    }

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        execution_batch_size: int = EXECUTION_BATCH_SIZE,
        threads: int | None = None,
        graph_optimization: str = GRAPH_OPTIMIZATION,
        check_sha256: bool = True,
    ) -> None:
        import onnxruntime as ort

        super().__init__(batch_size, execution_batch_size)
        path = _model_file(model)
        if check_sha256 and path.with_name(path.name + ".sha256").exists():
            self.sha256 = verify_checksum(path)
        try:  # int8 weights this CPU's kernel would saturate on are refused, as by the server
            check_int8_model(path.parent.parent.name, path)
        except HostUnsupported as exc:
            raise InterfaceError(str(exc)) from exc
        if graph_optimization not in self._LEVELS:
            raise InterfaceError(
                f"unknown graph_optimization {graph_optimization!r}: "
                f"choose from {', '.join(self._LEVELS)}"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, self._LEVELS[graph_optimization]
        )
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = int(threads)
        disabled = ["NchwcTransformer"] if graph_optimization == "all-no-nchwc" else None
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
            )
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise InterfaceError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.model_path = path

    def _execute(self, chunk: np.ndarray) -> np.ndarray:
        em_trk_none, michel = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk})
        return np.concatenate([em_trk_none, michel], axis=1)

    def close(self) -> None:
        self._session = None
        super().close()


class TorchInterface(_ChunkedInterface):
    """PyTorch eager (CPU or CUDA).

    model: weights from an exported ``model.onnx`` or a training checkpoint (default: the
    shipped repository's model). threads: torch intra-op threads (process-wide; None or 0:
    leave as is). device: "cpu", "cuda", "cuda:1", ...
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        execution_batch_size: int = EXECUTION_BATCH_SIZE,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        try:
            import torch
        except ImportError:
            raise InterfaceError(
                "the torch backend needs PyTorch: pip install 'argonic[train]'"
            ) from None

        from argonic.model.export import load_network
        from argonic.model.network import InferenceGraph

        super().__init__(batch_size, execution_batch_size)
        if threads:
            torch.set_num_threads(int(threads))
        try:
            self._device = torch.device(device)
            self._graph = InferenceGraph(load_network(_model_file(model))).eval().to(self._device)
        except (RuntimeError, ValueError) as exc:
            raise InterfaceError(f"cannot run the network on device {device!r}: {exc}") from exc
        self._torch = torch

    def _execute(self, chunk: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            em_trk_none, michel = self._graph(torch.from_numpy(chunk).to(self._device))
            return torch.cat([em_trk_none, michel], dim=1).cpu().numpy()

    def close(self) -> None:
        self._graph = None
        super().close()
