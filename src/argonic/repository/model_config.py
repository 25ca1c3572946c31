"""Triton model configuration (config.pbtxt) parsed into ``model_config_pb2.ModelConfig``.

The one place that reads config.pbtxt (through :mod:`argonic.repository.reader`). Holds
the pieces of Triton's configuration semantics the server and the client need:
data types, version policy, instance groups and the ``parameters`` map. argonic reads
these extra ``parameters`` keys (all string values, as Triton's ``parameters`` are):

- ``execution_batch_size``: rows per model execution; larger requests and merged batches
  are split into chunks of this size (default 256 on CPU, max_batch_size on GPU), or
  ``"auto"``: measured at load, the fastest of 64, 256, 1024 and 2048 rows on this
  hardware (argonic.server.backends.calibrate).
- ``intra_op_thread_count`` / ``inter_op_thread_count``: ONNX Runtime session threads
  (the same keys as Triton's onnxruntime backend). Default: ONNX Runtime's own (every core)
  for a single CPU instance; with N CPU instances, each gets cores / N intra-op threads
  (Triton leaves every instance all cores, N times oversubscribing them).
- ``precision``: PyTorch backend compute precision, ``fp32`` (default), ``fp16`` or
  ``bf16``; inputs are cast on the way in and outputs cast back to the configured type.
- ``cuda_graphs``, ``cuda_graph_batch_sizes``, ``torch_compile`` (refused): PyTorch
  backend options, see :mod:`argonic.server.backends.torchscript`; ``device_patches``: the plane
  model's patch cutting on the network's device (see :mod:`argonic.server.backends.plane`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository import ModelRepositoryError

CONFIG_FILE = "config.pbtxt"


class ModelConfigError(ModelRepositoryError):
    """A config.pbtxt that cannot be used (the server answers it INVALID_ARGUMENT)."""


# Triton TYPE_* enum <-> protocol datatype string <-> numpy dtype (BYTES/BF16 not supported).
_NUMPY = {
    mc.TYPE_BOOL: np.bool_,
    mc.TYPE_UINT8: np.uint8,
    mc.TYPE_UINT16: np.uint16,
    mc.TYPE_UINT32: np.uint32,
    mc.TYPE_UINT64: np.uint64,
    mc.TYPE_INT8: np.int8,
    mc.TYPE_INT16: np.int16,
    mc.TYPE_INT32: np.int32,
    mc.TYPE_INT64: np.int64,
    mc.TYPE_FP16: np.float16,
    mc.TYPE_FP32: np.float32,
    mc.TYPE_FP64: np.float64,
}

DEFAULT_FILENAMES = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "openvino": "model.xml",
}


def datatype_name(data_type: int) -> str:
    """Protocol datatype string for a TYPE_* enum value: TYPE_FP32 -> "FP32"."""
    return mc.DataType.Name(data_type).removeprefix("TYPE_").replace("STRING", "BYTES")


def numpy_dtype(data_type: int) -> np.dtype:
    """numpy dtype for a TYPE_* enum value; ModelConfigError for BYTES and BF16."""
    try:
        return np.dtype(_NUMPY[data_type])
    except KeyError:
        raise ModelConfigError(
            f"data type {mc.DataType.Name(data_type)} is not supported"
        ) from None


def parse_config(text: str, name: str = "") -> mc.ModelConfig:
    """Parse config.pbtxt text; fill ``name`` if the file leaves it out."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelConfigError(f"bad config.pbtxt for model '{name}': {exc}") from None
    if not config.name:
        config.name = name
    if name and config.name != name:
        raise ModelConfigError(
            f"config.pbtxt names model '{config.name}' but its directory is '{name}'"
        )
    return config


def load_config(model_dir: Path) -> mc.ModelConfig:
    """Read ``<model_dir>/config.pbtxt`` and fill the platform from the model file if left out."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise ModelConfigError(f"model '{model_dir.name}' has no {CONFIG_FILE}")
    config = parse_config(path.read_text(), model_dir.name)
    if not config.platform and not config.backend:
        config.platform = _guess_platform(model_dir, config.default_model_filename)
    return config


def _guess_platform(model_dir: Path, filename: str) -> str:
    for platform, default in (
        ("onnxruntime_onnx", "model.onnx"),
        ("pytorch_libtorch", "model.pt"),
        ("openvino", "model.xml"),
    ):
        wanted = filename or default
        if wanted.endswith(Path(default).suffix) and any(model_dir.glob(f"*/{wanted}")):
            return platform
    raise ModelConfigError(
        f"model '{model_dir.name}': no platform or backend in config.pbtxt "
        "and no model.onnx / model.pt / model.xml to guess it from"
    )


def platform_of(config: mc.ModelConfig) -> str:
    """The backend key: platform if set, else backend (onnxruntime, pytorch, ...)."""
    return config.platform or config.backend


def model_filename(config: mc.ModelConfig) -> str:
    """File name of the model inside a version directory."""
    return config.default_model_filename or DEFAULT_FILENAMES.get(platform_of(config), "model")


def parameter(config: mc.ModelConfig, key: str, default: str = "") -> str:
    """A string value from the config's ``parameters`` map."""
    return config.parameters[key].string_value if key in config.parameters else default


def int_parameter(config: mc.ModelConfig, key: str, default: int) -> int:
    """An integer value from the config's ``parameters`` map, with a clear error if it is not one."""
    text = parameter(config, key, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ModelConfigError(
            f"model '{config.name}': parameter {key} must be an integer, got {text!r}"
        ) from None


def bool_parameter(config: mc.ModelConfig, key: str, default: bool) -> bool:
    """A boolean value ("true"/"false", "1"/"0", "yes"/"no", "on"/"off") from ``parameters``."""
    text = parameter(config, key, "").strip().lower()
    if not text:
        return default
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ModelConfigError(
        f"model '{config.name}': parameter {key} must be true or false, got {text!r}"
    )


def select_versions(config: mc.ModelConfig, available: list[int]) -> list[int]:
    """Versions to load under the config's version_policy (default: the latest one)."""
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    available = sorted(available)
    if kind == "all":
        return available
    if kind == "specific":
        missing = sorted(set(policy.specific.versions) - set(available))
        if missing:
            raise ModelConfigError(
                f"model '{config.name}': version(s) {missing} requested by "
                "version_policy are not in the repository"
            )
        return sorted(set(policy.specific.versions))
    n = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return available[-n:]


@dataclass(frozen=True)
class InstanceSpec:
    """One model instance: device kind ("cpu" or "cuda") and device index."""

    device: str
    index: int = 0
    cpu_instances: int = 1  # CPU instances of the model: they share the cores


def cpu_threads(config: mc.ModelConfig, instance: InstanceSpec) -> int:
    """Intra-op threads of one instance: ``intra_op_thread_count`` where set, else the
    cores (this process's affinity) shared among the model's CPU instances, or 0 (the
    runtime's default: every core) for a single CPU instance or a GPU instance."""
    threads = int_parameter(config, "intra_op_thread_count", 0)
    if threads or instance.cpu_instances <= 1:
        return threads
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(1, cores // instance.cpu_instances)


def instance_specs(config: mc.ModelConfig, cuda_devices: int) -> list[InstanceSpec]:
    """Expand instance_group into one spec per instance (KIND_AUTO picks CUDA when present)."""
    groups = list(config.instance_group) or [
        mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_AUTO)
    ]
    specs: list[InstanceSpec] = []
    for group in groups:
        count = group.count or 1
        kind = group.kind
        if kind == mc.ModelInstanceGroup.KIND_AUTO:
            kind = (
                mc.ModelInstanceGroup.KIND_GPU if cuda_devices else mc.ModelInstanceGroup.KIND_CPU
            )
        if kind == mc.ModelInstanceGroup.KIND_CPU:
            specs += [InstanceSpec("cpu")] * count
        elif kind == mc.ModelInstanceGroup.KIND_GPU:
            if not cuda_devices:
                raise ModelConfigError(
                    f"model '{config.name}': instance_group asks for KIND_GPU "
                    "but no CUDA device is available"
                )
            for gpu in list(group.gpus) or range(cuda_devices):
                if gpu >= cuda_devices:
                    raise ModelConfigError(f"model '{config.name}': GPU {gpu} does not exist")
                specs += [InstanceSpec("cuda", gpu)] * count
        else:
            raise ModelConfigError(
                f"model '{config.name}': instance kind "
                f"{mc.ModelInstanceGroup.Kind.Name(kind)} is not supported"
            )
    n_cpu = sum(s.device == "cpu" for s in specs)
    return [replace(s, cpu_instances=n_cpu) if s.device == "cpu" else s for s in specs]
