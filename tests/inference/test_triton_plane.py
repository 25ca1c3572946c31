"""The plane model on a real NVIDIA Triton 2.51 (the tritonserver nvidia-pytriton bundles,
Python backend): the repository's emtrkmichelid_plane/1/model.py serves plane requests
with the same scores as argonic serve's plane model and as ONNX Runtime on the patches
argonic.patches cuts; the plane-mode client talks to it unchanged.

The bundled tritonserver loads a plain model repository when given a backend directory
holding the Python backend and the Python-version stub (copied from the wheel below), the
wheel's own libraries on LD_LIBRARY_PATH, and the system's libpython of that version. The
stub starts Python isolated from PYTHONPATH; model.py adds its entries to sys.path.
Skipped unless ARGONIC_PYTRITON_PYTHON (or this interpreter) has nvidia-pytriton.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.models import MODEL, ort_scores, tiny_repository
from test_triton_real import PYTRITON_PYTHON

from argonic.patches import cut_patches, encode_plane
from argonic.procs import free_port
from argonic.server import running_server

REPO_MODELS = Path(__file__).parents[2] / "models"
PLANE = "emtrkmichelid_plane"


def _pytriton() -> tuple[Path, str] | None:
    """(the pytriton package directory, its Python's X.Y) or None."""
    found = subprocess.run(
        [
            PYTRITON_PYTHON,
            "-c",
            "import pathlib, sys, pytriton; print(pathlib.Path(pytriton.__file__).parent);"
            "print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if found.returncode:
        return None
    package, version = found.stdout.split()
    return Path(package), version


PYTRITON = _pytriton()
pytestmark = pytest.mark.skipif(PYTRITON is None, reason="needs nvidia-pytriton")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tiny_repository(tmp_path_factory.mktemp("triton_plane"), max_batch_size=256)
    shutil.copytree(REPO_MODELS / PLANE, root / PLANE)  # the shipped config and model.py
    return root


@pytest.fixture(scope="module")
def triton(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """host:port (gRPC) of tritonserver serving the repository's plane model."""
    package, version = PYTRITON
    backends = tmp_path_factory.mktemp("backends")
    shutil.copytree(package / "tritonserver" / "backends" / "python", backends / "python")
    stub = (
        package / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    )
    shutil.copy(stub, backends / "python")
    site = subprocess.run(
        [
            PYTRITON_PYTHON,
            "-c",
            "import numpy, pathlib; print(pathlib.Path(numpy.__file__).parents[1])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    src = Path(__file__).parents[2] / "src"
    env = {
        "PATH": "/usr/bin:/bin",
        "LD_LIBRARY_PATH": str(package.parent / "nvidia_pytriton.libs"),
        "PYTHONPATH": f"{src}:{site}",
    }
    ports = [free_port() for _ in range(3)]
    log = open(tmp_path_factory.mktemp("triton_log") / "triton.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(package / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            "--model-control-mode=explicit",
            f"--load-model={PLANE}",  # this tritonserver has no ONNX Runtime backend
            f"--backend-directory={backends}",
            f"--http-port={ports[0]}",
            f"--grpc-port={ports[1]}",
            f"--metrics-port={ports[2]}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"127.0.0.1:{ports[1]}"
    client = grpcclient.InferenceServerClient(url)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.is_model_ready(PLANE):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"tritonserver did not serve {PLANE}:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def _plane(seed: int, hits: int = 300):
    rng = np.random.default_rng(seed)
    image = np.zeros((200, 1500), np.float32)
    image[rng.integers(0, 200, 6000), rng.integers(0, 1500, 6000)] = rng.random(6000, np.float32)
    wire = rng.integers(-10, 210, hits).astype(np.int32).clip(0, 199)
    tick = rng.uniform(0, 6000, hits).astype(np.float32)
    return image, wire, tick


def _infer(url: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(
            name, list(array.shape), "INT32" if array.dtype.kind == "i" else "FP32"
        )
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = grpcclient.InferenceServerClient(url).infer(PLANE, inputs)
    return np.concatenate(
        [result.as_numpy("em_trk_none_netout"), result.as_numpy("michel_netout")], 1
    )


def test_real_triton_serves_the_plane_model_like_argonic_serve(triton: str, repo: Path) -> None:
    image, wire, tick = _plane(1)
    tensors = encode_plane(image, wire, tick)
    from_triton = _infer(triton, tensors)
    truth = ort_scores(repo, cut_patches(image, wire, tick)[..., None])
    np.testing.assert_allclose(from_triton, truth, rtol=1e-5, atol=1e-6)
    with running_server(repo, allow_metrics=False) as argonic:
        np.testing.assert_allclose(_infer(argonic.url, tensors), from_triton, rtol=1e-5, atol=1e-6)
    assert grpcclient.InferenceServerClient(triton).get_model_metadata(PLANE).platform in (
        "",
        "python",
    )
    assert MODEL not in {
        m.name
        for m in grpcclient.InferenceServerClient(triton).get_model_repository_index().models
        if m.state == "READY"
    }


def test_a_bad_plane_is_that_requests_error(triton: str) -> None:
    image, wire, tick = _plane(2, hits=5)
    tensors = encode_plane(image, wire, tick)
    tensors["pixel_delta"] = -np.abs(tensors["pixel_delta"]) - 1  # not increasing
    with pytest.raises(Exception, match="bad plane request"):
        _infer(triton, tensors)
    assert grpcclient.InferenceServerClient(triton).is_model_ready(PLANE)  # still serving
