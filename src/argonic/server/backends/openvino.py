"""The OpenVINO backend: an OpenVINO IR (``model.xml`` + ``model.bin``) on the CPU.

As Triton's OpenVINO backend reads it: ``backend: "openvino"``, the version directory holds
``model.xml`` and the weights ``model.bin`` beside it, and ``parameters`` with OpenVINO's
property names (``NUM_STREAMS``, ``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT``) are
passed to the compiled model. argonic adds ``INFERENCE_PRECISION_HINT``, ``f32`` by default:
OpenVINO would otherwise run the layers that are not int8 in bf16 on CPUs with AMX or
AVX-512 BF16, and the physics of a served model must not depend on the CPU it lands on.

The weights file is part of the model: where ``model.bin.sha256`` exists it is checked like
the model file's own checksum. OpenVINO is an optional extra (``pip install
'argonic[openvino]'``); without it such a model is not loaded (a warning with that hint,
as for a bf16 model on a CPU without bf16), and the server serves the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository import ModelRepositoryError, verify_checksum
from argonic.repository.model_config import InstanceSpec, cpu_threads, parameter
from argonic.server.errors import HostUnsupported, InvalidArgument

WEIGHTS_SUFFIX = ".bin"
# config parameters passed to OpenVINO as compile properties (Triton's openvino backend)
PROPERTIES = (
    "NUM_STREAMS",
    "INFERENCE_NUM_THREADS",
    "PERFORMANCE_HINT",
    "INFERENCE_PRECISION_HINT",
)


def compile_openvino(model_file: Path, properties: dict[str, str]) -> Any:
    """The OpenVINO model ``model_file`` (its ``.bin`` checked against ``.bin.sha256`` where
    present) compiled for the CPU with ``properties``; InvalidArgument where it cannot be."""
    try:
        import openvino as ov
    except ImportError:  # an extra not installed: the model is skipped, as bf16 without bf16
        raise HostUnsupported(
            f"{model_file}: the OpenVINO backend needs the openvino package "
            "(pip install 'argonic[openvino]')"
        ) from None
    weights = model_file.with_suffix(WEIGHTS_SUFFIX)
    if not weights.is_file():
        raise InvalidArgument(f"{model_file}: its weights {weights.name} are missing")
    if weights.with_name(weights.name + ".sha256").is_file():
        try:
            verify_checksum(weights)
        except ModelRepositoryError as exc:
            raise InvalidArgument(f"{exc}: refusing to serve the wrong weights") from None
    config = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1", **properties}
    try:
        return ov.Core().compile_model(str(model_file), "CPU", config)
    except RuntimeError as exc:  # OpenVINO reports every failure as RuntimeError
        raise InvalidArgument(f"OpenVINO cannot compile {model_file}: {exc}") from None


class OpenVinoBackend:
    """One compiled OpenVINO model and its infer request; CPU instances only."""

    def __init__(self, config: mc.ModelConfig, model_file: Path, instance: InstanceSpec) -> None:
        if instance.device != "cpu":
            raise InvalidArgument(
                f"model '{config.name}': the OpenVINO backend runs on KIND_CPU instances only"
            )
        properties = {k: parameter(config, k) for k in PROPERTIES if parameter(config, k)}
        threads = cpu_threads(config, instance)
        if threads and "INFERENCE_NUM_THREADS" not in properties:
            properties["INFERENCE_NUM_THREADS"] = str(threads)
        self.compiled = compile_openvino(model_file, properties)
        self.request = self.compiled.create_infer_request()
        have_in = {n for i in self.compiled.inputs for n in i.get_names()}
        have_out = {n for o in self.compiled.outputs for n in o.get_names()}
        for kind, wanted, have in (
            ("input", config.input, have_in),
            ("output", config.output, have_out),
        ):
            for tensor in wanted:
                if tensor.name not in have:
                    raise InvalidArgument(
                        f"model '{config.name}': {kind} '{tensor.name}' is not in the "
                        f"OpenVINO model (it has {sorted(have)})"
                    )
        self.output_names = [o.name for o in config.output]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch (outputs copied: the request's buffers are reused by the next run)."""
        result = self.request.infer(inputs)
        return {name: np.array(result[name]) for name in self.output_names}

    def close(self) -> None:
        """Drop the compiled model."""
        del self.request, self.compiled
