"""Saturation-aware discovery: a server refuses RepositoryIndex (and, as configured, new
inference) while its queue time per execution is above a threshold, and argonic's client
skips it for another server, losing nothing.

The metric's arithmetic is checked on a fake clock; the behaviour on real servers
(argonic serve in this process, tritonclient and argonic's RemoteInterface as clients).
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.cluster import remote_config
from support.models import MODEL, ort_scores, random_patches, tiny_repository
from tritonclient.utils import InferenceServerException

from argonic.server import running_server
from argonic.server.core.saturation import Saturation
from argonic.server.core.stats import ModelStats
from argonic.server.errors import Unavailable


def test_load_is_queue_time_per_execution_over_the_window() -> None:
    stats, now = ModelStats(), [0.0]
    load = Saturation(lambda: [stats], threshold_ms=5.0, window_s=10.0, clock=lambda: now[0])
    load.sample()
    assert load.load_ms == 0.0 and not load.saturated  # idle: never saturated
    for t in range(1, 11):  # 4 executions a second, each after 8 ms in the queue
        stats.queue.add(4 * 8_000_000, 4)
        stats.execution_count += 4
        now[0] = float(t)
        load.sample()
    assert load.load_ms == pytest.approx(8.0) and load.saturated
    with pytest.raises(Unavailable, match="queue time 8.0 ms per execution above the threshold 5"):
        load.check("RepositoryIndex")
    for t in range(11, 23):  # then executions without waiting: the window forgets the 8 ms
        stats.execution_count += 4
        now[0] = float(t)
        load.sample()
    assert load.load_ms == pytest.approx(0.0) and not load.saturated
    assert Saturation(lambda: [stats]).saturated is False  # threshold 0: off


def _index_refused(url: str) -> bool:
    client = grpcclient.InferenceServerClient(url)
    try:
        client.get_model_repository_index()
        return False
    except InferenceServerException as exc:
        assert exc.status() == "StatusCode.UNAVAILABLE", exc
        assert "saturated" in exc.message()
        return True
    finally:
        client.close()


def _inferences(url: str) -> int:
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(MODEL, as_json=True)
    finally:
        client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats["model_stats"])


def _saturate(url: str) -> None:
    """Queue time on every execution: any traffic puts it above a threshold of 1 ns."""
    client = grpcclient.InferenceServerClient(url)
    x = random_patches(8, seed=3)
    tensor = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(MODEL, [tensor])
    client.close()
    deadline = time.monotonic() + 10
    while not _index_refused(url):  # two samples of the metric (one a second) are needed
        assert time.monotonic() < deadline, "the server never reported saturation"
        time.sleep(0.2)


@pytest.mark.parametrize("refuse_inference", [False, True])
def test_clients_skip_a_saturated_server(tmp_path: Path, refuse_inference: bool) -> None:
    from argonic.inference.remote import RemoteInterface

    repo = tiny_repository(tmp_path / "repo")
    x = random_patches(600, seed=4)
    truth = ort_scores(repo, x)
    hot = {
        "saturation_threshold_ms": 1e-6,
        "saturation_window_s": 60.0,
        "saturation_refuse_inference": refuse_inference,
    }
    with (
        running_server(repo, allow_metrics=True, **hot) as busy,
        running_server(repo, allow_metrics=False) as free,
    ):
        _saturate(busy.url)
        before = _inferences(busy.url)
        # a new client prefers the saturated server (listed first) but skips it
        config = remote_config(repo, [busy.url, free.url], batch_size=100)
        with RemoteInterface(config) as remote:
            np.testing.assert_allclose(remote.predict(x), truth, rtol=1e-5, atol=1e-6)
        assert _inferences(busy.url) == before and _inferences(free.url) == 600
        # the load metric is on /metrics, for Prometheus and KEDA
        page = urllib.request.urlopen(busy.metrics_url).read().decode()
        assert float(page.split("\nargonic_queue_time_ms ")[1].split()[0]) > 0
        if refuse_inference:  # a client that does not ask RepositoryIndex is refused anyway
            client = grpcclient.InferenceServerClient(busy.url)
            tensor = grpcclient.InferInput("main_input", [1, 48, 48, 1], "FP32")
            tensor.set_data_from_numpy(x[:1])
            with pytest.raises(InferenceServerException, match="saturated"):
                client.infer(MODEL, [tensor])
        else:  # without the index check, a client still uses it: nothing else changes
            blind = remote_config(repo, [busy.url, free.url], batch_size=100, check_index=False)
            with RemoteInterface(blind) as remote:
                np.testing.assert_allclose(remote.predict(x), truth, rtol=1e-5, atol=1e-6)
            assert _inferences(busy.url) == before + 600
