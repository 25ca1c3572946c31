"""The plane model with patches cut on the torch device (argonic.server.backends.torch_plane).

Truth: argonic.patches.cut_patches (the numpy PointIdAlg code the clients use), the numpy
reference of the test network, and patch mode through the same server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch  # the test extra: a broken install fails here, never skips
import tritonclient.grpc as grpcclient
from support.models import head_weights, reference_heads, torchscript_heads
from support.servers import CNN_LIKE_CONFIG, add_model
from tritonclient.utils import InferenceServerException

from argonic.detector.geometry import get_detector
from argonic.patches import (
    PATCH_SIZE,
    PLANE_DATATYPES,
    PlaneRequestError,
    cut_patches,
    decode_plane,
    encode_plane,
    patch_origin,
    plane_image,
)
from argonic.reco.simulation import simulate_event
from argonic.repository import shipped_repository
from argonic.repository.model_config import InstanceSpec, parse_config
from argonic.server.app import running_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script

from argonic.server.backends.torch_plane import gather_patches, plane_on_device, scatter_plane  # noqa: E402
from argonic.server.backends.torchscript import TorchScriptBackend  # noqa: E402


def device_patches(image: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
    """Patches gathered by torch from the image's non-zero pixels (the device path's steps)."""
    index = np.flatnonzero(image)
    padded = scatter_plane(
        image.shape, torch.from_numpy(index), torch.from_numpy(image.ravel()[index])
    )
    w0, d0 = patch_origin(wire, tick)
    return gather_patches(padded, torch.from_numpy(w0), torch.from_numpy(d0)).numpy()


def random_plane(rng: np.random.Generator, n_wires: int, n_bins: int) -> np.ndarray:
    image = rng.normal(0, 3, (n_wires, n_bins)).astype(np.float32)
    image[rng.random(image.shape) < 0.7] = 0.0
    return image


def test_gathered_patches_equal_cut_patches_on_random_planes() -> None:
    rng = np.random.default_rng(5)
    for n_wires, n_bins, n in ((240, 250, 300), (30, 20, 50), (1, 1, 7), (480, 1000, 1000)):
        image = random_plane(rng, n_wires, n_bins)
        wire = rng.integers(-60, n_wires + 60, n).astype(np.int32)
        tick = rng.uniform(-400, n_bins * 6 + 400, n).astype(np.float32)
        np.testing.assert_array_equal(
            device_patches(image, wire, tick), cut_patches(image, wire, tick)
        )


def test_edge_and_far_out_hits_see_the_same_zero_padding() -> None:
    rng = np.random.default_rng(6)
    image = random_plane(rng, 100, 120)
    n_wires, n_bins = image.shape
    last_tick = n_bins * 6 - 1
    wire = np.array([0, n_wires - 1, 0, n_wires - 1, 23, 24, 25, -24, -25, -47, -48, -49,
                     n_wires + 23, n_wires + 24, n_wires + 47, n_wires + 48, -10**6, 10**6, 50,
                     50, 50, 50, 50, 50], np.int32)  # fmt: skip
    tick = np.array([0, 0, last_tick, last_tick, 5.999, 6.0, 143.9999, 0, 0, 0, 0, 0,
                     0, 0, 0, 0, 0, 0, -0.5, -6.0, -144.0, -1e9, 1e9, last_tick + 1e-3],
                    np.float32)  # fmt: skip
    expected = cut_patches(image, wire, tick)
    np.testing.assert_array_equal(device_patches(image, wire, tick), expected)
    assert not expected[[16, 17, 21, 22]].any()  # far out: all zeros


def test_empty_plane_and_no_hits() -> None:
    image = np.zeros((40, 30), np.float32)
    wire, tick = np.array([0, 20, 39], np.int32), np.array([0.0, 90.0, 179.0], np.float32)
    patches = device_patches(image, wire, tick)
    assert patches.shape == (3, PATCH_SIZE, PATCH_SIZE) and not patches.any()
    none = device_patches(random_plane(np.random.default_rng(1), 40, 30), wire[:0], tick[:0])
    assert none.shape == (0, PATCH_SIZE, PATCH_SIZE)


@pytest.fixture(scope="module")
def torch_network(tmp_path_factory: pytest.TempPathFactory) -> TorchScriptBackend:
    root = tmp_path_factory.mktemp("torch_net")
    torchscript_heads(root / "model.pt", 4)
    config = parse_config(
        CNN_LIKE_CONFIG.format(name="net", platform="pytorch_libtorch", max_batch_size=64, extra="")
    )
    return TorchScriptBackend(config, root / "model.pt", InstanceSpec("cpu"))


def test_plane_request_decoded_on_the_device_checks_like_decode_plane(torch_network) -> None:
    rng = np.random.default_rng(7)
    image = random_plane(rng, 60, 70)
    wire = rng.integers(0, 60, 40).astype(np.int32)
    tick = rng.uniform(0, 420, 40).astype(np.float32)
    tensors = encode_plane(image, wire, tick)
    with torch_network.device_context():
        padded, w0, d0 = plane_on_device(torch_network, tensors)
        patches = gather_patches(padded, w0, d0).numpy()
    np.testing.assert_array_equal(patches, cut_patches(image, wire, tick))
    bad = dict(tensors, pixel_delta=-tensors["pixel_delta"])
    with pytest.raises(PlaneRequestError, match="increase strictly"):
        plane_on_device(torch_network, bad)


# --- over a real server: plane model with a TorchScript network vs patch mode ----------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript network "emtrkmichelid", the shipped plane config over it, and a twin
    with execution_batch_size 100 (several chunks, a partial last one) and one cutting
    patches on the host (device_patches false)."""
    root = tmp_path_factory.mktemp("torch_plane")
    add_model(
        root,
        "emtrkmichelid",
        CNN_LIKE_CONFIG,
        platform="pytorch_libtorch",
        versions={1: lambda d: torchscript_heads(d / "model.pt", 4)},
    )
    shipped = (shipped_repository() / "emtrkmichelid_plane" / "config.pbtxt").read_text()
    (root / "emtrkmichelid_plane").mkdir()
    shutil.copy(
        shipped_repository() / "emtrkmichelid_plane" / "config.pbtxt",
        root / "emtrkmichelid_plane" / "config.pbtxt",
    )
    for name, params in (
        ("plane_chunked", {"execution_batch_size": "100"}),
        ("plane_host", {"device_patches": "false"}),
    ):
        text = shipped.replace('name: "emtrkmichelid_plane"', f'name: "{name}"').replace(
            'string_value: "256"', f'string_value: "{params.get("execution_batch_size", "256")}"'
        )
        for key, value in params.items():
            if key != "execution_batch_size":
                text += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
        (root / name).mkdir()
        (root / name / "config.pbtxt").write_text(text)
    return root


def planes_of_event(seed: int) -> list[dict[str, np.ndarray]]:
    """The plane requests of one simulated mini-detector event (as the client builds them)."""
    detector = get_detector("mini")
    event = simulate_event(detector, np.random.default_rng(seed), 1, 0, seed)
    frames = {(f.tpc, f.plane): f for f in event.frames}
    hits = event.hits
    key = hits.tpc.astype(np.int64) * 8 + hits.plane
    requests = []
    for k in np.unique(key):
        tpc, plane = divmod(int(k), 8)
        idx = np.flatnonzero(key == k)
        image = plane_image(frames[(tpc, plane)], detector.planes[plane].calib_c)
        requests.append(encode_plane(image, hits.wire[idx], hits.peak_tick[idx]))
    return requests


def infer_plane(client, model: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), PLANE_DATATYPES[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return np.concatenate(
        [result.as_numpy("em_trk_none_netout"), result.as_numpy("michel_netout")], axis=1
    )


def infer_patches(client, patches: np.ndarray) -> np.ndarray:
    tensor = grpcclient.InferInput("main_input", list(patches.shape), "FP32")
    tensor.set_data_from_numpy(patches)
    result = client.infer("emtrkmichelid", [tensor])
    return np.concatenate(
        [result.as_numpy("em_trk_none_netout"), result.as_numpy("michel_netout")], axis=1
    )


def test_served_plane_model_on_a_torch_network_equals_patch_mode(repo: Path) -> None:
    requests = planes_of_event(3)
    extra = encode_plane(np.zeros((40, 30), np.float32), np.array([-500, 3], np.int32),
                         np.array([10.0, 1e6], np.float32))  # fmt: skip
    empty = encode_plane(np.ones((8, 8), np.float32), np.zeros(0, np.int32), np.zeros(0))
    with running_server(repo, allow_metrics=False) as server:
        client = grpcclient.InferenceServerClient(server.url)
        for tensors in [*requests, extra]:
            image, wire, tick = decode_plane(tensors)
            patches = cut_patches(image, wire, tick)[..., None]
            by_patch = infer_patches(client, patches)
            softmax, michel = reference_heads(patches, head_weights(4))
            np.testing.assert_allclose(by_patch[:, :3], softmax, atol=1e-5)
            np.testing.assert_allclose(by_patch[:, 3:], michel, atol=1e-5)
            for model in ("emtrkmichelid_plane", "plane_chunked", "plane_host"):
                # same patches, same network, same rows per execution or not: equal to rounding
                np.testing.assert_allclose(
                    infer_plane(client, model, tensors), by_patch, rtol=0, atol=1e-6
                )
        for model in ("plane_chunked", "plane_host"):  # no hits: empty heads on the wire
            assert infer_plane(client, model, empty).shape == (0, 4)
        bad = dict(requests[0], pixel_value=np.full_like(requests[0]["pixel_value"], np.nan))
        with pytest.raises(InferenceServerException, match="NaN"):
            infer_plane(client, "emtrkmichelid_plane", bad)
        assert len(requests) == 3 and max(len(r["hit_wire"]) for r in requests) > 100
