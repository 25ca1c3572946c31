"""`argonic serve` as a real child process with any flags, waited for over TLS or with
headers when the flags ask for them; its log is kept for the test to read."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    address: str
    process: subprocess.Popen
    log: Path
    http_address: str | None = None  # None: the flags switched HTTP off

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_serving(
    served: Served,
    credentials: grpc.ChannelCredentials | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
    timeout_s: float = 120.0,
) -> None:
    """Poll ServerReady until it says yes (raise if the process exits or time runs out)."""
    deadline = time.monotonic() + timeout_s
    channel = (
        grpc.secure_channel(served.address, credentials)
        if credentials
        else grpc.insecure_channel(served.address)
    )
    with channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            if served.process.poll() is not None:
                raise RuntimeError(f"argonic serve exited early:\n{served.log_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError):
                request = service_pb2.ServerReadyRequest()
                if stub.ServerReady(request, timeout=2.0, metadata=metadata).ready:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"argonic serve not ready:\n{served.log_text()[-3000:]}")
            time.sleep(0.2)


@contextlib.contextmanager
def argonic_serve(repository: Path, log: Path, *flags: str) -> Iterator[Served]:
    """Start `argonic serve` on free ports of 127.0.0.1 (gRPC, and HTTP unless the flags set
    it or switch it off; not waited for); kill it on exit."""
    port, http = free_port(), None
    command = [sys.executable, "-m", "argonic.cli", "serve", "--model-repository"]
    command += [str(repository), "--host", "127.0.0.1", "--grpc-port", str(port)]
    if not any(f.startswith(("--http-port", "--allow-http")) for f in flags):
        http = free_port()
        command += ["--http-port", str(http)]
    command += ["--metrics-port", "0", *flags]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Served(f"127.0.0.1:{port}", process, log, http and f"127.0.0.1:{http}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
