"""Conversions between KServe v2 protobuf messages and the data plane's types."""

from __future__ import annotations

import math

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from argonic import transport
from argonic.repository.model_config import datatype_name
from argonic.server.core import shm
from argonic.server.core.dataplane import IndexEntry
from argonic.server.core.model_version import ModelVersion
from argonic.server.core.tensors import InferRequest, InferResponse, InputTensor
from argonic.server.errors import InvalidArgument
from argonic.server.grpc.wire import InferResponseMessage

# InferTensorContents field holding each datatype's values (non-raw requests).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _int_parameter(params, key: str) -> int:
    if key not in params:
        return 0
    p = params[key]
    return int(getattr(p, p.WhichOneof("parameter_choice") or "int64_param"))


def _plain(params) -> dict[str, object]:
    """A protobuf parameter map as plain values."""
    return {
        k: getattr(p, p.WhichOneof("parameter_choice") or "string_param") for k, p in params.items()
    }


def infer_request(msg: pb.ModelInferRequest, raw: list | None = None) -> InferRequest:
    """Decode ModelInferRequest; ``raw`` overrides its raw_input_contents (see wire.py).
    Inputs in shared memory have no raw_input_contents entry (as Triton's clients send)."""
    raw = list(msg.raw_input_contents) if raw is None else raw
    regions = [
        shm.reference(_plain(t.parameters), f"input '{t.name}'") if t.parameters else None
        for t in msg.inputs
    ]
    in_message = [i for i, r in enumerate(regions) if r is None]
    if raw and len(raw) != len(in_message):
        raise InvalidArgument(
            f"expected {len(in_message)} raw input contents for model "
            f"'{msg.model_name}', got {len(raw)}"
        )
    if raw and transport.PARAMETER in msg.parameters:
        raw = _decompressed(msg, raw, in_message)
    raw_of = dict(zip(in_message, raw, strict=False))
    inputs = []
    for i, t in enumerate(msg.inputs):
        if raw and t.HasField("contents"):  # Triton's rule: which of the two is the tensor?
            raise InvalidArgument(
                f"contents field must not be specified when using raw_input_contents for "
                f"'{t.name}' for model '{msg.model_name}'"
            )
        values = None
        if not raw and regions[i] is None:
            field = _CONTENTS.get(t.datatype)
            values = list(getattr(t.contents, field)) if field else []
        inputs.append(
            InputTensor(t.name, t.datatype, tuple(t.shape), raw_of.get(i), values, regions[i])
        )
    try:
        priority = _int_parameter(msg.parameters, "priority")
        timeout = _int_parameter(msg.parameters, "timeout")
    except (ValueError, OverflowError):
        raise InvalidArgument("parameters 'priority' and 'timeout' must be integers") from None
    return InferRequest(
        msg.model_name,
        inputs,
        msg.model_version,
        msg.id,
        [o.name for o in msg.outputs],
        priority,
        timeout,
        {
            o.name: ref
            for o in msg.outputs
            if o.parameters
            and (ref := shm.reference(_plain(o.parameters), f"output '{o.name}'")) is not None
        },
    )


_ITEMSIZE = {
    "BOOL": 1,
    "INT8": 1,
    "UINT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "FP16": 2,
    "BF16": 2,
    "INT32": 4,
    "UINT32": 4,
    "FP32": 4,
    "INT64": 8,
    "UINT64": 8,
    "FP64": 8,
}
MAX_DECOMPRESSED = 1 << 31  # bytes per tensor: a bomb of a request is refused, not inflated


def request_bytes(msg: pb.ModelInferRequest, received: int) -> int:
    """Bytes a request holds while served: as received, or what its tensors declare when
    larger (compressed tensors expand to that); what --max-inflight-bytes counts."""
    declared = sum(
        math.prod(t.shape) * _ITEMSIZE.get(t.datatype, 1)
        for t in msg.inputs
        if all(d >= 0 for d in t.shape)
    )
    return max(received, declared)


def _decompressed(msg: pb.ModelInferRequest, raw: list, in_message: list[int]) -> list:
    """raw_input_contents decompressed as ``parameters["argonic_compression"]`` says (see
    argonic.transport); each to the byte size its datatype and shape declare."""
    param = msg.parameters[transport.PARAMETER]
    name = param.string_param if param.WhichOneof("parameter_choice") == "string_param" else ""
    if name == "none":
        return raw
    out = []
    for t, data in zip([msg.inputs[i] for i in in_message], raw, strict=True):
        if t.datatype not in _ITEMSIZE or any(d < 0 for d in t.shape):
            raise InvalidArgument(
                f"input '{t.name}': cannot decompress datatype {t.datatype} shape {list(t.shape)}"
            )
        size = math.prod(t.shape) * _ITEMSIZE[t.datatype]
        if size > MAX_DECOMPRESSED:
            raise InvalidArgument(
                f"input '{t.name}': {size} bytes is above the {MAX_DECOMPRESSED} "
                "bytes a compressed tensor may expand to"
            )
        try:
            out.append(memoryview(transport.decompress(name, data, size)))
        except transport.CompressionError as exc:
            raise InvalidArgument(f"input '{t.name}' of model '{msg.model_name}': {exc}") from None
    return out


def infer_response(response: InferResponse) -> InferResponseMessage:
    """Encode the outputs, always as raw_output_contents (little-endian)."""
    msg = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    raw = []
    for out in response.outputs:
        tensor = msg.outputs.add(name=out.name, datatype=out.datatype, shape=out.data.shape)
        if out.shm is not None:  # in shared memory; an empty entry keeps the indices aligned
            tensor.parameters[shm.REGION].string_param = out.shm.region
            tensor.parameters[shm.BYTE_SIZE].int64_param = out.shm.byte_size
            tensor.parameters[shm.OFFSET].int64_param = out.shm.offset
            raw.append(np.empty(0, np.uint8))
            continue
        raw.append(out.data.astype(out.data.dtype.newbyteorder("<"), copy=False))
    return InferResponseMessage(msg, raw)


def _tensor_metadata(tensors, batched: bool) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=t.name,
            datatype=datatype_name(t.data_type),
            shape=([-1] if batched else []) + list(t.dims),
        )
        for t in tensors
    ]


def metadata_response(versions: list[ModelVersion]) -> pb.ModelMetadataResponse:
    """ModelMetadata of a model from its loaded versions (the last one's config)."""
    config = versions[-1].config
    batched = config.max_batch_size > 0
    return pb.ModelMetadataResponse(
        name=config.name,
        versions=[str(v.version) for v in versions],
        platform=versions[-1].platform,
        inputs=_tensor_metadata(config.input, batched),
        outputs=_tensor_metadata(config.output, batched),
    )


def config_response(model: ModelVersion) -> pb.ModelConfigResponse:
    """ModelConfig with the served file's sha256 in ``parameters["sha256"]``."""
    config = mc.ModelConfig()
    config.CopyFrom(model.config)
    config.parameters["sha256"].string_value = model.sha256
    config.parameters[transport.TRANSPORT_PARAMETER].string_value = ",".join(
        ["fp16", *transport.available()]
    )
    return pb.ModelConfigResponse(config=config)


def index_response(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    """RepositoryIndex from the data plane's entries."""
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=e.state, reason=e.reason
            )
            for e in entries
        ]
    )
