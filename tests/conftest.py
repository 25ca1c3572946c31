"""Shared fixtures and the ``slow`` marker.

Helpers that tests import live in tests/support/ (this folder is on sys.path because this
conftest.py sits at its top). ``pytest -m "not slow"`` leaves out the modules below: they
start real server processes, clusters, Slurm, Prometheus or train networks; the README's
test command runs everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.models import tiny_repository

from argonic.reco.simulation import simulate_file
from argonic.server import running_server

SLOW_MODULES = {
    "cluster/test_cluster.py",
    "cluster/test_cluster_prometheus.py",
    "deploy/test_deploy_slurm.py",
    "inference/test_compression.py",
    "inference/test_plane_mode.py",
    "inference/test_remote.py",
    "inference/test_triton_real.py",
    "inference/test_triton_plane.py",
    "model/test_train.py",
    "test_python_api.py",
    "test_wheel.py",
    "reco/test_chain.py",
    "server/core/test_overload.py",
    "server/test_perf_analyzer.py",
    "server/grpc/test_security.py",
    "study/test_runner.py",
}
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(_TESTS).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


# --- the shared fixtures: one tiny-model repository, one server on it, one event file -----


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the tiny model (support.models) as emtrkmichelid, max_batch_size 100."""
    return tiny_repository(tmp_path_factory.mktemp("tiny_repo"), max_batch_size=100)


@pytest.fixture(scope="session")
def tiny_server(tiny_repo: Path) -> Iterator[str]:
    """host:port of an in-process `argonic serve` on ``tiny_repo``."""
    with running_server(tiny_repo, allow_metrics=False) as handle:
        yield handle.url


@pytest.fixture(scope="session")
def mini_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An event file of two simulated events of the small "mini" detector (seed 11)."""
    path = tmp_path_factory.mktemp("events") / "mini.h5"
    simulate_file(path, detector="mini", n_events=2, seed=11, show_progress=False)
    return path
