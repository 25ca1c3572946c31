"""The Slurm scripts on a real single-node Slurm (slurmctld + slurmd + munged on this host).

deploy/slurm/single-node-slurm.sh starts a private Slurm in a temporary directory (needs
root and the Debian packages slurm-wlm and munge; skipped otherwise). Then submit.sh sends
an argonic server job and a client array; the clients find the server through the file it
publishes in the shared directory, reconstruct an events file remotely, and finish; the
server job is cancelled, drains, and removes its file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from support.cluster import cluster_repository

from argonic.procs import free_port_block

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "deploy" / "slurm"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")),
    reason="needs root and the Debian packages slurm-wlm and munge",
)


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def slurm(tmp_path):
    ports = free_port_block(2)
    env = {**os.environ, "SLURMCTLD_PORT": str(ports), "SLURMD_PORT": str(ports + 1)}
    slurm_dir = tmp_path / "slurm"
    start = subprocess.run(
        [str(SLURM / "single-node-slurm.sh"), "start", str(slurm_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert start.returncode == 0, start.stderr
        yield {**env, "SLURM_CONF": str(slurm_dir / "slurm.conf")}
    finally:
        subprocess.run(
            [str(SLURM / "single-node-slurm.sh"), "stop", str(slurm_dir)], env=env, timeout=60
        )


def test_server_job_and_client_array_on_single_node_slurm(slurm, tmp_path):
    shared = tmp_path / "shared"
    repo = cluster_repository(shared / "models")
    events = tmp_path / "events.h5"
    sim = subprocess.run(
        [
            sys.executable,
            "-m",
            "argonic.cli",
            "simulate",
            "--detector",
            "mini",
            "--events",
            "1",
            "-o",
            str(events),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sim.returncode == 0, sim.stderr
    port = free_port_block(2)
    env = {
        **slurm,
        "ARGONIC_SHARED": str(shared),
        "ARGONIC_EVENTS": str(events),
        "ARGONIC_VENV": str(Path(sys.executable).parent.parent),
        "ARGONIC_GRPC_PORT": str(port),
        "ARGONIC_METRICS_PORT": str(port + 1),
        "ARGONIC_SERVER_WAIT": "90",
        "ARGONIC_RECO_ARGS": f"--set inference.remote.model_repository={repo} --json",
    }
    out = subprocess.run(
        [str(SLURM / "submit.sh"), "0-1", "--cpus-per-task=1", "--time=00:05:00"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    server_job, client_job = re.search(r"server job (\d+), client array (\d+)", out.stdout).groups()

    def squeue() -> str:
        return subprocess.run(
            ["squeue", "-h", "-o", "%i %T"], env=slurm, capture_output=True, text=True
        ).stdout

    try:
        _wait(lambda: (shared / "servers" / server_job).is_file(), 90, "the server's endpoint file")
        assert (shared / "servers" / server_job).read_text().strip().endswith(f":{port}")
        _wait(
            lambda: not re.search(rf"^{client_job}_", squeue(), re.MULTILINE),
            120,
            "the client array",
        )
    finally:
        subprocess.run(["scancel", server_job], env=slurm)
    _wait(lambda: server_job not in squeue().split(), 60, "the server job to end")
    assert not (shared / "servers" / server_job).exists()  # unpublished on the way out
    server_log = (tmp_path / f"argonic-server-{server_job}.log").read_text()
    for task in (0, 1):
        log = (tmp_path / f"argonic-clients-{client_job}_{task}.log").read_text()
        summary = json.loads(log[log.index("{") :])
        assert summary["interface_stats"]["total"]["requests_by_server"], log
        with h5py.File(shared / "output" / f"reco-{task}.h5") as f:
            assert len(f) > 0
    # The server drained on scancel and answered every patch of both clients.
    assert "drained: True" in server_log and "requests_failed: 0" in server_log
