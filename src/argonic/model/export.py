"""Export the network into the model repository (Triton's layout) and load it back: the
torch half of the repository code (the torch-free half, layout and checksums, is
:mod:`argonic.repository`).

The ONNX graph is the same function as :class:`EmTrackMichelNet`, with one exact
rewrite for speed: the Dense 128 weight rows are permuted from Keras's NHWC flatten order
to NCHW order, so the graph flattens the convolution output without a transpose (see
:class:`argonic.model.network.InferenceGraph`). :func:`load_onnx_weights` undoes the permutation, so
the PyTorch network keeps Keras-compatible weights.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from argonic.model.network import EmTrackMichelNet, InferenceGraph, nchw_to_keras_rows
from argonic.repository import (
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAMES,
    PATCH_SIZE,
    ModelRepositoryError,
    network_config,
    onnx_path,
    write_config,
    write_model_file,
)

ONNX_OPSET = 17
FLATTEN_KEY = "argonic.dense1_input_order"  # ONNX metadata: "nchw" (see module docstring)


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


def export_repository(
    network: EmTrackMichelNet, repository: str | os.PathLike[str], version: int = 1
) -> dict[str, str]:
    """Write ``<version>/model.onnx`` and its checksum into ``repository``, and a
    config.pbtxt where the model has none. An existing config is kept: it holds the
    operator's serving settings (batching, queue policy, graph level), which a retrained
    network of the same signature does not change."""
    model_dir = Path(repository) / MODEL_NAME
    model_file = model_dir / str(version) / "model.onnx"
    digest = write_model_file(model_file, onnx_bytes(network))
    config = model_dir / "config.pbtxt"
    if not config.is_file():
        config = write_config(model_dir, network_config())
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
    return write_model_file(Path(model_file), buf.getvalue())


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
