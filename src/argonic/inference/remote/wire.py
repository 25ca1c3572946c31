"""Wire encoding: ModelInferRequest bytes out, ModelInferResponse scores in.

Patch mode sends rows of [n, 48, 48, 1] patches as one input tensor; plane mode sends one
(TPC, plane)'s tensors (argonic.patches.encode_plane) to the plane model. The transport
options (fp16 patches, zstd / lz4 tensor compression, argonic.transport) are used only with
a server that advertises them; otherwise plain fp32, uncompressed, and a warning once.
Replies "em_trk_none_netout" [n, 3] and "michel_netout" [n, 1] become rows of [n, 4] scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from argonic import transport as tensor_transport
from argonic.inference.base import N_SCORES
from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import RemoteInferenceError
from argonic.inference.remote.identity import ModelSignature, TensorSpec
from argonic.patches import PLANE_DATATYPES, PLANE_INPUTS
from argonic.settings import RemoteSettings

log = logging.getLogger(__name__)

#: (datatype, tensor compression) of a request's tensors, e.g. ("FP16", "zstd").
Encoding = tuple[str, str]
_RAW_INPUT_CONTENTS = b"\x3a"  # ModelInferRequest field 7 (raw_input_contents), wire type 2


def varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def request_header(model_name: str, model_version: str, outputs: tuple[TensorSpec, ...]) -> bytes:
    """The serialised ModelInferRequest without inputs (the same for every patch request)."""
    request = service_pb2.ModelInferRequest(model_name=model_name, model_version=model_version)
    for spec in outputs:
        request.outputs.add().name = spec.name
    return request.SerializeToString()


def encode_patches(
    header: bytes,
    spec: TensorSpec,
    rows: np.ndarray,
    encoding: Encoding,
    compress: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """ModelInferRequest bytes: ``header``, the input tensor and its raw bytes.

    Protobuf messages concatenate, so the raw patch bytes are appended as field 7
    (raw_input_contents) without another copy through the protobuf runtime.
    """
    datatype, compression = encoding
    tensor = service_pb2.ModelInferRequest(
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name=spec.name, datatype=datatype, shape=[len(rows), *spec.dims]
            )
        ]
    )
    if compression != "none":
        tensor.parameters[tensor_transport.PARAMETER].string_param = compression
    data = (rows.astype("<f2") if datatype == "FP16" else rows).tobytes()
    if compression != "none":
        assert compress is not None
        data = compress(data)
    return b"".join(
        (header, tensor.SerializeToString(), _RAW_INPUT_CONTENTS, varint(len(data)), data)
    )


def encode_plane_request(
    tensors: dict[str, np.ndarray],
    model_name: str,
    model_version: str,
    outputs: tuple[TensorSpec, ...],
    compression: str = "none",
    compress: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """The ModelInferRequest of one plane-mode request (argonic.patches tensors)."""
    request = service_pb2.ModelInferRequest(model_name=model_name, model_version=model_version)
    for name in PLANE_INPUTS:
        array = np.ascontiguousarray(
            tensors[name], "<f4" if PLANE_DATATYPES[name] == "FP32" else "<i4"
        )
        request.inputs.add(name=name, datatype=PLANE_DATATYPES[name], shape=list(array.shape))
        data = array.tobytes()
        if compression != "none":
            assert compress is not None
            data = compress(data)
        request.raw_input_contents.append(data)
    for spec in outputs:
        request.outputs.add().name = spec.name
    if compression != "none":
        request.parameters[tensor_transport.PARAMETER].string_param = compression
    return request.SerializeToString()


def decode_scores(raw: bytes, outputs: tuple[TensorSpec, ...], out: np.ndarray) -> None:
    """Write one ModelInferResponse's outputs, side by side, into ``out`` [n, 4]."""
    response = service_pb2.ModelInferResponse.FromString(raw)
    rows = len(out)
    served = {o.name: i for i, o in enumerate(response.outputs)}
    column = 0
    for spec in outputs:
        width = int(np.prod(spec.dims))
        if spec.name not in served or served[spec.name] >= len(response.raw_output_contents):
            raise RemoteInferenceError(f"reply has no raw output '{spec.name}'")
        tensor = response.outputs[served[spec.name]]
        values = np.frombuffer(response.raw_output_contents[served[spec.name]], dtype="<f4")
        if tensor.datatype != "FP32" or values.size != rows * width:
            raise RemoteInferenceError(
                f"reply output '{spec.name}' is {tensor.datatype} {list(tensor.shape)} with "
                f"{values.size} values; expected FP32 [{rows}, {width}]"
            )
        out[:, column : column + width] = values.reshape(rows, width)
        column += width
    if column != N_SCORES:
        raise RemoteInferenceError(
            f"the model's outputs give {column} scores per patch, not {N_SCORES}"
        )


class Encoder:
    """The encoding of one client's requests: its models, transport options and codec."""

    def __init__(self, remote: RemoteSettings, signature: ModelSignature) -> None:
        self.remote = remote
        self.signature = signature
        self._header = request_header(remote.model_name, remote.model_version, signature.outputs)
        self._compress = tensor_transport.compressor(remote.tensor_compression)
        self._warned: set[str] = set()

    def encoding(self, server: Server) -> Encoding:
        """The configured transport where ``server`` advertises it, else fp32 / none (with a
        warning, once per server and option)."""
        spec = self.signature.inputs[0]
        datatype = spec.datatype
        if self.remote.transport == "fp16" and spec.datatype == "FP32":
            if "fp16" in server.model.transport:
                datatype = "FP16"
            else:
                self._warn_once(
                    f"fp16-{server.address}",
                    "server %s does not accept FP16 for FP32 inputs: sending fp32",
                    server.label,
                )
        compression = self.remote.tensor_compression
        if compression != "none" and compression not in server.model.transport:
            self._warn_once(
                f"{compression}-{server.address}",
                "server %s does not decode %s tensors: sending them uncompressed",
                server.label,
                compression,
            )
            compression = "none"
        return datatype, compression

    def patches(self, rows: np.ndarray, encoding: Encoding) -> bytes:
        """A patch-mode request for ``rows``."""
        return encode_patches(
            self._header, self.signature.inputs[0], rows, encoding, self._compress
        )

    def plane(self, tensors: dict[str, np.ndarray], compression: str) -> bytes:
        """A plane-mode request for one (TPC, plane)'s tensors."""
        return encode_plane_request(
            tensors,
            self.remote.plane_model_name,
            self.remote.model_version,
            self.signature.outputs,
            compression,
            self._compress,
        )

    def scores(self, raw: bytes, out: np.ndarray) -> None:
        """Decode a reply into ``out``."""
        decode_scores(raw, self.signature.outputs, out)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
