"""A local `argonic serve` started by the remote client when no configured server answers.

The server runs as a child process on a free loopback port with a given model repository.
It never outlives its client: it is stopped by ``stop()``, by a finaliser at interpreter
exit, and on Linux by the kernel (``PR_SET_PDEATHSIG``) if the client process dies
without cleaning up. It runs in its own session, so a Ctrl-C at the terminal reaches the
client only, which then stops the server itself. (Linux sends the death signal when the
*thread* that started the server ends: start it from a long-lived thread; the remote
client restarts a fallback server that died, up to ``retries + 1`` times.)

The processes themselves (ports, start, readiness loop, stop) are argonic.procs'.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from argonic import ArgonicError, procs
from argonic.procs import free_port

__all__ = ["FallbackError", "LocalServer", "free_port", "wait_ready"]

log = logging.getLogger(__name__)


class FallbackError(ArgonicError):
    """The local fallback server could not be started."""


def wait_ready(
    address: str, model_name: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ServerReady and ModelReady on ``address`` until both say yes.

    Raises FallbackError when ``timeout_s`` passes, ``process`` exits first, or the
    server's RepositoryIndex says the model failed to load (with its reason).
    """
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def ready() -> bool:
            try:
                if (
                    stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1.0).ready
                    and stub.ModelReady(
                        service_pb2.ModelReadyRequest(name=model_name), timeout=1.0
                    ).ready
                ):
                    return True
                _raise_if_load_failed(stub, address, model_name)
            except grpc.RpcError:
                pass
            return False

        try:
            procs.wait_until(ready, timeout_s, process=process, what=f"server at {address}")
        except procs.NotReady as exc:
            if exc.returncode is not None:
                raise FallbackError(str(exc)) from None
            raise FallbackError(
                f"server at {address} was not ready with model '{model_name}' after {timeout_s:g} s"
            ) from None


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
        """The server's command line (started so that it dies with this process)."""
        return procs.serve_command(
            self.model_repository,
            grpc_port=grpc_port,
            metrics_port=self.metrics_port,
            host=self.host,
        )

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
        try:
            self.process = procs.start(
                self.command(grpc_port), log=self._log_file, new_session=True, die_with_parent=True
            )
        except procs.ProcessError as exc:
            self.stop()
            raise FallbackError(f"cannot start a fallback server: {exc}") from None
        self._finalizer = weakref.finalize(
            self, procs.stop, procs.Child.of(self.process, group=True), 5.0, 5.0
        )
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
        return procs.log_tail(self._log_file.name, lines)

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
