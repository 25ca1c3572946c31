"""The TorchScript backend (Triton platform ``pytorch_libtorch``): CPU or one CUDA device.

config.pbtxt chooses (see src/argonic/server/README.md, "Extra parameters"):

- ``parameters precision``: ``fp32`` (default), ``fp16`` or ``bf16`` compute; floating
  inputs are cast on the device, outputs cast back to the config's type (FP32 on the wire).
  On a CPU instance a precision the CPU has no native kernels for is refused
  (argonic.server.backends.cpu) unless ``parameters allow_emulated: "true"``.
- The model file is TorchScript (``model.pt``) or an ONNX network (``model.onnx``, read
  into torch by argonic.server.backends.onnx_torch): a bf16 twin of an ONNX model names it with
  ``parameters network`` and needs no weights of its own.
- ``optimization { input_pinned_memory / output_pinned_memory { enable } }`` (Triton's
  fields, default on): on a CUDA instance, host<->device copies go through page-locked
  staging buffers with non-blocking transfers.
- ``optimization { cuda { graphs: true } }`` or ``parameters cuda_graphs "true"`` (off by
  default, CUDA instances only): each execution batch size is captured once as a CUDA graph
  (sizes: ``cuda_graph_batch_sizes``, default powers of two up to max_batch_size, plus
  max_batch_size and an integer execution_batch_size); a batch is padded up to the smallest
  captured size that holds it and replayed.
- ``parameters torch_compile``: refused with a reason: torch.compile does not accept
  TorchScript modules (torch >= 2.x raises on them); CUDA graphs are the offered option.

Each CUDA instance has its own CUDA stream, so instances of one GPU (``instance_group
count``) overlap their copies and kernels. torch is imported only when an instance loads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository.model_config import (
    InstanceSpec,
    bool_parameter,
    cpu_threads,
    numpy_dtype,
    parameter,
)
from argonic.server.backends.cpu import check_precision
from argonic.server.backends.onnx_torch import onnx_module
from argonic.server.errors import HostUnsupported, InvalidArgument

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16")
_CAPTURE_LOCK = threading.Lock()  # one CUDA graph capture at a time in the process


def graph_batch_sizes(config: mc.ModelConfig) -> tuple[int, ...]:
    """The batch sizes CUDA graphs are captured for (ascending; see the module doc)."""
    limit = max(config.max_batch_size, 1)
    text = parameter(config, "cuda_graph_batch_sizes", "").strip()
    if text:
        try:
            sizes = {int(s) for s in text.replace(",", " ").split()}
        except ValueError:
            raise InvalidArgument(
                f"model '{config.name}': parameter cuda_graph_batch_sizes must be a list of "
                f"integers, got {text!r}"
            ) from None
        if not sizes or min(sizes) < 1 or max(sizes) > limit:
            raise InvalidArgument(
                f"model '{config.name}': parameter cuda_graph_batch_sizes must lie in "
                f"1..{limit} (max_batch_size), got {text!r}"
            )
        return tuple(sorted(sizes))
    sizes = {1 << k for k in range(limit.bit_length()) if 1 << k <= limit} | {limit}
    execution = parameter(config, "execution_batch_size", "")
    if execution.isdigit() and 1 <= int(execution) <= limit:
        sizes.add(int(execution))
    return tuple(sorted(sizes))


class _CapturedGraph:
    """One CUDA graph of the module at a fixed batch size: static inputs and outputs."""

    def __init__(self, graph: Any, inputs: list[Any], outputs: dict[str, Any]) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class TorchScriptBackend:
    """TorchScript module; inputs passed positionally in config order, outputs in config order.

    Besides :meth:`run` (numpy in, numpy out) it offers the device-side steps the plane
    model uses to keep patches on the device: :meth:`device_context`, :meth:`to_device`,
    :meth:`forward` and :meth:`to_host`.
    """

    def __init__(self, config: mc.ModelConfig, model_file: Path, instance: InstanceSpec) -> None:
        self.name = config.name
        precision = parameter(config, "precision", "fp32").lower()
        if precision not in PRECISIONS:
            raise InvalidArgument(
                f"model '{config.name}': precision must be one of {PRECISIONS}, got {precision!r}"
            )
        if instance.device == "cpu":
            note = check_precision(
                config.name, precision, bool_parameter(config, "allow_emulated", False)
            )
            log.info("model '%s': %s", config.name, note)
        try:
            import torch
        except ImportError:
            raise HostUnsupported(
                f"model '{config.name}': the PyTorch backend needs torch, which this "
                "installation lacks (pip install 'argonic[train]')"
            ) from None
        if bool_parameter(config, "torch_compile", False):
            raise InvalidArgument(
                f"model '{config.name}': parameter torch_compile is not supported: "
                "torch.compile does not accept TorchScript modules (use cuda_graphs on a GPU)"
            )
        on_cuda = instance.device == "cuda"
        graphs = bool_parameter(config, "cuda_graphs", False) or config.optimization.cuda.graphs
        if graphs and not on_cuda:
            raise InvalidArgument(
                f"model '{config.name}': parameter cuda_graphs (optimization.cuda.graphs) "
                "needs a CUDA instance (instance_group kind KIND_GPU); this instance runs "
                "on the CPU"
            )
        threads = cpu_threads(config, instance)
        if threads:
            torch.set_num_threads(threads)  # process-wide in PyTorch
        self.torch = torch
        self.device = torch.device(instance.device, instance.index if on_cuda else None)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            precision
        ]
        opt = config.optimization
        self.pin_inputs = on_cuda and (
            not opt.HasField("input_pinned_memory") or opt.input_pinned_memory.enable
        )
        self.pin_outputs = on_cuda and (
            not opt.HasField("output_pinned_memory") or opt.output_pinned_memory.enable
        )
        self.stream = torch.cuda.Stream(self.device) if on_cuda else None
        if model_file.suffix == ".onnx":  # a repository's ONNX network, read into torch
            self.module = onnx_module(model_file).to(self.device)
        else:
            with warnings.catch_warnings():  # TorchScript is what Triton's pytorch backend loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(model_file), map_location=self.device).eval()
        if self.dtype != torch.float32:
            self.module = self.module.to(self.dtype)
        self.input_names = [i.name for i in config.input]
        self.outputs = [(o.name, numpy_dtype(o.data_type)) for o in config.output]
        self.graph_sizes = graph_batch_sizes(config) if graphs else ()
        self.graphs: dict[int, _CapturedGraph] = {}
        self._staging: dict[str, Any] = {}  # pinned host buffers by name

    # --- device-side steps --------------------------------------------------------------

    @contextlib.contextmanager
    def device_context(self) -> Iterator[None]:
        """Inference mode, on this instance's CUDA stream when it has one."""
        with self.torch.inference_mode():
            if self.stream is None:
                yield
            else:
                with self.torch.cuda.stream(self.stream):
                    try:
                        yield
                    except BaseException:
                        self.stream.synchronize()  # no copy may still read a staging buffer
                        raise

    def to_device(self, key: str, array: np.ndarray) -> Any:
        """``array`` as a tensor on the device (through the pinned buffer ``key`` on CUDA)."""
        torch = self.torch
        if self.device.type == "cpu":
            return torch.from_numpy(array if array.flags.writeable else array.copy())
        if not self.pin_inputs:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        staged = self._pinned(key, array.dtype, array.shape)
        staged.numpy()[...] = array
        return staged.to(self.device, non_blocking=True)

    def forward(self, args: list[Any]) -> dict[str, Any]:
        """Run the module on device tensors (floating ones cast to the precision): output
        name -> device tensor, floating outputs as float32. With CUDA graphs the tensors
        are the graph's static outputs: valid until the next ``forward``."""
        args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        rows = args[0].shape[0] if args and args[0].dim() else 0
        size = next((s for s in self.graph_sizes if s >= rows), None) if rows else None
        if size is None:
            return self._outputs(self.module(*args))
        captured = self.graphs.get(size) or self._capture(size, args)
        for static, arg in zip(captured.inputs, args, strict=True):
            static[:rows].copy_(arg)  # rows beyond ``rows`` keep old values: rows are independent
        captured.graph.replay()
        return {name: t[:rows] for name, t in captured.outputs.items()}

    def to_host(self, tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        """Device tensors as numpy arrays of the config's output types (waits for the stream)."""
        if self.device.type == "cpu":
            return {name: t.numpy() for name, t in tensors.items()}
        if not self.pin_outputs:
            return {name: t.cpu().numpy() for name, t in tensors.items()}
        staged = {}
        for name, t in tensors.items():
            buffer = self._pinned("out:" + name, t.dtype, tuple(t.shape))
            buffer.copy_(t, non_blocking=True)
            staged[name] = buffer
        self.stream.synchronize()
        return {name: buffer.numpy().copy() for name, buffer in staged.items()}

    # --- the Backend protocol -----------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the module on one batch."""
        with self.device_context():
            args = [self.to_device(name, inputs[name]) for name in self.input_names]
            return self.to_host(self.forward(args))

    def close(self) -> None:
        """Drop the module, its CUDA graphs and staging buffers."""
        self.graphs.clear()
        self._staging.clear()
        del self.module

    # --- helpers ------------------------------------------------------------------------

    def _outputs(self, result: Any) -> dict[str, Any]:
        """The module's result as output name -> tensor (floats as float32, config's order)."""
        torch = self.torch
        if isinstance(result, dict):
            result = [result[name] for name, _ in self.outputs]
        elif isinstance(result, torch.Tensor):
            result = [result]
        if len(result) != len(self.outputs):
            raise InvalidArgument(
                f"model returned {len(result)} outputs, config.pbtxt lists {len(self.outputs)}"
            )
        out = {}
        for (name, dtype), t in zip(self.outputs, result, strict=True):
            wanted = getattr(torch, np.dtype(dtype).name, None)
            out[name] = t.to(wanted) if wanted is not None and t.dtype != wanted else t
        return out

    def _pinned(self, key: str, dtype: Any, shape: tuple[int, ...]) -> Any:
        """A page-locked host tensor of ``shape`` (a view of a buffer kept and grown per key)."""
        torch = self.torch
        if isinstance(dtype, np.dtype):
            dtype = torch.from_numpy(np.empty(0, dtype)).dtype
        count = int(np.prod(shape))
        buffer = self._staging.get(key)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < count:
            buffer = torch.empty(max(count, 1), dtype=dtype, pin_memory=True)
            self._staging[key] = buffer
        return buffer[:count].view(shape)

    def _capture(self, size: int, args: list[Any]) -> _CapturedGraph:
        """Capture the module at batch ``size`` on this instance's stream (after warm-up)."""
        torch = self.torch
        static = [
            torch.zeros((size, *a.shape[1:]), dtype=a.dtype, device=self.device) for a in args
        ]
        for _ in range(3):  # warm-up: cuDNN algorithm choice, TorchScript profiling runs
            self.module(*static)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other instances' threads keep copying and synchronising meanwhile
        with (
            _CAPTURE_LOCK,
            torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"),
        ):
            outputs = self._outputs(self.module(*static))
        captured = _CapturedGraph(graph, static, outputs)
        self.graphs[size] = captured
        return captured
