"""The ONNX Runtime backend (``onnxruntime_onnx``): CPU, or CUDA when the CUDA provider
is present; int8 twins checked against the CPU's kernels (:mod:`argonic.server.backends.cpu`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository.model_config import (
    InstanceSpec,
    bool_parameter,
    cpu_threads,
    int_parameter,
    parameter,
)
from argonic.server.backends.cpu import check_int8_model, check_precision
from argonic.server.errors import InvalidArgument

log = logging.getLogger(__name__)


_ORT_TYPES = {
    "tensor(float)": mc.TYPE_FP32,
    "tensor(double)": mc.TYPE_FP64,
    "tensor(float16)": mc.TYPE_FP16,
    "tensor(int64)": mc.TYPE_INT64,
    "tensor(int32)": mc.TYPE_INT32,
    "tensor(int16)": mc.TYPE_INT16,
    "tensor(int8)": mc.TYPE_INT8,
    "tensor(uint8)": mc.TYPE_UINT8,
    "tensor(bool)": mc.TYPE_BOOL,
}


def graph_optimization_level(config: mc.ModelConfig) -> object:
    """ONNX Runtime's level from Triton's ``optimization { graph { level } }``: -1 basic,
    1 extended (no NCHWc layout pass: for the CNN ~1.25x faster on CPUs at 256 rows, the
    layout pass adds a reorder of the 44x44x48 feature map), otherwise all."""
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    return {-1: levels.ORT_ENABLE_BASIC, 1: levels.ORT_ENABLE_EXTENDED}.get(
        config.optimization.graph.level, levels.ORT_ENABLE_ALL
    )


class OnnxRuntimeBackend:
    """ONNX Runtime session; threads from ``intra_op_thread_count`` / ``inter_op_thread_count``."""

    def __init__(self, config: mc.ModelConfig, model_file: Path, instance: InstanceSpec) -> None:
        import onnxruntime as ort

        precision = parameter(config, "precision", "fp32").lower()
        if instance.device == "cpu" and precision != "fp32":
            note = check_precision(
                config.name, precision, bool_parameter(config, "allow_emulated", False)
            )
            log.info("model '%s': %s", config.name, note)
        if instance.device == "cpu":
            _check_int8_kernel(config, model_file)
        options = ort.SessionOptions()
        options.graph_optimization_level = graph_optimization_level(config)
        options.intra_op_num_threads = cpu_threads(config, instance)
        options.inter_op_num_threads = int_parameter(config, "inter_op_thread_count", 0)
        spinning = parameter(config, "allow_spinning", "")
        if spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        providers: list = ["CPUExecutionProvider"]
        if instance.device == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": instance.index}))
        self.session = ort.InferenceSession(str(model_file), options, providers=providers)
        self.output_names = [o.name for o in config.output]
        _check_onnx_io(config, self.session)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session on one batch."""
        return dict(
            zip(self.output_names, self.session.run(self.output_names, inputs), strict=True)
        )

    def close(self) -> None:
        """Drop the session."""
        del self.session


def _check_int8_kernel(config: mc.ModelConfig, model_file: Path) -> None:
    """Refuse int8 weights this CPU's kernel would saturate on (argonic.server.backends.cpu); log the
    kernel path and record it in the served config (``parameters int8_kernel``)."""
    note = check_int8_model(config.name, model_file)
    if note is not None:
        log.info("model '%s': %s", config.name, note)
        config.parameters["int8_kernel"].string_value = note


def _check_onnx_io(config: mc.ModelConfig, session: object) -> None:
    """Refuse a config whose inputs/outputs the ONNX file does not have (clear error at load)."""
    have_in = {i.name: i.type for i in session.get_inputs()}  # type: ignore[attr-defined]
    have_out = {o.name for o in session.get_outputs()}  # type: ignore[attr-defined]
    for tensor in config.input:
        if tensor.name not in have_in:
            raise InvalidArgument(
                f"model '{config.name}': input '{tensor.name}' is not in the "
                f"ONNX model (it has {sorted(have_in)})"
            )
        if _ORT_TYPES.get(have_in[tensor.name], tensor.data_type) != tensor.data_type:
            raise InvalidArgument(
                f"model '{config.name}': input '{tensor.name}' is "
                f"{have_in[tensor.name]} in the ONNX model but "
                f"{mc.DataType.Name(tensor.data_type)} in config.pbtxt"
            )
    for tensor in config.output:
        if tensor.name not in have_out:
            raise InvalidArgument(
                f"model '{config.name}': output '{tensor.name}' is not in the "
                f"ONNX model (it has {sorted(have_out)})"
            )
