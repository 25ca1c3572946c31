"""Local (in-process) ModelInterface implementations: ONNX Runtime, PyTorch, and any model
of a model repository run by argonic serve's own backend for its platform.

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
from argonic.repository import INPUT_NAME, MODEL_NAME, OUTPUT_NAMES, onnx_path, verify_checksum
from argonic.server.backends.cpu import check_int8_model
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


class RepositoryInterface(_ChunkedInterface):
    """A model of a Triton-layout repository, by name, run in-process by the backend that
    ``argonic serve`` would load for it (ONNX Runtime, OpenVINO, the TorchScript bf16 twin):
    local scores are the served model's, checksums checked as the server checks them.

    A plane model (``parameters network``) runs its network on the patches. repository:
    the folder (default: the shipped one). Threads are the model config's, as served.
    """

    def __init__(
        self,
        model: str = MODEL_NAME,
        repository: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        execution_batch_size: int = EXECUTION_BATCH_SIZE,
    ) -> None:
        from argonic.repository import shipped_repository
        from argonic.server.core.loader import ModelRepository
        from argonic.server.errors import ServerError

        super().__init__(batch_size, execution_batch_size)
        try:
            models = ModelRepository(repository or shipped_repository())
            network = next(
                (m for m in [model, *models.network_chain(model)] if not _is_plane(models, m)),
                model,
            )
            _, loaded = models.load(network)
        except (ServerError, HostUnsupported) as exc:
            raise InterfaceError(f"cannot run repository model {model!r}: {exc}") from exc
        latest = loaded[-1]
        self._backend = latest.backends[0]
        for other in (b for files in loaded for b in files.backends if b is not self._backend):
            other.close()
        self.model_name, self.sha256, self.model_path = network, latest.sha256, latest.model_file

    def _execute(self, chunk: np.ndarray) -> np.ndarray:
        out = self._backend.run({INPUT_NAME: np.ascontiguousarray(chunk, np.float32)})
        return np.concatenate([out[OUTPUT_NAMES[0]], out[OUTPUT_NAMES[1]]], axis=1)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        super().close()


def _is_plane(models: object, name: str) -> bool:
    """Whether a repository model takes planes (its inputs are the plane-mode tensors)."""
    from argonic.patches import PLANE_INPUTS

    return any(i.name in PLANE_INPUTS for i in models.config(name).input)  # type: ignore[attr-defined]
