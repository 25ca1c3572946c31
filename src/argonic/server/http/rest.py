"""KServe v2 HTTP/REST bodies: JSON from the same messages gRPC sends, and inference requests
and responses with Triton's binary tensor data extension.

An inference body is a JSON header, optionally followed by the raw bytes of the inputs whose
parameters carry ``binary_data_size`` (in input order); ``Inference-Header-Content-Length``
gives the header's length. Outputs travel as binary when their ``binary_data`` parameter
(or the request's ``binary_data_output``) asks, else as JSON ``data``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from argonic.server.core import shm
from argonic.server.core.tensors import InferRequest, InferResponse, InputTensor
from argonic.server.errors import InvalidArgument

HEADER_LENGTH = "Inference-Header-Content-Length"
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _ints(value: Any, descriptor: Descriptor) -> Any:
    """Protobuf's JSON writes 64-bit integers as strings; Triton's REST API has numbers."""
    for f in descriptor.fields:
        if f.json_name not in value and f.name not in value:
            continue
        key = f.name if f.name in value else f.json_name
        v = value[key]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            if vf.message_type is not None:
                value[key] = {k: _ints(x, vf.message_type) for k, x in v.items()}
            elif vf.type in _INT64:
                value[key] = {k: int(x) for k, x in v.items()}
        elif f.message_type is not None:
            items = v if isinstance(v, list) else [v]
            for item in items:
                _ints(item, f.message_type)
        elif f.type in _INT64:
            value[key] = [int(x) for x in v] if isinstance(v, list) else int(v)
    return value


def message_json(msg: Message) -> dict[str, Any]:
    """A protobuf message as Triton's REST JSON (proto field names, numbers as numbers)."""
    return _ints(
        json_format.MessageToDict(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        ),
        msg.DESCRIPTOR,
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{what} must be an integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    return value


def _values(data: Any, what: str) -> np.ndarray:
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidArgument(f"{what}: 'data' is not a regular array") from None
    if values.dtype.kind not in "biuf":
        raise InvalidArgument(f"{what}: 'data' must hold numbers or booleans")
    return values.ravel()


@dataclass
class RestRequest:
    """A decoded REST inference request: the data plane's request plus the output encodings."""

    request: InferRequest
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False


def _input(spec: Any, i: int, body: memoryview, pos: int) -> tuple[InputTensor, int]:
    spec = _object(spec, f"input {i}")
    name = _str(spec.get("name"), f"input {i}: 'name'")
    what = f"input '{name}'"
    datatype = _str(spec.get("datatype"), f"{what}: 'datatype'")
    shape = spec.get("shape")
    if not isinstance(shape, list):
        raise InvalidArgument(f"{what}: 'shape' must be a list of integers")
    shape = tuple(_int(d, f"{what}: 'shape'") for d in shape)
    params = _object(spec.get("parameters", {}), f"{what}: 'parameters'")
    tensor = InputTensor(name, datatype, shape, shm=shm.reference(params, what))
    if tensor.shm is not None:
        return tensor, pos
    if "binary_data_size" in params:
        size = _int(params["binary_data_size"], f"{what}: 'binary_data_size'")
        if size < 0 or pos + size > len(body):
            raise InvalidArgument(
                f"{what}: binary_data_size {size} is past the end of the request body"
            )
        tensor.raw = body[pos : pos + size]
        return tensor, pos + size
    if "data" not in spec:
        raise InvalidArgument(f"{what}: no 'data', binary_data_size or shared memory region")
    tensor.values = _values(spec["data"], what)
    return tensor, pos


def infer_request(name: str, version: str, body: bytes, header_length: int | None) -> RestRequest:
    """Decode an inference body (JSON header, then binary tensors)."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(view)
    header = _header(view, header_length)
    specs = header.get("inputs")
    if not isinstance(specs, list):
        raise InvalidArgument("the request's 'inputs' must be a list")
    params = _object(header.get("parameters", {}), "the request's 'parameters'")
    inputs, pos = [], header_length
    for i, spec in enumerate(specs):
        tensor, pos = _input(spec, i, view, pos)
        inputs.append(tensor)
    if pos != len(view):
        raise InvalidArgument(
            f"the binary data sizes of the inputs add up to {pos - header_length} bytes, "
            f"the body carries {len(view) - header_length}"
        )
    out_specs = header.get("outputs", [])
    if not isinstance(out_specs, list):
        raise InvalidArgument("the request's 'outputs' must be a list")
    request = InferRequest(
        name,
        inputs,
        version,
        str(header.get("id", "")),
        priority=_int(params.get("priority", 0), "parameter 'priority'"),
        timeout_us=_int(params.get("timeout", 0), "parameter 'timeout'"),
    )
    decoded = RestRequest(request, binary_default=params.get("binary_data_output") is True)
    for i, spec in enumerate(out_specs):
        _output(decoded, _object(spec, f"output {i}"), i)
    return decoded


def _header(view: memoryview, header_length: int) -> dict:
    """The request's JSON header (the first ``header_length`` bytes of the body)."""
    if not 0 <= header_length <= len(view):
        raise InvalidArgument(f"{HEADER_LENGTH} {header_length} is outside the request body")
    try:
        header = json.loads(bytes(view[:header_length]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"failed to parse the request JSON: {exc}") from None
    return _object(header, "the request")


def _output(decoded: RestRequest, spec: dict, i: int) -> None:
    """One requested output: its name, shared-memory region and binary_data choice."""
    out = _str(spec.get("name"), f"output {i}: 'name'")
    out_params = _object(spec.get("parameters", {}), f"output '{out}': 'parameters'")
    if "classification" in out_params:
        raise InvalidArgument(f"output '{out}': the classification extension is not supported")
    decoded.request.outputs.append(out)
    ref = shm.reference(out_params, f"output '{out}'")
    if ref is not None:
        decoded.request.output_regions[out] = ref
    if "binary_data" in out_params:
        decoded.binary_outputs[out] = out_params["binary_data"] is True


def infer_response(response: InferResponse, decoded: RestRequest) -> tuple[bytes, int | None]:
    """The response body and, when binary outputs follow the JSON, the JSON's length."""
    outputs, binary = [], []
    for out in response.outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.data.shape),
        }
        if out.shm is not None:
            pass  # in shared memory: no data and no parameters (perf_analyzer reads any
            # "parameters" of an output as binary data)
        elif decoded.binary_outputs.get(out.name, decoded.binary_default):
            raw = np.ascontiguousarray(out.data, out.data.dtype.newbyteorder("<"))
            entry["parameters"] = {"binary_data_size": raw.nbytes}
            binary.append(memoryview(raw.reshape(-1)).cast("B"))  # 0 rows too
        else:
            entry["data"] = out.data.ravel().tolist()
        outputs.append(entry)
    header = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        header["id"] = response.id
    text = json.dumps(header, separators=(",", ":")).encode()
    if not binary:
        return text, None
    return b"".join([text, *binary]), len(text)
