"""`argonic serve` processes on a tiny-model repository and a remote client built on them:
shared by the remote-client tests and the real-Triton tests."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from argonic import procs
from argonic.inference import make_interface
from argonic.inference.local_server import wait_ready
from argonic.inference.remote import RemoteInterface
from argonic.procs import free_port
from support.models import MODEL


@contextlib.contextmanager
def serve_process(
    repository: Path, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`argonic serve` as a subprocess on 127.0.0.1; its process group is killed on exit."""
    port = port or free_port()
    process = procs.start(
        procs.serve_command(repository, grpc_port=port, metrics_port=0), new_session=True
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_ready(address, MODEL, 60.0, process)
        yield address, process
    finally:
        kill(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group and reap it."""
    procs.kill(procs.Child.of(process, group=True))


def remote(servers: list[str], repository: Path, **options: object) -> RemoteInterface:
    """A RemoteInterface built the way the reco chain builds it, with fast-failing defaults."""
    table = {
        "servers": servers,
        "model_repository": str(repository),
        "timeout_s": 5.0,
        "retries": 1,
        "backoff_s": 0.05,
        "shared_memory": "off",  # these tests count bytes on the wire; test_remote_shm the rest
        **options,
    }
    batch_size = table.pop("batch_size", 235)
    interface = make_interface({"interface": "remote", "batch_size": batch_size, "remote": table})
    assert isinstance(interface, RemoteInterface)
    return interface


def assert_same_scores(got: np.ndarray, truth: np.ndarray) -> None:
    assert got.shape == truth.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-6)
