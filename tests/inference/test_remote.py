"""RemoteInterface against `argonic serve` over real loopback sockets, faults included.

Truth is ONNX Runtime run in this process on the same patches and the same tiny model
(the production names and shapes, a linear layer per head), never the client's output.
Every server process a test starts is killed (its whole process group) when it ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.models import MODEL, ort_scores, random_patches, tiny_repository
from support.remote import assert_same_scores, kill, remote, serve_process

from argonic import ArgonicError, procs
from argonic.inference import InvalidPatchesError
from argonic.inference.base import InterfaceError
from argonic.inference.remote import ModelMismatchError, RemoteInferenceError, RemoteInterface
from argonic.procs import free_port
from argonic.server import running_server


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[str]:
    with serve_process(repository) as (address, _):
        yield address


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return random_patches(3000)


@pytest.fixture(scope="module")
def truth(repository: Path, patches: np.ndarray) -> np.ndarray:
    return ort_scores(repository, patches)


# --- configuration (no server) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "fast"}, "mode"),
        ({"servers": ["nohost"]}, "host:port"),
        ({"compression": "zip"}, "compression"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"colour": "red"}, "unknown"),
        ({"root_cert": "/nonexistent.pem"}, "no such file"),
    ],
)
def test_bad_configuration_is_named(repository: Path, options: dict, message: str) -> None:
    with pytest.raises(ArgonicError, match=message):
        remote(**{"servers": ["127.0.0.1:1"], "repository": repository, **options})


def test_expected_sha256_read_from_repository(repository: Path) -> None:
    digest = (repository / MODEL / "1" / "model.onnx.sha256").read_text().split()[0]
    with remote(["127.0.0.1:1"], repository) as interface:
        assert interface.signature.sha256 == digest
    with remote(["127.0.0.1:1"], repository, expected_sha256="") as interface:
        assert interface.signature.sha256 == ""


# --- normal operation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, batch_size, compression",
    [
        ("sync", 235, "none"),
        ("async", 1693, "none"),
        ("async", 100, "gzip"),
        ("sync", 64, "deflate"),
    ],
)
def test_scores_equal_local_onnxruntime(
    server: str,
    repository: Path,
    patches: np.ndarray,
    truth: np.ndarray,
    mode: str,
    batch_size: int,
    compression: str,
) -> None:
    server_stats = "call" if mode == "sync" else "total"
    with remote(
        [server],
        repository,
        mode=mode,
        batch_size=batch_size,
        compression=compression,
        max_in_flight=3,
        token="secret",
        server_stats=server_stats,
    ) as interface:
        assert_same_scores(interface.predict(patches), truth)
        stats = interface.stats()
    last = stats["last_call"]
    assert last["requests"] == -(-len(patches) // batch_size)
    assert last["patches"] == len(patches) and last["failovers"] == 0
    assert last["bytes_sent"] > patches.nbytes and last["bytes_received"] > len(patches) * 16
    assert json.loads(json.dumps(stats)) == stats  # plain data, ready for `argonic reco --json`
    server_side = stats["last_call" if server_stats == "call" else "total"]["server"]
    assert server_side["inferences"] == len(patches)  # ModelStatistics delta
    assert server_side["compute_infer_s"] > 0


def test_preferred_server_takes_all_requests(
    server: str, repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    with running_server(repository) as second:
        for order in ([server, second.url], [second.url, server]):
            with remote(order, repository, mode="async") as interface:
                assert_same_scores(interface.predict(patches[:1000]), truth[:1000])
                assert interface.stats()["last_call"]["requests_by_server"] == {order[0]: 5}


def test_batch_above_max_batch_size_is_split(tmp_path: Path, patches: np.ndarray) -> None:
    repository = tiny_repository(tmp_path, max_batch_size=100)
    with (
        serve_process(repository) as (address, _),
        remote([address], repository, batch_size=1693, mode="async") as interface,
    ):
        assert_same_scores(
            interface.predict(patches[:1000]), ort_scores(repository, patches[:1000])
        )
        assert interface.stats()["last_call"]["requests"] == 10


def test_empty_and_bad_input(server: str, repository: Path) -> None:
    with remote([server], repository) as interface:
        assert interface.predict(np.zeros((0, 48, 48, 1), np.float32)).shape == (0, 4)
        with pytest.raises(InvalidPatchesError, match="shape"):
            interface.predict(np.zeros((3, 48, 48), np.float32))
        with pytest.raises(InvalidPatchesError, match="float32"):
            interface.predict(np.zeros((3, 48, 48, 1), np.float64))
    with pytest.raises(InterfaceError, match="closed"):
        interface.predict(np.zeros((1, 48, 48, 1), np.float32))


# --- faults ---------------------------------------------------------------------------------


def _kill_when_started(
    interface: RemoteInterface, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL
) -> threading.Thread:
    """Signal ``process`` (SIGKILL: its group) once the running predict has some, not all,
    replies; SIGTERM asks `argonic serve` to drain and stop."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, total = interface.progress
            if 0 < done < total:
                break
            time.sleep(0.002)
        if sig == signal.SIGKILL:
            kill(process)
        else:
            process.send_signal(sig)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "mode, sig", [("sync", signal.SIGKILL), ("async", signal.SIGKILL), ("async", signal.SIGTERM)]
)
def test_server_killed_mid_predict_fails_over(
    tmp_path: Path, repository: Path, server: str, mode: str, sig: int
) -> None:
    patches = random_patches(6000, seed=2)
    with (
        serve_process(repository) as (doomed, process),
        remote([doomed, server], repository, mode=mode, batch_size=64) as interface,
    ):
        interface.connect()
        watcher = _kill_when_started(interface, process, sig)
        scores = interface.predict(patches)
        watcher.join()
        last = interface.stats()["last_call"]
        assert process.wait(30) is not None
    assert_same_scores(scores, ort_scores(repository, patches))
    assert last["requests_by_server"].get(doomed, 0) > 0 and last["requests_by_server"][server] > 0
    assert last["failovers"] >= 1


def test_server_killed_mid_predict_without_second_server(repository: Path) -> None:
    patches = random_patches(6000, seed=3)
    with (
        serve_process(repository) as (doomed, process),
        remote([doomed], repository, batch_size=64, retries=2) as interface,
    ):
        interface.connect()
        watcher = _kill_when_started(interface, process)
        with pytest.raises(
            RemoteInferenceError, match=rf"3 round\(s\) over \[{doomed}\].*last error"
        ):
            interface.predict(patches)
        watcher.join()
        assert interface.stats()["last_call"]["retries"] == 2


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A TCP server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_silent_server_times_out_and_fails_over(
    server: str, repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    with (
        silent_listener() as silent,
        remote([silent, server], repository, timeout_s=2.0) as interface,
    ):
        assert_same_scores(interface.predict(patches), truth)
        assert interface.stats()["last_call"]["requests_by_server"] == {server: 13}
    with (
        silent_listener() as silent,
        remote([silent], repository, timeout_s=1.0, retries=0) as interface,
        pytest.raises(RemoteInferenceError, match="DEADLINE_EXCEEDED|SETTINGS frame"),
    ):
        interface.predict(patches[:10])


@contextlib.contextmanager
def proxy(
    target: str, stall_s: float = 0.0, token: str = "", tls: tuple[bytes, bytes] | None = None
) -> Iterator[str]:
    """A gRPC server forwarding every call to ``target``: ModelInfer hangs ``stall_s`` first;
    with ``token``, calls without "authorization: Bearer <token>" are refused; with ``tls``
    (key, certificate PEM), it listens with TLS."""
    channel = grpc.insecure_channel(target, [("grpc.max_receive_message_length", -1)])

    def handler(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        forward = channel.unary_unary(details.method)

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            if (
                token
                and dict(context.invocation_metadata()).get("authorization") != f"Bearer {token}"
            ):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
            if details.method.endswith("/ModelInfer"):
                time.sleep(stall_s)
            return forward(request, timeout=10)

        return grpc.unary_unary_rpc_method_handler(answer)

    class Generic(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return handler(details)

    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", -1)]
    )
    server.add_generic_rpc_handlers([Generic()])
    if tls:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)
        channel.close()


def test_request_deadline_enforced_then_failover(
    server: str, repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    with (
        proxy(server, stall_s=3.0) as stalling,
        remote([stalling, server], repository, timeout_s=1.0, mode="async") as interface,
    ):
        assert_same_scores(interface.predict(patches[:1000]), truth[:1000])
        last = interface.stats()["last_call"]
    assert last["failovers"] >= 1 and last["requests_by_server"][server] == 5


def test_different_model_is_refused(tmp_path: Path, repository: Path, patches: np.ndarray) -> None:
    other_weights = tiny_repository(tmp_path / "weights", seed=7)
    with serve_process(other_weights) as (address, _):
        with (
            remote([address], repository) as interface,
            pytest.raises(
                ModelMismatchError,
                match=rf"server {address} serves a different "
                "emtrkmichelid model: sha256",
            ),
        ):
            interface.predict(patches[:10])
        with remote([address], repository, expected_sha256="") as interface:  # check disabled
            assert interface.predict(patches[:10]).shape == (10, 4)
    other_shape = tiny_repository(tmp_path / "shape", michel=2)
    with (
        serve_process(other_shape) as (address, _),
        remote([address], repository, expected_sha256="") as interface,
        pytest.raises(ModelMismatchError, match=r"michel_netout FP32 \[2\]"),
    ):
        interface.connect()


def test_server_restart_between_predicts(
    repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    port = free_port()
    with remote([f"127.0.0.1:{port}"], repository, retries=3, backoff_s=0.1) as interface:
        with serve_process(repository, port):
            assert_same_scores(interface.predict(patches[:500]), truth[:500])
        with serve_process(repository, port):
            assert_same_scores(interface.predict(patches), truth)


def test_tls_and_token(
    tmp_path: Path, server: str, repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with proxy(server, token="s3cret", tls=(key.read_bytes(), cert.read_bytes())) as secure:
        with remote([secure], repository, root_cert=str(cert), token="s3cret") as interface:
            assert_same_scores(interface.predict(patches[:500]), truth[:500])
        with (
            remote([secure], repository, root_cert=str(cert), token="wrong") as interface,
            pytest.raises(RemoteInferenceError, match="UNAUTHENTICATED"),
        ):
            interface.predict(patches[:10])


# --- fallback server ------------------------------------------------------------------------

FALLBACK_CHILD = """
import os, sys, numpy as np
from argonic.inference import make_interface
cfg = {"interface": "remote", "batch_size": 256, "remote": {"servers": [sys.argv[1]],
       "model_repository": sys.argv[2], "fallback": True, "retries": 0, "timeout_s": 5.0}}
interface = make_interface(cfg)
scores = interface.predict(np.load(sys.argv[3]))
np.save(sys.argv[4], scores)
print(interface.fallback_server.process.pid, interface.stats()["fallback_server"], flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_fallback_server_serves_and_dies_with_its_client(
    tmp_path: Path, repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    np.save(tmp_path / "patches.npy", patches[:700])
    dead = f"127.0.0.1:{free_port()}"
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FALLBACK_CHILD,
            dead,
            str(repository),
            str(tmp_path / "patches.npy"),
            str(tmp_path / "scores.npy"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    fallback_pid = 0
    try:
        line = client.stdout.readline().decode().split() if client.stdout else []
        assert line, "the client printed nothing"
        fallback_pid = int(line[0])
        assert line[1].startswith("127.0.0.1:") and line[1] != dead
        assert_same_scores(np.load(tmp_path / "scores.npy"), truth[:700])
        os.kill(client.pid, signal.SIGKILL)  # no atexit, no close(): only PR_SET_PDEATHSIG
        client.wait(10)
        deadline = time.monotonic() + 15
        while procs.alive(fallback_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.alive(fallback_pid), "the fallback server outlived its client"
    finally:
        kill(client)
        if fallback_pid:
            procs.kill(procs.Child(fallback_pid, group=True))


def test_fallback_stopped_at_close(
    repository: Path, patches: np.ndarray, truth: np.ndarray
) -> None:
    with remote([f"127.0.0.1:{free_port()}"], repository, fallback=True, retries=0) as interface:
        assert_same_scores(interface.predict(patches[:300]), truth[:300])
        process = interface.fallback_server.process
        assert interface.stats()["fallback_server"] is not None
    assert process.poll() is not None


def test_fallback_with_unloadable_model_fails_fast(tmp_path: Path, patches: np.ndarray) -> None:
    broken = tiny_repository(tmp_path)
    (broken / MODEL / "1" / "model.onnx").write_bytes(b"not an onnx model")
    dead = f"127.0.0.1:{free_port()}"
    with remote([dead], broken, fallback=True, expected_sha256="") as interface:
        with pytest.raises(ArgonicError, match="failed to load 'emtrkmichelid'"):
            interface.predict(patches[:10])
        assert not interface.fallback_server.alive
