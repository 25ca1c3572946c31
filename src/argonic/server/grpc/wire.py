"""Zero-copy (de)serialization of ModelInfer's large tensor fields.

The raw tensor bytes dominate ModelInfer messages (a 1693-patch request is ~15.6 MB).
Parsing them through protobuf costs several full copies, all on the event loop, so the
top level of the wire format is walked here instead: ``raw_input_contents`` entries stay
memoryviews of the received buffer, everything else is parsed by protobuf; replies are
the protobuf-serialized header followed by the ``raw_output_contents`` fields, joined in
one copy. Protobuf readers accept fields in any order, so the bytes are a valid message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

RAW_INPUT_FIELD = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
RAW_OUTPUT_FIELD = pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
_LENGTH_DELIMITED = 2


@dataclass
class InferRequestMessage:
    """A ModelInferRequest without its raw tensors, plus those tensors as memoryviews."""

    message: pb.ModelInferRequest
    raw: list[memoryview]
    nbytes: int = 0  # size of the message as received


@dataclass(frozen=True)
class Malformed:
    """What a deserializer returns for bytes it cannot parse: the servicer answers
    INVALID_ARGUMENT with ``reason`` (gRPC would answer UNKNOWN and log a traceback)."""

    reason: str


def lenient(deserialize: Callable[[bytes], Any], message: str) -> Callable[[bytes], Any]:
    """``deserialize`` that returns :class:`Malformed` instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the client's error
            reason = str(exc) or type(exc).__name__
            return Malformed(f"malformed {message} message ({len(data)} bytes): {reason[:200]}")

    return parse


@dataclass
class InferResponseMessage:
    """A ModelInferResponse without its raw tensors, plus the output arrays to append."""

    message: pb.ModelInferResponse
    raw: list[np.ndarray] = field(default_factory=list)

    def to_message(self) -> pb.ModelInferResponse:
        """The equivalent ordinary protobuf message (copies the tensors)."""
        full = pb.ModelInferResponse()
        full.CopyFrom(self.message)
        full.raw_output_contents.extend(a.tobytes() for a in self.raw)
        return full


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def parse_infer_request(data: bytes) -> InferRequestMessage:
    """Deserializer for ModelInfer: raw_input_contents kept as views of ``data``."""
    view = memoryview(data)
    raw: list[memoryview] = []
    rest: list[memoryview] = []
    pos = 0
    while pos < len(view):
        start = pos
        key, pos = _varint(view, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(view, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _varint(view, pos)
            if number == RAW_INPUT_FIELD:
                if pos + length > len(view):
                    raise DecodeError("truncated raw_input_contents")
                raw.append(view[pos : pos + length])
                pos += length
                continue
            pos += length
        else:
            raise DecodeError(f"unsupported wire type {wire_type}")
        if pos > len(view):
            raise DecodeError("truncated message")
        rest.append(view[start:pos])
    return InferRequestMessage(pb.ModelInferRequest.FromString(b"".join(rest)), raw, len(view))


def serialize_infer_response(response: InferResponseMessage) -> bytes:
    """Serializer for ModelInfer: the header, then each output's bytes as raw_output_contents."""
    parts: list = [response.message.SerializeToString()]
    tag = _encode_varint(RAW_OUTPUT_FIELD << 3 | _LENGTH_DELIMITED)
    for array in response.raw:
        buffer = memoryview(np.ascontiguousarray(array).reshape(-1)).cast("B")  # 0 rows too
        parts += [tag, _encode_varint(len(buffer)), buffer]
    return b"".join(parts)
