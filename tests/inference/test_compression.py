"""Patch-mode transport options: lossless tensor compression (zstd, lz4) and fp16 patches.

Truth: fp32 uncompressed patch mode through the same server with the shipped network on
held-out simulated events (compression: identical scores; fp16: identical classes, the
largest score difference recorded as the test property ``fp16_max_abs_score_difference``).
"""

import logging

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from argonic import transport
from argonic.detector.eventfile import EventFile
from argonic.inference.remote import RemoteInterface
from argonic.patches import event_patches
from argonic.reco.simulation import simulate_file
from argonic.repository import shipped_repository
from argonic.server.app import running_server


@pytest.fixture(scope="module")
def server():
    with running_server(shipped_repository(), allow_metrics=False) as handle:
        yield handle


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    path = tmp_path_factory.mktemp("compression") / "ev.h5"
    simulate_file(path, detector="mini", n_events=2, seed=77, show_progress=False)
    with EventFile(path) as events:
        return np.concatenate([event_patches(e, events.detector) for e in events])


@pytest.fixture(scope="module")
def baseline(server, patches):
    with _remote(server) as remote:
        return remote.predict(patches), remote.stats()["total"]["bytes_sent"]


def _remote(server, **overrides):
    return RemoteInterface(
        {
            "batch_size": 235,
            "remote": {
                "servers": [server.url],
                "server_stats": "off",
                "shared_memory": "off",  # bytes on the wire are what these tests compare
                **overrides,
            },
        }
    )


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_compressed_tensors_round_trip(name, patches):
    data = patches[:300].tobytes()
    packed = transport.compressor(name)(data)
    assert len(packed) < len(data) / 5  # patches are mostly zeros
    assert transport.decompress(name, packed, len(data)) == data
    with pytest.raises(transport.CompressionError, match="expected"):
        transport.decompress(name, packed, len(data) + 4)
    with pytest.raises(transport.CompressionError, match="does not decompress"):
        transport.decompress(name, b"not " + packed[4:], len(data))
    with pytest.raises(transport.CompressionError, match="unknown"):
        transport.compressor("brotli")


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_compressed_patch_mode_gives_identical_scores(server, patches, baseline, name):
    expected, fp32_bytes = baseline
    with _remote(server, tensor_compression=name) as remote:
        scores = remote.predict(patches)
        sent = remote.stats()["total"]["bytes_sent"]
    np.testing.assert_array_equal(scores, expected)
    assert sent * 5 < fp32_bytes


def test_fp16_patches_give_the_same_class_for_every_hit(server, patches, baseline, record_property):
    expected, fp32_bytes = baseline
    with _remote(server, transport="fp16") as remote:
        scores = remote.predict(patches)
        sent = remote.stats()["total"]["bytes_sent"]
    difference = float(np.abs(scores - expected).max())
    record_property("fp16_max_abs_score_difference", difference)
    print(f"fp16 transport: {len(patches)} hits, largest score difference {difference:.3g}")
    np.testing.assert_array_equal(np.argmax(scores[:, :3], 1), np.argmax(expected[:, :3], 1))
    assert difference < 0.05
    assert 0.45 < sent / fp32_bytes < 0.55


def test_corrupt_compressed_request_is_refused_and_the_server_keeps_serving(
    server, patches, baseline
):
    with (
        _remote(server, tensor_compression="zstd") as remote,
        grpc.insecure_channel(server.url) as channel,
    ):
        remote.connect()
        with pytest.raises(grpc.RpcError) as info:
            _raw_infer(channel, [2, 48, 48, 1], b"\x28\xb5\x2f\xfd garbage", "zstd")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "zstd" in info.value.details() and "main_input" in info.value.details()
        np.testing.assert_array_equal(remote.predict(patches[:10]), baseline[0][:10])


def _raw_infer(channel: grpc.Channel, shape: list[int], data: bytes, compression: str) -> None:
    """A ModelInfer of one compressed main_input tensor, as raw bytes a client could send."""
    request = service_pb2.ModelInferRequest(model_name="emtrkmichelid")
    request.inputs.add(name="main_input", datatype="FP32", shape=shape)
    request.raw_input_contents.append(data)
    request.parameters[transport.PARAMETER].string_param = compression
    channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )(request)


def _bomb(name: str, size: int) -> bytes:
    """A frame of ``size`` zero bytes that compresses to a few hundred bytes or kB."""
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(bytes(size))
    import lz4.frame

    return lz4.frame.compress(bytes(size), store_size=True)


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_decompression_is_bounded_by_the_declared_size(server, patches, baseline, name):
    """A tensor may expand only to what its shape declares, and at most MAX_DECOMPRESSED:
    a 64 MB bomb declared as 2 patches, and a shape declaring more than the limit, are
    refused INVALID_ARGUMENT (the bomb without being inflated: at most one byte past the
    declared size is read); the server keeps serving."""
    from argonic.server.grpc.codec import MAX_DECOMPRESSED

    declared = 2 * 48 * 48 * 4
    with pytest.raises(transport.CompressionError, match=f"{declared + 1} bytes, expected"):
        transport.decompress(name, _bomb(name, 64 << 20), declared)
    rows = MAX_DECOMPRESSED // (48 * 48 * 4) + 1
    cases = (
        (server, [2, 48, 48, 1], "INVALID_ARGUMENT", f"to {declared + 1} bytes, expected"),
        (server, [rows, 48, 48, 1], "RESOURCE_EXHAUSTED", "--max-inflight-bytes"),
    )
    with running_server(
        shipped_repository(),
        allow_metrics=False,
        load_model=["emtrkmichelid"],
        max_inflight_bytes=0,
    ) as uncapped:  # no in-flight cap: the codec's own limit answers
        cases += ((uncapped, [rows, 48, 48, 1], "INVALID_ARGUMENT", "a compressed tensor may"),)
        for target, shape, code, message in cases:
            with grpc.insecure_channel(target.url) as channel, pytest.raises(grpc.RpcError) as info:
                _raw_infer(channel, shape, _bomb(name, 64 << 20), name)
            assert info.value.code() == getattr(grpc.StatusCode, code), info.value.details()
            assert message in info.value.details()
    with _remote(server) as remote:
        np.testing.assert_array_equal(remote.predict(patches[:10]), baseline[0][:10])


def test_server_without_a_codec_gets_plain_tensors(server, patches, baseline, monkeypatch, caplog):
    monkeypatch.setattr(transport, "available", list)  # the server advertises fp16 only
    with (
        _remote(server, tensor_compression="lz4", transport="fp16") as remote,
        caplog.at_level(logging.WARNING, logger="argonic.inference.remote"),
    ):
        scores = remote.predict(patches)
        sent = remote.stats()["total"]["bytes_sent"]
    assert 0.45 < sent / baseline[1] < 0.55  # fp16 still, but uncompressed
    np.testing.assert_array_equal(np.argmax(scores[:, :3], 1), np.argmax(baseline[0][:, :3], 1))
    assert sum("does not decode lz4" in r.getMessage() for r in caplog.records) == 1
