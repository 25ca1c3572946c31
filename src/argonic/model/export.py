"""Export the network into the model repository (Triton's layout) and load it back.

Layout written by :func:`export_repository`::

    <repository>/emtrkmichelid/config.pbtxt          ModelConfig (text format)
    <repository>/emtrkmichelid/1/model.onnx          dynamic batch axis, opset 17
    <repository>/emtrkmichelid/1/model.onnx.sha256   "<hex>  model.onnx" (sha256sum format)

The ONNX graph is the same function as :class:`EmTrackMichelNet`, with one exact
rewrite for speed: the Dense 128 weight rows are permuted from Keras's NHWC flatten order
to NCHW order, so the graph flattens the convolution output without a transpose (see
:class:`argonic.model.network.InferenceGraph`). :func:`load_onnx_weights` undoes the permutation, so
the PyTorch network keeps Keras-compatible weights.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import torch
from google.protobuf import text_format

from argonic import ArgonicError
from argonic._util import atomic_output
from argonic.model.network import (
    INPUT_NAME,
    OUTPUT_NAMES,
    PATCH_SIZE,
    EmTrackMichelNet,
    InferenceGraph,
    nchw_to_keras_rows,
)

MODEL_NAME = "emtrkmichelid"
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 100
ONNX_OPSET = 17
REPOSITORY_ENV = "ARGONIC_MODEL_REPOSITORY"
FLATTEN_KEY = "argonic.dense1_input_order"  # ONNX metadata: "nchw" (see module docstring)


class ModelRepositoryError(ArgonicError):
    """The model repository or a model file in it is missing or inconsistent."""


def shipped_repository() -> Path:
    """The model repository shipped with argonic.

    ``$ARGONIC_MODEL_REPOSITORY`` if set, else the ``models/`` folder of the source
    checkout this package runs from (editable install).
    """
    env = os.environ.get(REPOSITORY_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise ModelRepositoryError(f"${REPOSITORY_ENV} = {env!r} is not a folder")
        return path
    path = Path(__file__).resolve().parents[3] / "models"
    if not (path / MODEL_NAME).is_dir():
        raise ModelRepositoryError(
            f"no model repository found: set ${REPOSITORY_ENV} to a folder holding "
            f"{MODEL_NAME}/config.pbtxt (looked in {path})"
        )
    return path


def onnx_path(repository: str | os.PathLike[str] | None = None, version: int = 1) -> Path:
    """Path of ``emtrkmichelid/<version>/model.onnx`` in ``repository`` (default: shipped)."""
    root = Path(repository) if repository is not None else shipped_repository()
    return root / MODEL_NAME / str(version) / "model.onnx"


# --- the exported graph ---------------------------------------------------------------------


def onnx_bytes(network: EmTrackMichelNet) -> bytes:
    """The network as a serialised ONNX model with a dynamic batch axis."""
    import onnx

    graph = InferenceGraph(network).eval()
    example = torch.zeros(2, PATCH_SIZE, PATCH_SIZE, 1)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            buf,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    model.producer_name = "argonic"
    onnx.helper.set_model_props(model, {FLATTEN_KEY: "nchw"})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def load_onnx_weights(network: EmTrackMichelNet, path: str | os.PathLike[str]) -> EmTrackMichelNet:
    """Copy the weights of an exported ``model.onnx`` into ``network`` (returned)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises several unrelated types
        raise ModelRepositoryError(f"cannot read ONNX model {path}: {exc}") from exc
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    order = {p.key: p.value for p in model.metadata_props}.get(FLATTEN_KEY, "nhwc")
    state = {}
    for name, param in network.state_dict().items():
        if name not in found or found[name].shape != tuple(param.shape):
            raise ModelRepositoryError(
                f"{path} has no weight {name!r} of shape {tuple(param.shape)}"
            )
        value = torch.from_numpy(found[name].copy())
        state[name] = (
            nchw_to_keras_rows(value) if name == "dense1.weight" and order == "nchw" else value
        )
    network.load_state_dict(state)
    return network


# --- the model repository -------------------------------------------------------------------


def model_config(
    platform: str = "onnxruntime_onnx",
    kind: str = "KIND_CPU",
    instances: int = 1,
    name: str = MODEL_NAME,
):
    """The ModelConfig message (tritonclient's model_config_pb2) of the network."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=MAX_BATCH_SIZE)
    config.input.add(name=INPUT_NAME, data_type=mc.TYPE_FP32, dims=[PATCH_SIZE, PATCH_SIZE, 1])
    config.output.add(name=OUTPUT_NAMES[0], data_type=mc.TYPE_FP32, dims=[3])
    config.output.add(name=OUTPUT_NAMES[1], data_type=mc.TYPE_FP32, dims=[1])
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    config.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.Kind.Value(kind))
    # the server measures the fastest execution size on its own hardware at load
    config.parameters["execution_batch_size"].string_value = "auto"
    return config


def read_config(model_dir: str | os.PathLike[str]):
    """Parse ``<model_dir>/config.pbtxt`` into a ModelConfig."""
    from tritonclient.grpc import model_config_pb2 as mc

    path = Path(model_dir) / "config.pbtxt"
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ModelRepositoryError(f"cannot read model configuration {path}: {exc}") from exc


def sha256_hex(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(model_file: str | os.PathLike[str]) -> str:
    """Check ``model_file`` against its ``.sha256`` file; return the digest."""
    model_file = Path(model_file)
    sums = model_file.with_name(model_file.name + ".sha256")
    try:
        expected = sums.read_text().split()[0]
    except (OSError, IndexError) as exc:
        raise ModelRepositoryError(f"cannot read checksum file {sums}: {exc}") from exc
    actual = sha256_hex(model_file)
    if actual != expected:
        raise ModelRepositoryError(
            f"{model_file} has sha256 {actual}, but {sums.name} says {expected}"
        )
    return actual


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _write_model_file(model_file: Path, data: bytes) -> str:
    """Write a model file and its sha256sum-format checksum file; return the digest."""
    _write_bytes(model_file, data)
    digest = hashlib.sha256(data).hexdigest()
    _write_bytes(
        model_file.with_name(model_file.name + ".sha256"), f"{digest}  {model_file.name}\n".encode()
    )
    return digest


def write_config(model_dir: str | os.PathLike[str], config) -> Path:
    """Write ``config`` as ``<model_dir>/config.pbtxt``."""
    path = Path(model_dir) / "config.pbtxt"
    _write_bytes(path, text_format.MessageToString(config).encode())
    return path


def export_repository(
    network: EmTrackMichelNet, repository: str | os.PathLike[str], version: int = 1
) -> dict[str, str]:
    """Write config.pbtxt, ``<version>/model.onnx`` and its checksum into ``repository``."""
    model_dir = Path(repository) / MODEL_NAME
    model_file = model_dir / str(version) / "model.onnx"
    digest = _write_model_file(model_file, onnx_bytes(network))
    config = write_config(model_dir, model_config())
    return {"config": str(config), "model": str(model_file), "sha256": digest}


def export_torchscript(network: EmTrackMichelNet, model_file: str | os.PathLike[str]) -> str:
    """Write a traced TorchScript ``model.pt`` (Triton platform "pytorch_libtorch").

    The module takes ``main_input`` [N, 48, 48, 1] and returns the two heads in the order
    of ``OUTPUT_NAMES``; a checksum file is written next to it. Returns the digest.
    """
    graph = InferenceGraph(network).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, torch.zeros(2, PATCH_SIZE, PATCH_SIZE, 1))
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return _write_model_file(Path(model_file), buf.getvalue())


def load_network(path: str | os.PathLike[str] | None = None) -> EmTrackMichelNet:
    """The network with weights from a ``model.onnx`` or a training checkpoint (default: the
    shipped model)."""
    from argonic.model.network import build_network

    path = Path(path) if path is not None else onnx_path()
    network = build_network(seed=None)
    if path.suffix == ".onnx":
        load_onnx_weights(network, path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises several unrelated types
            raise ModelRepositoryError(f"cannot read weights {path}: {exc}") from exc
        network.load_state_dict(state.get("network", state))
    return network.eval()
