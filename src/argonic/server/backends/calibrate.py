"""``execution_batch_size: "auto"``: pick the rows per execution that run fastest on this hardware.

At load, one backend instance runs each candidate size on random inputs of the config's
shape (one warm-up, then two interleaved rounds of >= 0.25 s each, the better kept: single
timed runs picked 1024 over 256 by 13% in one start and by 1% in the next); the smallest
size within
``TOLERANCE`` of the most rows per second wins. Smaller executions pipeline better: when
two 256-row requests were merged into one 1024-row execution (1% faster alone), both
answers left together and the instance idled while the clients sent their next requests
(py-spy: 6% of the time outside Session.run at concurrency 2). On the project's AVX2 EPYC 256 rows beat 1693 by ~1.8x (the 44x44x48
feature map spills the cache); on an AVX-512 Xeon large executions are as fast or faster.

Calibration runs on a throw-away instance (:func:`calibrate`): ONNX Runtime's memory arena
keeps the peak of the largest execution it ever ran (measured: ~2.5 GB after 2048-row
executions of the CNN, ~0.35 GB after 256-row ones), so the serving instances must never
run the large candidates. Closing the throw-away session gives that memory back.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository.model_config import InstanceSpec, numpy_dtype
from argonic.server.backends.base import Backend
from argonic.server.backends.registry import create_backend

CANDIDATES = (64, 256, 1024, 2048)
TOLERANCE = 0.03  # sizes within 3% of the fastest count as fast: the smallest is kept
ROUNDS, WINDOW_S = 2, 0.25  # each size timed for >= 0.25 s in each of 2 rounds, best kept


def random_inputs(
    config: mc.ModelConfig, rows: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Inputs of ``rows`` rows shaped as the config declares them (variable dims taken as 1)."""
    return {
        i.name: rng.standard_normal((rows, *(max(int(d), 1) for d in i.dims))).astype(
            numpy_dtype(i.data_type)
        )
        for i in config.input
    }


def fastest_execution_batch_size(
    config: mc.ModelConfig,
    backend: Backend,
    candidates: tuple[int, ...] = CANDIDATES,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, dict[int, float]]:
    """(the smallest candidate within TOLERANCE of the fastest, rows/s of each candidate)
    for a batched model, timed by ``clock`` (seconds)."""
    sizes = sorted({min(c, config.max_batch_size) for c in candidates})
    rng = np.random.default_rng(0)
    inputs = {rows: random_inputs(config, rows, rng) for rows in sizes}
    for rows in sizes:
        backend.run(inputs[rows])  # warm-up: allocations, kernel selection
    rates = dict.fromkeys(sizes, 0.0)
    for _ in range(ROUNDS):  # interleaved rounds: each size sees the same quiet moments
        for rows in sizes:
            runs, t0 = 0, clock()
            while runs < 1 or clock() - t0 < WINDOW_S:
                backend.run(inputs[rows])
                runs += 1
            rates[rows] = max(rates[rows], rows * runs / (clock() - t0))
    fastest = max(rates.values())
    return min(r for r, rate in rates.items() if rate >= (1 - TOLERANCE) * fastest), rates


def calibrate(
    config: mc.ModelConfig, model_file: Path, instance: InstanceSpec
) -> tuple[int, dict[int, float]]:
    """:func:`fastest_execution_batch_size` on a fresh instance, closed afterwards so that
    its memory arena (sized by the largest candidate) is not kept by the server."""
    backend = create_backend(config, model_file, instance)
    try:
        return fastest_execution_batch_size(config, backend)
    finally:
        backend.close()
        gc.collect()
