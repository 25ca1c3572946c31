"""Memory limits over 127.0.0.1: gRPC's message limit, the in-flight bytes cap, idle trimming
and calibration on a throw-away instance."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.models import tiny_onnx
from support.servers import CNN_LIKE_CONFIG, GATES, IDENTITY_CONFIG, add_model, gate_model, marked
from tritonclient.utils import InferenceServerException

from argonic.repository.model_config import InstanceSpec, load_config
from argonic.server import register_backend, running_server
from argonic.server.backends.calibrate import calibrate

PATCH_BYTES = 48 * 48 * 4


def infer(client, model: str, x: np.ndarray, output: str = "output"):
    tensor = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy(output)


def status(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def test_message_above_the_limit_is_resource_exhausted(tmp_path: Path) -> None:
    add_model(tmp_path, "cnn", CNN_LIKE_CONFIG, versions={1: lambda d: tiny_onnx(d / "model.onnx")})
    with running_server(tmp_path, allow_metrics=False, grpc_max_message_bytes=1 << 20) as server:
        client = grpcclient.InferenceServerClient(server.url)
        code, _ = status(lambda: infer(client, "cnn", marked(200, 0.1), "michel_netout"))
        assert code == "StatusCode.RESOURCE_EXHAUSTED"
        assert infer(client, "cnn", marked(20, 0.2), "michel_netout").shape == (20, 1)


def test_inflight_bytes_cap(tmp_path: Path) -> None:
    gate_model(tmp_path, "held")
    cap = 30 * PATCH_BYTES
    with running_server(tmp_path, allow_metrics=False, max_inflight_bytes=cap) as server:
        client = grpcclient.InferenceServerClient(server.url)
        code, message = status(lambda: infer(client, "held", marked(40, 0.1)))
        assert code == "StatusCode.RESOURCE_EXHAUSTED" and "--max-inflight-bytes" in message
        first: dict = {}
        x = marked(20, 0.3)
        thread = threading.Thread(target=lambda: first.update(out=infer(client, "held", x)))
        thread.start()
        deadline = time.monotonic() + 20
        while server.server.dataplane.admission.used < 20 * PATCH_BYTES:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        code, message = status(lambda: infer(client, "held", marked(20, 0.4)))
        assert code == "StatusCode.UNAVAILABLE" and "in-flight" in message
        GATES["held"].set()
        thread.join(30)
        np.testing.assert_array_equal(first["out"], x)
        y = marked(20, 0.5)
        np.testing.assert_array_equal(infer(client, "held", y), y)  # the retry goes through
        assert server.server.dataplane.admission.used == 0
        deadline = time.monotonic() + 20
        while server.server.dataplane.trim.trims == 0:  # idle: freed memory given back
            assert time.monotonic() < deadline
            time.sleep(0.05)


class CountingBackend:
    """Identity backend that counts instances alive (calibration must close its own)."""

    alive = 0

    def __init__(self, config, model_file: Path, instance) -> None:
        CountingBackend.alive += 1

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": np.array(inputs["main_input"])}

    def close(self) -> None:
        CountingBackend.alive -= 1


register_backend("argonic_test_counting", CountingBackend)


def test_calibration_runs_on_a_throw_away_instance(tmp_path: Path) -> None:
    add_model(
        tmp_path,
        "counted",
        IDENTITY_CONFIG,
        platform="argonic_test_counting",
        max_batch_size=512,
        extra='parameters { key: "execution_batch_size" value { string_value: "auto" } }',
        versions={1: lambda d: (d.mkdir(parents=True), (d / "model").write_bytes(b"x"))},
    )
    config = load_config(tmp_path / "counted")
    size, rates = calibrate(config, tmp_path / "counted" / "1" / "model", InstanceSpec("cpu", 0))
    assert size in rates and CountingBackend.alive == 0
    with running_server(tmp_path, allow_metrics=False):
        assert CountingBackend.alive == 1  # the serving instance only


def test_plane_image_is_counted_by_the_inflight_cap(tmp_path: Path) -> None:
    """A plane request of a few bytes decodes into a [wires, bins] float32 image: the cap
    counts that image, so a plane larger than the cap is refused before it is decoded."""
    from support import fuzz
    from tritonclient.utils import np_to_triton_dtype

    def plane(wires: int, bins: int) -> list:
        inputs = []
        shape = np.array([wires, bins], np.int32)
        for name, value in fuzz.plane_tensors(plane_shape=shape).items():
            tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return inputs

    repo = fuzz.make_repository(tmp_path / "repo")
    with running_server(repo, allow_metrics=False, max_inflight_bytes=8 << 20) as server:
        client = grpcclient.InferenceServerClient(server.url)
        ok = client.infer(fuzz.PLANE_MODEL, plane(480, 1000))  # 1.9 MB decoded
        assert ok.as_numpy("em_trk_none_netout").shape == (2, 3)
        code, message = status(lambda: client.infer(fuzz.PLANE_MODEL, plane(4096, 1024)))
        assert code == "StatusCode.RESOURCE_EXHAUSTED", message  # 16 MB decoded > 8 MB cap
        assert "above the server's --max-inflight-bytes" in message
