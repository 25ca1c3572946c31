"""The plane model on NVIDIA Triton's Python backend (``backend: "python"``).

Triton runs this file; ``argonic serve`` runs the same model with its built-in plane
backend (argonic.server.backends.plane) and never imports it. One request per (TPC, plane): the
plane image's non-zero pixels and the hits (argonic.patches.encode_plane); the 48x48
patches are cut with argonic.patches (PointIdAlg rules, the client's own code) and the
ONNX network named by ``parameters["network"]`` (a model of the same repository, its
latest version, found and checksummed by argonic.repository.reader) runs on them with ONNX Runtime in chunks of ``execution_batch_size``.

Needs, in the Python the backend runs: numpy, onnxruntime and argonic (``pip install
argonic``; of its dependencies, tritonclient's model_config_pb2 for the repository reader). The backend's stub starts its Python
isolated from the environment, so the entries of PYTHONPATH (e.g. a virtual environment's
site-packages and argonic's src) are added to sys.path here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path[1:1] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402 - after the PYTHONPATH entries
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from argonic.patches import PLANE_INPUTS, PlaneRequestError, decode_plane, plane_patch_chunks  # noqa: E402
from argonic.repository import ModelRepositoryError  # noqa: E402
from argonic.repository.reader import RepositoryReader  # noqa: E402


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    """Patch cutting + the ONNX network, one plane per request."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.outputs = [o["name"] for o in config["output"]]
        self.widths = {o["name"]: int(o["dims"][-1]) for o in config["output"]}
        network = _parameter(config, "network", "emtrkmichelid")
        self.chunk = int(_parameter(config, "execution_batch_size", "256"))
        options = ort.SessionOptions()
        threads = int(_parameter(config, "intra_op_thread_count", "0"))
        if threads:
            options.intra_op_num_threads = threads
        try:  # the network's file, its latest version, checked by the repository's rule
            reader = RepositoryReader(Path(args["model_repository"]).parent)
            path = reader.model_file(network)
            reader.sha256(network)
        except ModelRepositoryError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def execute(self, requests: list) -> list:
        """One response per request; a bad plane is that request's error, not the batch's."""
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        try:
            tensors = {}
            for name in PLANE_INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise PlaneRequestError(f"missing input '{name}'")
                tensors[name] = tensor.as_numpy()
            image, wire, tick = decode_plane(tensors)
        except PlaneRequestError as exc:
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"bad plane request: {exc}")
            )
        heads = {n: np.zeros((len(wire), self.widths[n]), np.float32) for n in self.outputs}
        for start, stop, patches in plane_patch_chunks(image, wire, tick, self.chunk):
            result = self.session.run(self.outputs, {self.input_name: patches})
            for name, values in zip(self.outputs, result, strict=True):
                heads[name][start:stop] = values
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, heads[n]) for n in self.outputs]
        )

    def finalize(self) -> None:
        """Release the ONNX Runtime session."""
        self.session = None
