"""wire: requests checked against tritonclient's own request builder and protobuf's parser,
replies built with service_pb2 the way a server builds them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from tritonclient.grpc import InferInput, InferRequestedOutput, service_pb2
from tritonclient.grpc._utils import _get_inference_request

from argonic import transport
from argonic.inference.remote.channel import ServedModel, Server
from argonic.inference.remote.errors import RemoteInferenceError
from argonic.inference.remote.identity import ModelSignature
from argonic.inference.remote.wire import (
    Encoder,
    decode_scores,
    encode_patches,
    encode_plane_request,
    request_header,
    varint,
)
from argonic.patches import (
    PLANE_DATATYPES,
    PLANE_INPUTS,
    cut_patches,
    decode_plane,
    encode_plane,
)
from argonic.settings import RemoteSettings

SIGNATURE = ModelSignature.default("emtrkmichelid")


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).exponential(2.0, (n, 48, 48, 1)).astype(np.float32)
    rows[rows < 3] = 0.0
    return rows


def _tritonclient_request(rows: np.ndarray, version: str = "") -> service_pb2.ModelInferRequest:
    tensor = InferInput("main_input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return _get_inference_request(
        model_name="emtrkmichelid",
        inputs=[tensor],
        model_version=version,
        request_id="",
        outputs=[InferRequestedOutput(s.name) for s in SIGNATURE.outputs],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )


@pytest.mark.parametrize("n", [0, 1, 300, 10**5, 2**35, 2**63 - 1])
def test_varint_is_protobufs(n: int) -> None:
    assert varint(n) == _VarintBytes(n)


@pytest.mark.parametrize("n, version", [(1, ""), (235, "3")])
def test_fp32_request_equals_tritonclients(n: int, version: str) -> None:
    rows = _rows(n)
    header = request_header("emtrkmichelid", version, SIGNATURE.outputs)
    raw = encode_patches(header, SIGNATURE.inputs[0], rows, ("FP32", "none"))
    assert service_pb2.ModelInferRequest.FromString(raw) == _tritonclient_request(rows, version)


def test_fp16_request_carries_half_precision_rows() -> None:
    rows = _rows(7)
    header = request_header("emtrkmichelid", "", SIGNATURE.outputs)
    request = service_pb2.ModelInferRequest.FromString(
        encode_patches(header, SIGNATURE.inputs[0], rows, ("FP16", "none"))
    )
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == (
        "main_input",
        "FP16",
        [7, 48, 48, 1],
    )
    got = np.frombuffer(request.raw_input_contents[0], "<f2").reshape(rows.shape)
    np.testing.assert_array_equal(got, rows.astype(np.float16))


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_compressed_request_decompresses_to_the_rows(name: str) -> None:
    rows = _rows(50)
    header = request_header("emtrkmichelid", "", SIGNATURE.outputs)
    raw = encode_patches(
        header, SIGNATURE.inputs[0], rows, ("FP32", name), transport.compressor(name)
    )
    request = service_pb2.ModelInferRequest.FromString(raw)
    assert request.parameters[transport.PARAMETER].string_param == name  # request-wide
    data = transport.decompress(name, request.raw_input_contents[0], rows.nbytes)
    assert data == rows.tobytes()
    assert len(raw) * 2 < rows.nbytes


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_plane_request_decodes_to_the_plane(compression: str) -> None:
    rng = np.random.default_rng(3)
    image = rng.exponential(1.0, (120, 400)).astype(np.float32)
    wire, tick = np.array([5, 60, 100]), np.array([30.0, 200.0, 390.0])
    tensors = encode_plane(image, wire, tick)
    raw = encode_plane_request(
        tensors,
        "emtrkmichelid_plane",
        "",
        SIGNATURE.outputs,
        compression,
        transport.compressor(compression),
    )
    request = service_pb2.ModelInferRequest.FromString(raw)
    assert request.model_name == "emtrkmichelid_plane"
    assert [o.name for o in request.outputs] == [s.name for s in SIGNATURE.outputs]
    assert [t.name for t in request.inputs] == list(PLANE_INPUTS)
    received = {}
    for tensor, data in zip(request.inputs, request.raw_input_contents, strict=True):
        assert tensor.datatype == PLANE_DATATYPES[tensor.name]
        dtype = "<f4" if tensor.datatype == "FP32" else "<i4"
        size = int(np.prod(tensor.shape)) * 4
        if compression != "none":
            data = transport.decompress(compression, data, size)
        received[tensor.name] = np.frombuffer(data, dtype).reshape(tensor.shape)
    got_image, got_wire, got_tick = decode_plane(received)
    np.testing.assert_array_equal(got_wire, wire)
    np.testing.assert_array_equal(got_tick, tick.astype(np.float32))
    assert got_image.shape == image.shape
    # what the server cuts from the plane it receives = the patches of the original plane
    np.testing.assert_array_equal(
        cut_patches(got_image, got_wire, got_tick), cut_patches(image, wire, tick)
    )


def _reply(outputs: dict[str, np.ndarray], datatype: str = "FP32") -> bytes:
    response = service_pb2.ModelInferResponse(model_name="emtrkmichelid")
    for name, values in outputs.items():
        response.outputs.add(name=name, datatype=datatype, shape=list(values.shape))
        response.raw_output_contents.append(values.astype("<f4").tobytes())
    return response.SerializeToString()


def test_reply_columns_follow_the_signature_not_the_reply_order() -> None:
    rng = np.random.default_rng(4)
    softmax, michel = rng.random((6, 3), np.float32), rng.random((6, 1), np.float32)
    out = np.full((10, 4), -1, np.float32)
    decode_scores(
        _reply({"michel_netout": michel, "em_trk_none_netout": softmax}),
        SIGNATURE.outputs,
        out[2:8],
    )
    np.testing.assert_array_equal(out[2:8], np.hstack([softmax, michel]))
    assert (out[:2] == -1).all() and (out[8:] == -1).all()


@pytest.mark.parametrize(
    "outputs, datatype, message",
    [
        ({"em_trk_none_netout": np.zeros((4, 3))}, "FP32", "no raw output 'michel_netout'"),
        (
            {"em_trk_none_netout": np.zeros((3, 3)), "michel_netout": np.zeros((4, 1))},
            "FP32",
            r"em_trk_none_netout.*9 values; expected FP32 \[4, 3\]",
        ),
        (
            {"em_trk_none_netout": np.zeros((4, 3)), "michel_netout": np.zeros((4, 1))},
            "FP64",
            "is FP64",
        ),
    ],
)
def test_bad_reply_is_named(outputs: dict, datatype: str, message: str) -> None:
    with pytest.raises(RemoteInferenceError, match=message):
        decode_scores(_reply(outputs, datatype), SIGNATURE.outputs, np.empty((4, 4), np.float32))


def _server(advertised: set[str]) -> Server:
    server = Server("127.0.0.1:1", None)
    server.mark_verified(ServedModel(100, frozenset(advertised)))
    return server


def test_transport_options_only_where_advertised(caplog: pytest.LogCaptureFixture) -> None:
    encoder = Encoder(RemoteSettings(transport="fp16", tensor_compression="zstd"), SIGNATURE)
    assert encoder.encoding(_server({"fp16", "zstd", "lz4"})) == ("FP16", "zstd")
    plain = _server(set())
    with caplog.at_level(logging.WARNING, logger="argonic.inference.remote"):
        assert encoder.encoding(plain) == ("FP32", "none")
        assert encoder.encoding(plain) == ("FP32", "none")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("does not accept FP16" in m for m in messages) == 1
    assert sum("does not decode zstd" in m for m in messages) == 1
    default = Encoder(RemoteSettings(), SIGNATURE)
    assert default.encoding(_server({"fp16", "zstd"})) == ("FP32", "none")
