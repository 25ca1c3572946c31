"""The plane model: PointIdAlg patch building + the network, as one served model.

The server-side equivalent of a Triton ensemble "patch builder -> emtrkmichelid": a model
whose config names ``backend: "python"`` (or ``"argonic_plane"``) and ``parameters["network"]`` (another
model of the same repository) takes one (TPC, plane) image and its hits (the tensors of
:mod:`argonic.patches`), cuts each hit's 48x48 patch with the same code as the
client (:func:`argonic.patches.cut_patches`), runs the network in chunks of
``execution_batch_size`` patches and answers the network's two heads for the N hits.

The repository resolves the network's model file and checksum (see repository.py); each
plane-model instance loads its own copy of the network with the network's own backend
(ONNX Runtime or TorchScript, as its config says), built by the registry's factory.
With a TorchScript network the patches are cut on the network's device instead
(:mod:`argonic.server.backends.torch_plane`; same patches), unless ``parameters device_patches`` is
``"false"``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from argonic.patches import PlaneRequestError, decode_plane, plane_patch_chunks
from argonic.repository.model_config import (
    InstanceSpec,
    bool_parameter,
    int_parameter,
    load_config,
    parameter,
)
from argonic.server.backends.base import Backend
from argonic.server.backends.torchscript import TorchScriptBackend
from argonic.server.errors import InvalidArgument


class PlaneBackend:
    """Builds patches from a plane request and runs the network on them."""

    def __init__(
        self,
        config: mc.ModelConfig,
        model_file: Path,
        instance: InstanceSpec,
        create_network: Callable[[mc.ModelConfig, Path, InstanceSpec], Backend],
    ) -> None:
        # the network named by the config (model_file may belong to a model further down a
        # chain: the bf16 network reads the fp32 network's model.onnx)
        network = parameter(config, "network", "") or model_file.parent.parent.name
        network_config = load_config(model_file.parents[2] / network)
        if network_config.max_batch_size < 1:
            raise InvalidArgument(
                f"model '{config.name}': network '{network_config.name}' must "
                "have max_batch_size >= 1"
            )
        self.network = create_network(network_config, model_file, instance)
        if "int8_kernel" in network_config.parameters:  # reported by the network's backend
            config.parameters["int8_kernel"].CopyFrom(network_config.parameters["int8_kernel"])
        self.input_name = network_config.input[0].name
        self.output_names = [o.name for o in config.output]
        self.output_dims = {
            o.name: tuple(max(int(d), 0) for d in o.dims[1:]) for o in config.output
        }
        missing = sorted(set(self.output_names) - {o.name for o in network_config.output})
        if missing:
            raise InvalidArgument(
                f"model '{config.name}': outputs {missing} are not outputs of "
                f"network '{network_config.name}'"
            )
        default_chunk = min(256, network_config.max_batch_size)
        self.chunk = min(
            int_parameter(config, "execution_batch_size", default_chunk),
            network_config.max_batch_size,
        )
        self.device_plane = None
        if isinstance(self.network, TorchScriptBackend) and bool_parameter(
            config, "device_patches", True
        ):
            from argonic.server.backends.torch_plane import DevicePlane  # imports torch

            self.device_plane = DevicePlane(self.network, self.output_dims, self.chunk)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Answer one plane request: outputs [N, ...] for its N hits."""
        if self.device_plane is not None:
            try:
                return self.device_plane.run(inputs)
            except PlaneRequestError as exc:
                raise InvalidArgument(f"bad plane request: {exc}") from None
        try:
            image, wire, tick = decode_plane(inputs)
        except PlaneRequestError as exc:
            raise InvalidArgument(f"bad plane request: {exc}") from None
        outputs: dict[str, np.ndarray] = {}
        for start, stop, patches in plane_patch_chunks(image, wire, tick, self.chunk):
            result = self.network.run({self.input_name: patches})
            for name in self.output_names:
                array = np.asarray(result[name])
                if name not in outputs:
                    outputs[name] = np.empty((len(wire), *array.shape[1:]), array.dtype)
                outputs[name][start:stop] = array
        if not len(wire):  # no hits: empty heads, widths from the config
            outputs = {
                name: np.zeros((0, *self.output_dims[name]), np.float32)
                for name in self.output_names
            }
        return outputs

    def close(self) -> None:
        """Release the network."""
        self.network.close()
