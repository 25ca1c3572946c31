"""RemoteInterface against a real NVIDIA Triton 2.51 (nvidia-pytriton, ONNX Runtime callable).

Skipped, with the reason, when PyTriton cannot start here. nvidia-pytriton 0.7 pins
numpy<2, and with numpy 2 its Python backend answers with empty output tensors; point
ARGONIC_PYTRITON_PYTHON at an interpreter that has nvidia-pytriton and numpy<2 (plus
onnxruntime) when the test environment's numpy is 2.x. Triton runs in its own process
group, stopped at the end (stdin closed, then SIGKILL of the group).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.models import MODEL, ort_scores, random_patches, tiny_repository
from support.remote import assert_same_scores, remote

from argonic import procs
from argonic.inference.local_server import wait_ready
from argonic.inference.remote import ModelMismatchError
from argonic.procs import free_port

PYTRITON_PYTHON = os.environ.get("ARGONIC_PYTRITON_PYTHON", sys.executable)

# Runs under PYTRITON_PYTHON: serve argv[1] (an ONNX file) on gRPC port argv[2] until stdin closes.
TRITON_SCRIPT = """
import os, sys, sysconfig
from pathlib import Path
import numpy as np, onnxruntime as ort, pytriton
libs = [sysconfig.get_config_var("LIBDIR"),
        str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")]
os.environ["LD_LIBRARY_PATH"] = ":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")])
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])

@batch
def infer(main_input):
    softmax, michel = session.run(None, {"main_input": main_input})
    return {"em_trk_none_netout": softmax, "michel_netout": michel}

grpc_port, http_port, metrics_port = (int(p) for p in sys.argv[2:5])
config = TritonConfig(grpc_address="127.0.0.1", grpc_port=grpc_port, http_address="127.0.0.1",
                      http_port=http_port, metrics_port=metrics_port)
with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
    triton.bind("emtrkmichelid", infer,
                inputs=[Tensor(name="main_input", dtype=np.float32, shape=(48, 48, 1))],
                outputs=[Tensor(name="em_trk_none_netout", dtype=np.float32, shape=(3,)),
                         Tensor(name="michel_netout", dtype=np.float32, shape=(1,))],
                config=ModelConfig(max_batch_size=2048))
    triton.run()
    print("READY", flush=True)
    sys.stdin.read()
"""


def _pytriton_problem() -> str:
    """Why PyTriton cannot run under PYTRITON_PYTHON, or "" if it can."""
    probe = "import numpy, onnxruntime, pytriton.triton; print(numpy.__version__.split('.')[0])"
    result = subprocess.run(
        [PYTRITON_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60
    )
    if result.returncode:
        return (
            f"nvidia-pytriton is not importable by {PYTRITON_PYTHON} "
            f"({(result.stderr.strip().splitlines() or ['no error text'])[-1]})"
        )
    if int(result.stdout.strip()) >= 2:
        return (
            f"{PYTRITON_PYTHON} has numpy 2: nvidia-pytriton 0.7 needs numpy<2 (it answers "
            "with empty outputs otherwise); set ARGONIC_PYTRITON_PYTHON to an interpreter "
            "with numpy<2"
        )
    return ""


@contextlib.contextmanager
def pytriton_server(model_file: Path) -> Iterator[str]:
    """A real Triton on 127.0.0.1 serving ``model_file``; its process group is stopped on exit."""
    ports = [free_port() for _ in range(3)]
    process = subprocess.Popen(
        [PYTRITON_PYTHON, "-c", TRITON_SCRIPT, str(model_file), *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{ports[0]}"
        started = time.monotonic()
        wait_ready(address, MODEL, 120.0, process)
        logging.getLogger(__name__).warning("PyTriton ready in %.1f s", time.monotonic() - started)
        yield address
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()  # type: ignore[union-attr]
        # stdin closed asks it to stop: wait, then SIGKILL the group
        procs.stop(procs.Child.of(process, group=True, stop_signal=0), timeout_s=20)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    problem = _pytriton_problem()
    if problem:
        pytest.skip(problem)
    repository = tiny_repository(tmp_path_factory.mktemp("triton_repo"))
    with pytriton_server(repository / MODEL / "1" / "model.onnx") as address:
        yield address, repository


@pytest.mark.parametrize("mode, batch_size", [("sync", 235), ("async", 1693)])
def test_real_triton_scores_equal_local_onnxruntime(
    triton: tuple[str, Path], mode: str, batch_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    address, repository = triton
    patches = random_patches(4000, seed=5)
    with (
        caplog.at_level(logging.WARNING),
        remote(
            [address], repository, mode=mode, batch_size=batch_size, timeout_s=30.0
        ) as interface,
    ):
        scores = interface.predict(patches)
        last = interface.stats()["total"]
        # Triton may count the last execution a moment after its answer left (seen: 3995)
        deadline = time.monotonic() + 5.0
        while last["server"]["inferences"] < len(patches) and time.monotonic() < deadline:
            time.sleep(0.1)
            last = interface.stats()["total"]
    assert_same_scores(scores, ort_scores(repository, patches))
    assert last["requests"] == -(-len(patches) // batch_size)
    assert last["server"]["inferences"] == len(patches)  # Triton's ModelStatistics delta
    assert "does not publish the sha256" in caplog.text  # Triton has no sha256 parameter


def test_real_triton_failover_from_dead_server(triton: tuple[str, Path]) -> None:
    address, repository = triton
    patches = random_patches(500, seed=6)
    with remote([f"127.0.0.1:{free_port()}", address], repository) as interface:
        assert_same_scores(interface.predict(patches), ort_scores(repository, patches))


def test_real_triton_different_model_refused(triton: tuple[str, Path], tmp_path: Path) -> None:
    address, _ = triton
    expects_other = tiny_repository(tmp_path, michel=2)
    with (
        remote([address], expects_other) as interface,
        pytest.raises(ModelMismatchError, match=f"server {address} serves a different"),
    ):
        interface.connect()
