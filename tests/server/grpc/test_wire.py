"""wire.py's hand-walked ModelInfer messages agree with protobuf's own (de)serialization."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from argonic.server.grpc import wire


def full_request() -> tuple[pb.ModelInferRequest, list[bytes]]:
    rng = np.random.default_rng(0)
    raws = [
        rng.random((300, 48, 48, 1), dtype=np.float32).tobytes(),
        b"",
        np.arange(5, dtype=np.int64).tobytes(),
    ]
    msg = pb.ModelInferRequest(model_name="cnn", model_version="2", id="req-17")
    msg.parameters["priority"].uint64_param = 2
    msg.parameters["timeout"].int64_param = 1 << 40
    msg.parameters["note"].string_param = "x" * 300  # a long length-delimited field
    for name in ("a", "b", "c"):
        msg.inputs.add(name=name, datatype="FP32", shape=[300, 48, 48, 1])
    msg.outputs.add(name="out")
    msg.raw_input_contents.extend(raws)
    return msg, raws


def test_request_parses_like_protobuf_with_raw_tensors_as_views() -> None:
    msg, raws = full_request()
    parsed = wire.parse_infer_request(msg.SerializeToString())
    assert [bytes(r) for r in parsed.raw] == raws
    assert all(isinstance(r, memoryview) for r in parsed.raw)
    expected = pb.ModelInferRequest()
    expected.CopyFrom(msg)
    del expected.raw_input_contents[:]
    assert parsed.message == expected


def test_truncated_request_is_a_decode_error() -> None:
    data = full_request()[0].SerializeToString()
    with pytest.raises(DecodeError):
        wire.parse_infer_request(data[:-10])


def test_response_is_a_valid_protobuf_message() -> None:
    header = pb.ModelInferResponse(model_name="cnn", model_version="1", id="r")
    header.outputs.add(name="p", datatype="FP32", shape=[200, 3])
    header.outputs.add(name="m", datatype="FP16", shape=[200, 1])
    arrays = [
        np.random.default_rng(1).random((200, 3), dtype=np.float32),
        np.arange(200, dtype=np.float16).reshape(200, 1)[::1],
    ]
    response = wire.InferResponseMessage(header, arrays)
    parsed = pb.ModelInferResponse.FromString(wire.serialize_infer_response(response))
    assert parsed == response.to_message()
    assert [
        np.frombuffer(r, a.dtype).reshape(a.shape).tolist()
        for r, a in zip(parsed.raw_output_contents, arrays, strict=True)
    ] == [a.tolist() for a in arrays]
