"""Shared fixtures and the ``slow`` marker.

Helpers that tests import live in tests/support/ (this folder is on sys.path because this
conftest.py sits at its top). ``pytest -m "not slow"`` leaves out the modules below: they
start real server processes, clusters, Slurm, Prometheus or train networks; the README's
test command runs everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SLOW_MODULES = {
    "cluster/test_cluster.py",
    "cluster/test_cluster_prometheus.py",
    "deploy/test_deploy_slurm.py",
    "inference/test_compression.py",
    "inference/test_plane_mode.py",
    "inference/test_remote.py",
    "inference/test_triton_real.py",
    "model/test_train.py",
    "reco/test_chain.py",
    "server/test_overload.py",
    "server/test_security.py",
    "study/test_runner.py",
}
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(_TESTS).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
