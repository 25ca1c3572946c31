"""Model control modes, Triton's semantics: none (load/unload refused), explicit, poll.

Served over 127.0.0.1 to tritonclient; the flags are checked on a real `argonic serve`.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.models import head_weights, reference_heads, tiny_onnx
from support.servers import CNN_LIKE_CONFIG, GATES, add_model, gate_model, marked
from tritonclient.utils import InferenceServerException

from argonic.server import running_server
from argonic.server.core.dataplane import CONTROL_REFUSED

RNG = np.random.default_rng(3)


def _cnn(seed: int):
    return lambda d: tiny_onnx(d / "model.onnx", seed)


def cnn(repo: Path, name: str, versions: dict[int, int]) -> None:
    add_model(repo, name, CNN_LIKE_CONFIG, versions={v: _cnn(seed) for v, seed in versions.items()})


def infer(client: grpcclient.InferenceServerClient, model: str, x: np.ndarray, **kw):
    tensor = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], **kw)


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_load_and_unload_refused_unless_explicit(tmp_path: Path, mode: str) -> None:
    cnn(tmp_path, "cnn", {1: 1})
    with running_server(tmp_path, allow_metrics=False, model_control_mode=mode) as server:
        client = grpcclient.InferenceServerClient(server.url)
        for call in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException) as info:
                call("cnn")
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            assert info.value.message() == CONTROL_REFUSED
        assert client.is_model_ready("cnn")


def test_poll_mode_follows_the_repository(tmp_path: Path) -> None:
    cnn(tmp_path, "cnn", {1: 1})
    x = RNG.random((4, 48, 48, 1), dtype=np.float32)
    with running_server(
        tmp_path, allow_metrics=False, model_control_mode="poll", repository_poll_secs=0.2
    ) as server:
        client = grpcclient.InferenceServerClient(server.url)
        # a new model appears
        cnn(tmp_path, "newcomer", {1: 4})
        wait_for(lambda: client.is_model_ready("newcomer"))
        truth = reference_heads(x, head_weights(4))[0]
        got = infer(client, "newcomer", x).as_numpy("em_trk_none_netout")
        np.testing.assert_allclose(got, truth, atol=1e-5)
        # a new version of a served model replaces the old one (latest policy)
        _cnn(2)(tmp_path / "cnn" / "2")
        wait_for(lambda: client.is_model_ready("cnn", "2"))
        assert not client.is_model_ready("cnn", "1")
        got = infer(client, "cnn", x).as_numpy("em_trk_none_netout")
        np.testing.assert_allclose(got, reference_heads(x, head_weights(2))[0], atol=1e-5)
        # a removed model is unloaded
        shutil.rmtree(tmp_path / "newcomer")
        wait_for(lambda: not client.is_model_ready("newcomer"))
        assert client.is_model_ready("cnn")


def test_poll_mode_unloads_after_in_flight_requests_finish(tmp_path: Path) -> None:
    """As Triton: once the model leaves the repository it is UNLOADING (not ready, new
    requests refused cleanly) while a request it holds runs on, and that request gets its
    answer; then, gone from the repository, it leaves the index."""
    gate_model(tmp_path, "held")
    x = marked(2, 0.5)
    with running_server(
        tmp_path, allow_metrics=False, model_control_mode="poll", repository_poll_secs=0.2
    ) as server:
        client = grpcclient.InferenceServerClient(server.url)
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(r=infer(client, "held", x)))
        thread.start()
        wait_for(lambda: server.server.dataplane.models["held"][1].stats.pending == 0)
        shutil.rmtree(tmp_path / "held")

        def state() -> str | None:
            index = client.get_model_repository_index().models
            return next((m.state for m in index if m.name == "held"), None)

        wait_for(lambda: state() == "UNLOADING")
        time.sleep(1.0)  # several polls: the unload waits for the held request
        assert state() == "UNLOADING" and thread.is_alive()
        assert not client.is_model_ready("held")
        with pytest.raises(InferenceServerException) as refused:
            infer(client, "held", x)
        assert refused.value.status() in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE")
        GATES["held"].set()
        thread.join(30)
        np.testing.assert_array_equal(result["r"].as_numpy("output"), x)
        wait_for(lambda: state() is None)


def test_explicit_mode_allows_control(tmp_path: Path) -> None:
    cnn(tmp_path, "a", {1: 1})
    cnn(tmp_path, "b", {1: 2})
    with running_server(
        tmp_path, allow_metrics=False, model_control_mode="explicit", load_model=["a"]
    ) as server:
        client = grpcclient.InferenceServerClient(server.url)
        assert client.is_model_ready("a") and not client.is_model_ready("b")
        client.load_model("b")
        assert client.is_model_ready("b")
        client.unload_model("a")
        assert not client.is_model_ready("a")
