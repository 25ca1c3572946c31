"""execution_batch_size "auto": the server measures its backend and picks the fastest size.

The choice itself is tested on a simulated clock that the backends advance by their designed
time per execution, so the outcome cannot depend on the machine's load; the server's use of
it runs for real, on a backend whose optimum stands 5x clear of the rest."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.servers import IDENTITY_CONFIG, add_model

from argonic.repository.model_config import load_config
from argonic.server import register_backend, running_server
from argonic.server.backends.calibrate import fastest_execution_batch_size


class CacheCliffBackend:
    """Identity whose time per execution has a known optimum at 256 rows (a cache cliff above)."""

    def __init__(self, config, model_file: Path, instance) -> None:
        pass

    @staticmethod
    def seconds(rows: int) -> float:
        return 0.001 + (0.00002 * rows if rows <= 256 else 0.0001 * rows)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds(len(inputs["main_input"])))
        return {"output": np.array(inputs["main_input"])}

    def close(self) -> None:
        pass


register_backend("argonic_test_cache_cliff", CacheCliffBackend)
AUTO = 'parameters { key: "execution_batch_size" value { string_value: "auto" } }\ndynamic_batching { }'


def make_repo(tmp_path: Path) -> Path:
    add_model(
        tmp_path,
        "cliff",
        IDENTITY_CONFIG,
        platform="argonic_test_cache_cliff",
        extra=AUTO,
        versions={1: lambda d: (d.mkdir(parents=True), (d / "model").write_bytes(b"cliff"))},
    )
    return tmp_path


class SimulatedClock:
    """A clock that only the backend moves: each execution takes its designed seconds."""

    def __init__(self, seconds) -> None:
        self.now, self.seconds = 0.0, seconds

    def __call__(self) -> float:
        return self.now

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.now += self.seconds(len(inputs["main_input"]))
        return {"output": inputs["main_input"]}


def calibrated(tmp_path: Path, seconds) -> tuple[int, dict[int, float]]:
    config = load_config(make_repo(tmp_path) / "cliff")
    clock = SimulatedClock(seconds)
    return fastest_execution_batch_size(config, clock, clock=clock)


def test_calibration_finds_the_designed_optimum(tmp_path):
    size, rates = calibrated(tmp_path, CacheCliffBackend.seconds)
    assert size == 256
    assert set(rates) == {64, 256, 1024, 2048}
    assert rates[256] == pytest.approx(256 / CacheCliffBackend.seconds(256))


def test_server_splits_a_large_request_at_the_calibrated_size(tmp_path):
    with running_server(make_repo(tmp_path), allow_metrics=False) as server:
        client = grpcclient.InferenceServerClient(server.url)
        x = np.random.default_rng(0).random((1000, 48, 48, 1), dtype=np.float32)
        inp = grpcclient.InferInput("main_input", x.shape, "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("cliff", [inp]).as_numpy("output"), x)
        stats = client.get_inference_statistics("cliff").model_stats[0]
    sizes = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
    assert sizes == {256: 3, 232: 1}


class PlateauBackend(CacheCliffBackend):
    """Identity whose rows/s plateau from 256 rows (larger executions 1.5% faster)."""

    @staticmethod
    def seconds(rows: int) -> float:
        return 0.0002 * rows * (0.985 if rows > 256 else 1.0) + (0.01 if rows < 256 else 0.0)


def test_calibration_keeps_the_smallest_size_on_a_plateau(tmp_path):
    """Within 3% of the fastest the smallest size wins: it pipelines concurrent requests
    (a merged execution answers them together and the instance then waits for clients)."""
    size, rates = calibrated(tmp_path, PlateauBackend.seconds)
    assert size == 256, rates
    assert rates[1024] == pytest.approx(rates[256] / 0.985)  # the plateau's designed 1.5%


def test_calibration_takes_a_larger_size_beyond_the_tolerance(tmp_path):
    """5% faster from 1024 rows is beyond the 3% tolerance: 1024 wins, not 256."""
    size, rates = calibrated(tmp_path, lambda rows: 0.0002 * rows * (0.95 if rows > 256 else 1.0))
    assert size == 1024, rates
