"""Plane mode: each (TPC, plane) image + hits travels instead of patches; same scores.

Truth: the patches the client cuts itself (PointIdAlg code, checked against the slow
reference in test_patches.py), a brute-force coverage mask, the numpy reference of the
test network, and patch mode's own results through the same server.
"""

import hashlib
import logging
import shutil

import grpc
import numpy as np
import pytest
from support.models import head_weights, reference_heads, tiny_onnx
from support.servers import CNN_LIKE_CONFIG, add_model
from tritonclient.grpc import service_pb2, service_pb2_grpc

from argonic import cli
from argonic.detector.eventfile import EventFile
from argonic.inference.local import OnnxRuntimeInterface
from argonic.inference.remote import RemoteInterface
from argonic.inference.remote.wire import encode_plane_request
from argonic.patches import (
    PATCH_SIZE,
    PlaneRequestError,
    cut_patches,
    decode_plane,
    encode_plane,
    event_patches,
    patch_coverage,
    patch_origin,
    plane_image,
)
from argonic.reco.chain import reconstruct_hits
from argonic.reco.module import EmTrackMichelId
from argonic.reco.simulation import simulate_file
from argonic.repository import shipped_repository
from argonic.server.app import running_server


def _network(version_dir):
    tiny_onnx(version_dir / "model.onnx")
    digest = hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest()
    (version_dir / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The shipped plane-model config, verbatim, over a fast test network named emtrkmichelid."""
    root = tmp_path_factory.mktemp("plane_repo")
    add_model(root, "emtrkmichelid", CNN_LIKE_CONFIG, max_batch_size=4096, versions={1: _network})
    (root / "emtrkmichelid_plane").mkdir()
    shutil.copy(
        shipped_repository() / "emtrkmichelid_plane" / "config.pbtxt",
        root / "emtrkmichelid_plane" / "config.pbtxt",
    )
    return root


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo, allow_metrics=False) as handle:
        yield handle


@pytest.fixture(scope="module")
def mini_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plane_mini") / "ev.h5"
    simulate_file(path, detector="mini", n_events=2, seed=21, show_progress=False)
    return path


def _remote(server, repo, **overrides):
    return RemoteInterface(
        {
            "batch_size": 235,
            "remote": {
                "servers": [server.url],
                "model_repository": str(repo),
                "server_stats": "off",
                "shared_memory": "off",  # bytes on the wire are what these tests compare
                "request_mode": "patch",  # the comparison: plane mode is asked for by name
                **overrides,
            },
        }
    )


def _planes(event, detector, hits):
    frames = {(f.tpc, f.plane): f for f in event.frames}
    key = hits.tpc.astype(np.int64) * 8 + hits.plane
    for k in np.unique(key):
        tpc, plane = divmod(int(k), 8)
        idx = np.flatnonzero(key == k)
        image = plane_image(frames[(tpc, plane)], detector.planes[plane].calib_c)
        yield image, hits.wire[idx], hits.peak_tick[idx]


def _edge_hits(shape):
    """Hits on and beyond every plane edge, plus a cluster of overlapping patches."""
    n_wires, n_bins = shape
    last_tick = n_bins * 6 - 1
    wire = [
        0,
        1,
        23,
        24,
        n_wires - 1,
        n_wires - 24,
        -1,
        -30,
        n_wires,
        n_wires + 60,
        5,
        5,
        6,
        7,
        n_wires // 2,
        n_wires // 2,
    ]
    tick = [
        0.0,
        5.9,
        143.99,
        144.0,
        last_tick,
        last_tick - 150,
        10.0,
        -500.0,
        7.0,
        100.0,
        300.0,
        300.0,
        301.5,
        305.2,
        -1.0,
        last_tick + 1000.0,
    ]
    return np.array(wire, np.int32), np.array(tick, np.float32)


def test_patch_coverage_matches_brute_force():
    rng = np.random.default_rng(5)
    shape = (70, 90)
    wire = rng.integers(-60, 130, 40).astype(np.int32)
    tick = rng.uniform(-400, 900, 40).astype(np.float32)
    w0, d0 = patch_origin(wire, tick)
    expected = np.zeros(shape, bool)
    for w, d in zip(w0, d0, strict=True):
        expected[max(w, 0) : max(w + PATCH_SIZE, 0), max(d, 0) : max(d + PATCH_SIZE, 0)] = True
    np.testing.assert_array_equal(patch_coverage(shape, wire, tick), expected)


def test_encoded_planes_rebuild_identical_patches(mini_file):
    with EventFile(mini_file) as events:
        detector = events.detector
        for event in events:
            for image, wire, tick in _planes(event, detector, event.hits):
                edge_wire, edge_tick = _edge_hits(image.shape)
                wire, tick = np.concatenate([wire, edge_wire]), np.concatenate([tick, edge_tick])
                tensors = encode_plane(image, wire, tick)
                # only non-zero pixels inside some patch travel
                assert len(tensors["pixel_value"]) <= np.count_nonzero(image)
                assert np.all(tensors["pixel_value"] != 0)
                decoded, dwire, dtick = decode_plane(tensors)
                expected = cut_patches(image, wire, tick)
                np.testing.assert_array_equal(cut_patches(decoded, dwire, dtick), expected)


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"plane_shape": [4, 4], "pixel_delta": [1, 0], "pixel_value": [1, 2]}, "increase"),
        ({"plane_shape": [4, 4], "pixel_delta": [20], "pixel_value": [1]}, "inside plane_shape"),
        ({"plane_shape": [4, 4], "pixel_delta": [1, 2], "pixel_value": [1]}, "pixel_value 1"),
        ({"plane_shape": [0, 4], "pixel_delta": [], "pixel_value": []}, "positive"),
        ({"plane_shape": [4, 4], "pixel_delta": [1], "pixel_value": [np.nan]}, "NaN"),
    ],
)
def test_decode_plane_names_the_problem(tensors, message):
    full = {
        "hit_wire": np.zeros(1, np.int32),
        "hit_tick": np.zeros(1, np.float32),
        **{k: np.asarray(v) for k, v in tensors.items()},
    }
    with pytest.raises(PlaneRequestError, match=message):
        decode_plane(full)
    with pytest.raises(PlaneRequestError, match="lacks"):
        decode_plane({"plane_shape": np.array([4, 4])})


def test_plane_model_is_discoverable_and_checksummed(server, repo):
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="emtrkmichelid_plane"))
        config = stub.ModelConfig(service_pb2.ModelConfigRequest(name="emtrkmichelid_plane")).config
    assert {t.name: (t.datatype, list(t.shape)) for t in meta.inputs} == {
        "plane_shape": ("INT32", [2]),
        "pixel_delta": ("INT32", [-1]),
        "pixel_value": ("FP32", [-1]),
        "hit_wire": ("INT32", [-1]),
        "hit_tick": ("FP32", [-1]),
    }
    assert {t.name: list(t.shape) for t in meta.outputs} == {
        "em_trk_none_netout": [-1, 3],
        "michel_netout": [-1, 1],
    }
    assert config.max_batch_size == 0
    network_sha = (repo / "emtrkmichelid" / "1" / "model.onnx.sha256").read_text().split()[0]
    assert config.parameters["sha256"].string_value == network_sha


def test_full_event_plane_mode_equals_patch_mode(server, repo, tmp_path):
    """One full ProtoDUNE-SP event: every hit, plane edges and overlapping patches included."""
    path = tmp_path / "full.h5"
    simulate_file(path, detector="protodune-sp", n_events=1, seed=4, show_progress=False)
    with (
        EventFile(path) as events,
        _remote(server, repo, request_mode="plane") as remote,
        OnnxRuntimeInterface(repo / "emtrkmichelid" / "1" / "model.onnx") as local,
    ):
        event = events[0]
        hits = reconstruct_hits(event.frames, event.hits)
        plane = EmTrackMichelId(remote, events.detector).produce(event, hits)
        patch = EmTrackMichelId(local, events.detector).produce(event, hits)  # cuts patches itself
        stats = remote.stats()["total"]
        em_trk_none, michel = reference_heads(
            event_patches(event, events.detector, hits), head_weights()
        )
    assert len(hits) > 20_000
    np.testing.assert_allclose(plane, patch, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.argmax(plane[:, :3], 1), np.argmax(patch[:, :3], 1))
    np.testing.assert_allclose(plane, np.hstack([em_trk_none, michel]), atol=1e-5)
    assert stats["plane_requests"] == stats["requests"] == len(np.unique(hits.tpc * 8 + hits.plane))
    assert stats["patches"] == len(hits)
    # >= 20x fewer bytes than float32 patches (request + reply, as message sizes)
    assert (stats["bytes_sent"] + stats["bytes_received"]) * 20 < len(hits) * 48 * 48 * 4


def test_plane_mode_equals_patch_mode_through_the_server(server, repo, mini_file):
    with (
        EventFile(mini_file) as events,
        _remote(server, repo, request_mode="plane") as plane_if,
        _remote(server, repo) as patch_if,
    ):
        for event in events:
            plane = EmTrackMichelId(plane_if, events.detector).produce(event, event.hits)
            patch = EmTrackMichelId(patch_if, events.detector).produce(event, event.hits)
            np.testing.assert_allclose(plane, patch, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(np.argmax(plane[:, :3], 1), np.argmax(patch[:, :3], 1))
        assert (
            plane_if.stats()["total"]["bytes_sent"] * 20 < patch_if.stats()["total"]["bytes_sent"]
        )


def test_plane_mode_reports_the_plane_models_server_statistics(server, repo, mini_file):
    """The plane requests run on the plane model (not the network's batcher): the summary's
    server counters are the plane model's, not zeros."""
    with (
        EventFile(mini_file) as events,
        _remote(server, repo, request_mode="plane", server_stats="total") as plane_if,
    ):
        event = events[0]
        EmTrackMichelId(plane_if, events.detector).produce(event, event.hits)
        total = plane_if.stats()["total"]
    assert total["plane_requests"] > 0
    assert total["server"]["requests"] == total["plane_requests"]
    assert total["server"]["compute_infer_s"] > 0


def test_bad_plane_request_is_refused_and_the_server_keeps_serving(server, repo):
    with _remote(server, repo, request_mode="plane") as remote:
        tensors = encode_plane(
            np.ones((50, 60), np.float32), np.array([3, 4]), np.array([10.0, 20.0])
        )
        tensors["pixel_delta"][1] = -5
        with grpc.insecure_channel(server.url) as channel:
            stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            with pytest.raises(grpc.RpcError) as info:
                stub(
                    encode_plane_request(
                        tensors, "emtrkmichelid_plane", "", remote.signature.outputs
                    )
                )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pixel indices" in info.value.details()
        scores = remote.predict_plane(
            np.ones((50, 60), np.float32), np.array([3, 4]), np.array([10.0, 20.0])
        )
        assert scores.shape == (2, 4) and np.isfinite(scores).all()


def test_falls_back_to_patch_mode_without_the_plane_model(repo, tmp_path, mini_file, caplog):
    only_network = tmp_path / "repo"
    shutil.copytree(repo / "emtrkmichelid", only_network / "emtrkmichelid")
    with (
        running_server(only_network, allow_metrics=False) as server,
        EventFile(mini_file) as events,
        _remote(server, only_network, request_mode="plane") as remote,
        OnnxRuntimeInterface(repo / "emtrkmichelid" / "1" / "model.onnx") as local,
    ):
        event = events[0]
        with caplog.at_level(logging.WARNING, logger="argonic.inference.remote"):
            scores = EmTrackMichelId(remote, events.detector).produce(event, event.hits)
        expected = EmTrackMichelId(local, events.detector).produce(event, event.hits)
        stats = remote.stats()["total"]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    assert stats["plane_requests"] == 0 and stats["patches"] == len(event.hits)
    warnings = [r for r in caplog.records if "does not serve the plane model" in r.getMessage()]
    assert len(warnings) == 1


def test_cli_reco_plane_mode_prints_bytes_and_matches_patch_mode(
    server, repo, mini_file, tmp_path, capsys
):
    import json

    import h5py

    results = {}
    for mode in ("patch", "plane"):
        out = tmp_path / f"{mode}.h5"
        rc = cli.main(
            [
                "reco",
                str(mini_file),
                "-o",
                str(out),
                "--interface",
                "remote",
                "--server",
                server.url,
                "--request-mode",
                mode,
                "--tensor-compression",
                "zstd",
                "--set",
                f"inference.remote.model_repository={repo}",
                "--json",
            ]
        )
        assert rc == 0
        results[mode] = json.loads(capsys.readouterr().out), out
    (patch, patch_out), (plane, plane_out) = results["patch"], results["plane"]
    assert plane["bytes_sent_per_event"] > 0 and plane["bytes_received_per_event"] > 0
    assert plane["bytes_sent_per_event"] < patch["bytes_sent_per_event"]
    with h5py.File(patch_out) as a, h5py.File(plane_out) as b:
        for name in a["events"]:
            np.testing.assert_array_equal(
                a["events"][name]["predicted"][:], b["events"][name]["predicted"][:]
            )
            np.testing.assert_allclose(
                a["events"][name]["scores"][:], b["events"][name]["scores"][:], rtol=0, atol=1e-6
            )
