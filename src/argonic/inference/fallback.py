"""A local `argonic serve` started by the remote client when no configured server answers.

The server runs as a child process on a free loopback port with a given model repository.
It never outlives its client: it is stopped by ``stop()``, by a finaliser at interpreter
exit, and on Linux by the kernel (``PR_SET_PDEATHSIG``) if the client process dies
without cleaning up. It runs in its own session, so a Ctrl-C at the terminal reaches the
client only, which then stops the server itself. (Linux sends the death signal when the
*thread* that started the server ends: start it from a long-lived thread; the remote
client restarts a fallback server that died, up to ``retries + 1`` times.)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from argonic import ArgonicError

log = logging.getLogger(__name__)

# Run in the child before `argonic serve`: ask the kernel to send SIGTERM when the parent
# dies (PR_SET_PDEATHSIG = 1), then make sure the parent did not die before that call.
_BOOTSTRAP = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != parent:
    sys.exit(1)
from argonic.cli import main
sys.exit(main(sys.argv[2:]))
"""


class FallbackError(ArgonicError):
    """The local fallback server could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_ready(
    address: str, model_name: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ServerReady and ModelReady on ``address`` until both say yes.

    Raises FallbackError when ``timeout_s`` passes, ``process`` exits first, or the
    server's RepositoryIndex says the model failed to load (with its reason).
    """
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise FallbackError(
                    f"server at {address} exited with code {process.returncode} before it was ready"
                )
            try:
                if (
                    stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1.0).ready
                    and stub.ModelReady(
                        service_pb2.ModelReadyRequest(name=model_name), timeout=1.0
                    ).ready
                ):
                    return
                _raise_if_load_failed(stub, address, model_name)
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise FallbackError(
                    f"server at {address} was not ready with model "
                    f"'{model_name}' after {timeout_s:g} s"
                )
            time.sleep(0.1)


def _raise_if_load_failed(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, address: str, model_name: str
) -> None:
    """FallbackError if the repository index reports a failed load of ``model_name``."""
    index = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=1.0)
    for model in index.models:
        if model.name == model_name and model.state == "UNAVAILABLE" and model.reason:
            raise FallbackError(
                f"server at {address} failed to load '{model_name}': {model.reason}"
            )


def _stop_process(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``grace_s``."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class LocalServer:
    """One `argonic serve` child process on 127.0.0.1 serving ``model_repository``."""

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        model_name: str,
        startup_timeout_s: float = 120.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.model_repository = Path(model_repository)
        self.model_name = model_name
        self.startup_timeout_s = startup_timeout_s
        self.host = host
        self.metrics_port = 0  # chosen at each start; its /metrics is at ``metrics_url``
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self._log_file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    def command(self, grpc_port: int) -> list[str]:
        """The child's command line (the bootstrap runs `argonic serve` in-process)."""
        return [
            sys.executable,
            "-c",
            _BOOTSTRAP,
            str(os.getpid()),
            "serve",
            "--model-repository",
            str(self.model_repository),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--host",
            self.host,
        ]

    def start(self) -> str:
        """Start the server, wait until the model is ready and return its "host:port"."""
        if self.process is not None and self.process.poll() is None:
            return self.address
        if not (self.model_repository / self.model_name).is_dir():
            raise FallbackError(
                f"cannot start a fallback server: no model '{self.model_name}' "
                f"in model repository {self.model_repository}"
            )
        started = time.monotonic()
        for attempt in range(3):  # the free port may be taken before the server binds it
            if self._launch(last_try=attempt == 2):
                break
        log.info(
            "started argonic serve at %s (pid %d) in %.1f s",
            self.address,
            self.process.pid,
            time.monotonic() - started,
        )
        return self.address

    def _launch(self, last_try: bool) -> bool:
        """One start on a free port: True when ready, False when the server exited early
        (and another try is allowed); else FallbackError with the server's log tail."""
        grpc_port = free_port(self.host)
        self.metrics_port = free_port(self.host)
        self.address = f"{self.host}:{grpc_port}"
        # the server writes to it for the interface's lifetime; closed in close()
        self._log_file = tempfile.NamedTemporaryFile(prefix="argonic-fallback-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(grpc_port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _stop_process, self.process)
        try:
            wait_ready(self.address, self.model_name, self.startup_timeout_s, self.process)
        except FallbackError as exc:
            exited_early = self.process.poll() is not None
            tail = self.log_tail()
            self.stop()
            if exited_early and not last_try:
                log.warning("fallback server exited at start (%s); trying another port", exc)
                return False
            raise FallbackError(f"{exc}; server log:\n{tail}") from None
        return True

    @property
    def metrics_url(self) -> str:
        """URL of the server's Prometheus /metrics page."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote."""
        if self._log_file is None:
            return ""
        text = Path(self._log_file.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        """Whether the server process is running."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the server process (its whole process group) and remove its log."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
