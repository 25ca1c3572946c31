"""NVIDIA's perf_analyzer against argonic serve: HTTP and gRPC, tensors over the wire and in
system shared memory. Needs the binary (docs/reference.md, section 3): ARGONIC_PERF_ANALYZER
or perf_analyzer on PATH, with libcudart on LD_LIBRARY_PATH; skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.models import identity_onnx, tiny_repository
from support.servers import IDENTITY_CONFIG, add_model

from argonic.server import running_server

BINARY = os.environ.get("ARGONIC_PERF_ANALYZER") or shutil.which("perf_analyzer")
pytestmark = pytest.mark.skipif(
    not BINARY, reason="needs perf_analyzer (docs/reference.md, section 3)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repo = tiny_repository(tmp_path_factory.mktemp("pa_repo"), max_batch_size=16)
    add_model(
        repo, "identity", IDENTITY_CONFIG, versions={1: lambda d: identity_onnx(d / "model.onnx")}
    )
    with running_server(Path(repo), allow_metrics=False, http_port=0) as handle:
        yield handle


@pytest.mark.parametrize("memory", ["none", "system"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures(server, protocol: str, memory: str) -> None:
    url = server.http_url if protocol == "http" else server.url
    cmd = [
        str(BINARY),
        *(
            [
                "-m",
                "identity",
                "-b",
                "8",
                "--concurrency-range",
                "2",
                "--shape",
                "main_input:48,48,1",
            ]
        ),
        *(["-p", "500", "-r", "3", "-s", "1000"]),
        *("-u", url, "-i", protocol, "--shared-memory", memory),
        *("--output-shared-memory-size", str(16 * 48 * 48 * 4)),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "throughput:" in run.stdout and "Unable" not in run.stdout + run.stderr
    stats = server.server.dataplane.model("identity").stats
    assert stats.fail.count == 0 and stats.success.count > 0
