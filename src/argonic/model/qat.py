"""Quantization-aware training of the network and its OpenVINO int8 export.

The trained fp32 network is rewritten as its inference graph (no dropout, Dense 128 rows in
NCHW order), NNCF inserts fake quantisers before the convolution (the input patch itself),
the Dense 128 layer and the activations between them (8 bits; activations asymmetric, the
"mixed" preset), calibrated on training patches; the three small layers after Dense 128 stay
fp32 (0.04% of the work). The same training loop as ``argonic train`` then fine-tunes through
the quantisers (straight-through gradients), so the network learns to tolerate an 8-bit input
patch, which post-training quantisation could not (BENCHMARKS.md, "Reduced precision").

Why NNCF: its fake quantisers are the ones OpenVINO executes, and the trained model converts
straight into an OpenVINO IR whose int8 convolution and Dense layers run on oneDNN's VNNI /
AMX kernels, the fastest int8 engine measured for this network. PyTorch's own QAT exports
QDQ ONNX, which ONNX Runtime runs with an fp32 convolution for a one-channel input; Brevitas
targets FPGAs and ONNX QDQ likewise. NNCF and OpenVINO are the ``openvino`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from argonic import ArgonicError
from argonic.model.network import EmTrackMichelNet, InferenceGraph
from argonic.repository import (
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAMES,
    PATCH_SIZE,
    read_config,
    sha256_hex,
    write_bytes,
    write_config,
)

OPENVINO_MODEL = f"{MODEL_NAME}_openvino"
FP32_LAYERS = ("dense2", "em_trk_none", "michel")  # kept in fp32 (NNCF's ignored scope)
CALIBRATION_BATCH = 64


def _openvino_modules() -> tuple[Any, Any]:
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise ArgonicError(
            "quantization-aware training needs NNCF and OpenVINO: pip install 'argonic[openvino]'"
        ) from None
    nncf.set_log_level(logging.WARNING)  # not a line per quantiser
    return nncf, ov


class QatGraph(nn.Module):
    """The inference graph without its output activations: ``forward`` (and ``logits``,
    what the training loop calls) give ([N, 3] softmax logits, [N, 1] sigmoid logit)."""

    def __init__(self, network: EmTrackMichelNet) -> None:
        super().__init__()
        graph = InferenceGraph(network)
        self.conv, self.dense1, self.dense2 = graph.conv, graph.dense1, graph.dense2
        self.em_trk_none, self.michel = graph.em_trk_none, graph.michel

    def forward(self, main_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = main_input.reshape(-1, 1, PATCH_SIZE, PATCH_SIZE)  # NHWC with C = 1 is NCHW
        x = torch.relu(self.conv(x)).flatten(1)
        x = torch.relu(self.dense2(torch.relu(self.dense1(x))))
        return self.em_trk_none(x), self.michel(x)

    def logits(self, main_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(main_input)  # through the quantisers NNCF hooks onto forward


def quantization_aware(network: EmTrackMichelNet, calibration: np.ndarray) -> nn.Module:
    """The network with NNCF's 8-bit fake quantisers, ranges calibrated on ``calibration``
    patches [N, 48, 48, 1] (deterministic: the same patches give the same model, so a
    checkpoint's state loads into a rebuilt one)."""
    nncf, _ = _openvino_modules()
    x = np.ascontiguousarray(calibration, np.float32)
    batches = [
        torch.from_numpy(x[i : i + CALIBRATION_BATCH]) for i in range(0, len(x), CALIBRATION_BATCH)
    ]
    if not batches:
        raise ArgonicError("quantization-aware training needs calibration patches")
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: not in --json output
        return nncf.quantize(
            QatGraph(network).eval(),
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(
                patterns=[f".*{layer}.*" for layer in FP32_LAYERS], validate=False
            ),
        )


def openvino_model(qat: nn.Module) -> Any:
    """The OpenVINO model of a quantization-aware network: input ``main_input`` [-1, 48, 48,
    1], outputs the softmax and sigmoid heads under the network's output names."""
    _, ov = _openvino_modules()
    import openvino.opset13 as ops

    qat.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the quantisers' constants
        converted = ov.convert_model(qat, example_input=torch.zeros(2, PATCH_SIZE, PATCH_SIZE, 1))
    parameter = converted.get_parameters()[0]
    parameter.set_partial_shape(ov.PartialShape([-1, PATCH_SIZE, PATCH_SIZE, 1]))
    parameter.output(0).get_tensor().set_names({INPUT_NAME})
    logits, michel = (r.input_value(0) for r in converted.get_results())
    heads = [ops.softmax(logits, 1), ops.sigmoid(michel)]
    for head, name in zip(heads, OUTPUT_NAMES, strict=True):
        head.output(0).get_tensor().set_names({name})
    model = ov.Model([h.output(0) for h in heads], [parameter], OPENVINO_MODEL)
    model.validate_nodes_and_infer_types()
    return model


def export_openvino(
    qat: nn.Module,
    repository: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    version: int = 1,
    name: str = OPENVINO_MODEL,
) -> dict[str, Any]:
    """Write ``<name>/<version>/model.xml`` + ``model.bin`` (fp32 weights where not int8, no
    fp16 compression), their checksums, and configs for it and its plane twin (from the
    repository's ``emtrkmichelid`` and ``emtrkmichelid_plane`` configs) into ``repository``.
    ``source``: the fp32 model file it was trained from (its sha256 is recorded)."""
    _, ov = _openvino_modules()
    root = Path(repository)
    version_dir = root / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=version_dir) as tmp:
        ov.save_model(openvino_model(qat), str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        digests = {}
        for file in ("model.xml", "model.bin"):
            shutil.move(Path(tmp) / file, version_dir / file)  # rename: same file system
            digests[file] = sha256_hex(version_dir / file)
            write_bytes(version_dir / f"{file}.sha256", f"{digests[file]}  {file}\n".encode())
    config = read_config(root / MODEL_NAME)
    config.name = name
    config.platform, config.backend = "", "openvino"
    config.ClearField("optimization")
    config.parameters["precision"].string_value = "int8"
    config.parameters["execution_batch_size"].string_value = "256"
    if source is not None:
        config.parameters["quantised_from"].string_value = sha256_hex(source)
    write_config(root / name, config)
    written: dict[str, Any] = {"model": name, "sha256": digests["model.xml"], "weights": digests}
    plane = root / f"{MODEL_NAME}_plane" / "config.pbtxt"
    if plane.is_file():
        twin = read_config(plane.parent)
        twin.name = f"{name}_plane"
        twin.platform, twin.backend = "", "argonic_plane"
        twin.parameters["network"].string_value = name
        write_config(root / twin.name, twin)
        written["plane"] = twin.name
    return written
