"""Replicas behind nginx for real: `argonic cluster up/down`, a replica killed mid-run, overload.

Every test runs real `argonic serve` processes and a real nginx (Debian package nginx) on
loopback ports, with a tiny model of the production model's signature, and stops all of
them (Cluster is a context manager; `argonic cluster down` for the CLI test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tomllib
from support.cluster import cluster_repository, metric, remote_config
from support.models import ort_scores, random_patches

from argonic import procs
from argonic.procs import free_port_block

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx not installed (Debian package nginx)"
)

HOST = "127.0.0.1"


def _cluster_up_cli(repo: Path, base: int, run_dir: Path, *extra: str) -> list[str]:
    """`argonic cluster up` for 2 replicas on the port block starting at ``base``."""
    return [
        sys.executable,
        "-m",
        "argonic.cli",
        "cluster",
        "up",
        "--json",
        "--replicas",
        "2",
        "--model-repository",
        str(repo),
        "--grpc-port",
        str(base),
        "--replica-port",
        str(base + 1),
        "--metrics-port",
        str(base + 3),
        "--run-dir",
        str(run_dir),
        *extra,
    ]


def _cluster(repo: Path, run_dir: Path, replicas: int, **kw):
    from argonic.cluster import Cluster

    return Cluster.on_free_ports(repo, replicas, run_dir=run_dir, start_timeout_s=60, **kw)


def _scrape(endpoint: str) -> str:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=60) as r:
        return r.read().decode()


def _inference_count(endpoint: str) -> int:
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(endpoint)
    try:
        stats = client.get_inference_statistics("emtrkmichelid", as_json=True)
    finally:
        client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats["model_stats"])


def _answered_by(access_log: Path) -> dict[str, int]:
    """Calls per replica that got HTTP 200 from nginx's access log (the last upstream tried).

    HTTP 200 is not gRPC success: a gRPC error (UNAVAILABLE from a draining replica) travels
    in the trailers of an HTTP 200 response, which nginx does not look into."""
    counts: dict[str, int] = {}
    for line in access_log.read_text().splitlines():
        m = re.search(r"upstream=(.*?) upstream_status=(.*?) time=", line)
        last, status = m.group(1).split(", ")[-1], m.group(2).split(", ")[-1]
        if status == "200":
            counts[last] = counts.get(last, 0) + 1
    return counts


def _pids_gone(pids: list[int]) -> bool:
    return not any(procs.alive(p) for p in pids)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return cluster_repository(tmp_path_factory.mktemp("models"))


def test_cli_cluster_up_status_down(repo, tmp_path):
    """`argonic cluster up` leaves replicas + nginx running; results through it are exact."""
    base = free_port_block(5)
    run_dir = tmp_path / "run"
    cli = [sys.executable, "-m", "argonic.cli", "cluster"]
    common = ["--run-dir", str(run_dir)]
    up = subprocess.run(
        _cluster_up_cli(repo, base, run_dir, "--gpus", "0,1", "--set", "server.drain_timeout_s=10"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    state = json.loads(up.stdout) if up.returncode == 0 else None
    pids = [p["pid"] for p in state["processes"]] if state else []
    try:
        assert up.returncode == 0, up.stderr
        assert state["endpoint"] == f"{HOST}:{base}"
        assert json.loads((run_dir / "cluster.json").read_text())["endpoint"] == state["endpoint"]
        targets = json.loads((run_dir / "prometheus-targets.json").read_text())
        assert [t["targets"] for t in targets] == [[f"{HOST}:{base + 3}"], [f"{HOST}:{base + 4}"]]
        replicas = [p for p in state["processes"] if p["role"] == "replica"]
        server_toml = run_dir / "server.toml"
        with server_toml.open("rb") as f:  # the replicas' [server] table, one file for all
            assert tomllib.load(f)["server"]["drain_timeout_s"] == 10
        for i, p in enumerate(replicas):  # one GPU per replica; the settings passed on
            environ = Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
            assert f"CUDA_VISIBLE_DEVICES={i}".encode() in environ
            assert p["argv"][-2:] == ["--config", str(server_toml)]
        status = subprocess.run([*cli, "status", "--json", *common], capture_output=True, text=True)
        assert json.loads(status.stdout)["serving"] is True

        from argonic.inference.remote import RemoteInterface

        x = random_patches(1693, seed=1)
        with RemoteInterface(remote_config(repo, [state["endpoint"]], batch_size=400)) as remote:
            got = remote.predict(x)
        np.testing.assert_allclose(got, ort_scores(repo, x), rtol=1e-5, atol=1e-7)
        # Both replicas answered (least_conn spreads the requests), as nginx's log shows.
        log = (run_dir / "nginx-access.log").read_text()
        assert f"upstream={HOST}:{base + 1}" in log and f"upstream={HOST}:{base + 2}" in log
        # Each patch inferred exactly once over the replicas (ModelStatistics, Triton's RPC).
        served = [_inference_count(ep) for ep in state["replica_endpoints"]]
        assert sum(served) == 1693 and all(n > 0 for n in served), served
    finally:
        down = subprocess.run(
            [*cli, "down", "--json", *common], capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["still_running"] == 0
    _wait_for(lambda: _pids_gone(pids), 10)
    again = subprocess.run([*cli, "status", "--json", *common], capture_output=True, text=True)
    assert json.loads(again.stdout)["serving"] is False


def test_cluster_refuses_a_bad_server_setting_before_starting_anything(repo, tmp_path):
    run_dir = tmp_path / "run"
    up = subprocess.run(
        _cluster_up_cli(repo, free_port_block(5), run_dir, "--set", "server.drain_timeout=10"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 2 and "unknown key 'server.drain_timeout'" in up.stderr
    assert not (run_dir / "cluster.json").exists()


def test_foreground_cluster_restarts_a_dead_replica_and_stops_on_sigterm(repo, tmp_path):
    """`cluster up --foreground` supervises: a killed replica comes back; SIGTERM ends all."""
    from argonic.cluster import health_check

    base = free_port_block(5)
    run_dir = tmp_path / "run"
    sup = subprocess.Popen(
        _cluster_up_cli(repo, base, run_dir, "--foreground"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        _wait_for(lambda: health_check(f"{HOST}:{base}"), 60)
        state = json.loads((run_dir / "cluster.json").read_text())
        pids = [p["pid"] for p in state["processes"]]
        victim = [p["pid"] for p in state["processes"] if p["role"] == "replica"][0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: _pids_gone([victim]), 10)
        _wait_for(lambda: health_check(f"{HOST}:{base + 1}"), 60)  # restarted on its port
        state = json.loads((run_dir / "cluster.json").read_text())
        pids += [p["pid"] for p in state["processes"]]
    finally:
        sup.send_signal(signal.SIGTERM)
        out, err = sup.communicate(timeout=60)
    assert sup.returncode == 0, err
    summary = json.loads(out)
    assert summary["restarts"] == 1 and summary["killed"] == 0
    _wait_for(lambda: _pids_gone(pids), 10)


def _wait_for(predicate, timeout_s: float) -> None:
    procs.wait_until(predicate, timeout_s, what=getattr(predicate, "__name__", "condition"))


def test_cluster_refuses_busy_ports_and_bad_input(repo, tmp_path):
    from argonic.cluster import ClusterError

    cluster = _cluster(repo, tmp_path / "run", 1)
    import socket

    with socket.socket() as s:
        s.bind((HOST, cluster.grpc_port))
        s.listen()
        with pytest.raises(ClusterError, match=f"port.*in use.*{cluster.grpc_port}"):
            cluster.start()
    assert not cluster.replicas  # nothing was started
    with pytest.raises(ClusterError, match="not a directory"):
        _cluster(tmp_path / "missing", tmp_path / "run2", 1)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "drain"])
def test_replica_killed_mid_run_every_patch_answered_once(repo, tmp_path, sig):
    """3 replicas, 3 clients; replica 1 crashes (SIGKILL) or drains (SIGTERM, a rolling
    restart) mid-run and is restarted: every patch answered, results exact."""
    from argonic.inference.remote import RemoteInterface

    n_clients, n_patches = 3, 3000
    inputs = [random_patches(n_patches, seed=10 + c) for c in range(n_clients)]
    with _cluster(repo, tmp_path / "run", 3) as cluster:
        results: list = [None] * n_clients
        stats: list = [None] * n_clients
        remotes = [
            RemoteInterface(
                remote_config(
                    repo, [cluster.endpoint], batch_size=200, mode="async", max_in_flight=2
                )
            )
            for _ in range(n_clients)
        ]

        def client(c: int) -> None:
            try:
                results[c] = remotes[c].predict(inputs[c])
                stats[c] = remotes[c].stats()["last_call"]
            except Exception as exc:
                results[c] = exc

        threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
        for t in threads:
            t.start()
        # Kill once every client is under way, while requests are in flight.
        deadline = time.monotonic() + 60
        while any(r.progress[0] < n_patches // 4 for r in remotes) and time.monotonic() < deadline:
            time.sleep(0.005)
        before_kill = _answered_by(cluster.run_dir / "nginx-access.log")
        cluster.kill_replica(1, sig)
        time.sleep(0.3)
        cluster.restart_replica(1)
        for t in threads:
            t.join(timeout=120)
        for r in remotes:
            r.close()
        after = _answered_by(cluster.run_dir / "nginx-access.log")
        from argonic.cluster import health_check

        restarted_serving = health_check(cluster.replica_endpoints()[1])
    for c in range(n_clients):
        assert not isinstance(results[c], Exception), results[c]
        np.testing.assert_allclose(results[c], ort_scores(repo, inputs[c]), rtol=1e-5, atol=1e-7)
    assert all(s["patches"] == n_patches for s in stats)
    # nginx's log: every replica answered before the kill; the others carried on after it.
    victim, others = cluster.replica_endpoints()[1], cluster.replica_endpoints()[::2]
    assert all(before_kill.get(ep, 0) > 0 for ep in cluster.replica_endpoints()), before_kill
    assert sum(after[ep] for ep in others) > sum(before_kill[ep] for ep in others), after
    assert after[victim] >= before_kill[victim]
    assert restarted_serving


def test_overload_is_bounded_and_retries_absorb_it(tmp_path):
    """max_queue_size 2: excess requests get UNAVAILABLE; the client's retries absorb them."""
    import tritonclient.grpc as tc

    from argonic.inference.remote import RemoteInterface

    repo = cluster_repository(tmp_path / "models", max_queue=2, max_batch=512, layers=1)
    x = random_patches(512, seed=3)
    reference = ort_scores(repo, x)
    with _cluster(repo, tmp_path / "run", 1) as cluster:
        metrics_at = cluster.metrics_endpoints()[0]
        _scrape(metrics_at)  # the first scrape is slow (the server imports torch): not under load
        pending_max = [0.0]
        scrapes = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                pending = metric(_scrape(metrics_at), "nv_inference_pending_request_count")
                pending_max[0] = max(pending_max[0], pending)
                scrapes[0] += 1

        codes: list = []

        def raw_client() -> None:
            client = tc.InferenceServerClient(cluster.endpoint)
            inp = tc.InferInput("main_input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            for _ in range(3):
                try:
                    client.infer("emtrkmichelid", [inp], client_timeout=60)
                    codes.append("OK")
                except tc.InferenceServerException as exc:
                    codes.append((exc.status(), exc.message()))
            client.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=raw_client) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        rejected = [c for c in codes if c != "OK"]
        # The same load through argonic's client: every request answered, retries used.
        outs: list = []

        def remote_client() -> None:
            with RemoteInterface(
                remote_config(repo, [cluster.endpoint], batch_size=512, retries=50, backoff_s=0.02)
            ) as r:
                outs.append((r.predict(np.concatenate([x, x, x])), r.stats()["last_call"]))

        threads = [threading.Thread(target=remote_client) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()
        watcher.join()
        failures = metric(_scrape(metrics_at), "nv_inference_request_failure")
    assert len(codes) == 30 and rejected, "10 clients x 3 requests never overflowed a queue of 2"
    assert all(
        c[0] == "StatusCode.UNAVAILABLE" and "maximum queue size" in c[1] for c in rejected
    ), rejected
    # At most max_queue_size waiting + one request executing (executions hold <= 512 rows).
    assert scrapes[0] > 3 and pending_max[0] <= 2 + 1
    assert len(outs) == 10
    for got, _ in outs:
        np.testing.assert_allclose(got, np.concatenate([reference] * 3), rtol=1e-5, atol=1e-7)
    assert sum(s["retries"] for _, s in outs) > 0 and failures >= len(rejected)


def test_client_fails_over_from_the_balancer_to_another_server(repo, tmp_path):
    """servers = [balancer, standalone replica]: when nginx dies, the client moves on."""
    from argonic.inference.remote import RemoteInterface

    port = free_port_block(2)
    standalone = procs.start(
        procs.serve_command(repo, grpc_port=port, metrics_port=port + 1, host=HOST)
    )
    try:
        from argonic.cluster import health_check

        with _cluster(repo, tmp_path / "run", 2) as cluster:
            _wait_for(lambda: health_check(f"{HOST}:{port}"), 60)
            x = random_patches(4000, seed=5)
            remote = RemoteInterface(
                remote_config(repo, [cluster.endpoint, f"{HOST}:{port}"], batch_size=200)
            )
            result: list = []
            worker = threading.Thread(target=lambda: result.append(remote.predict(x)))
            worker.start()
            while remote.progress[0] < 1000 and worker.is_alive():
                time.sleep(0.005)
            cluster.kill_balancer()  # the balancer dies (master and workers, SIGKILL)
            worker.join(timeout=120)
            used = remote.stats()["last_call"]["requests_by_server"]
            remote.close()
    finally:
        procs.stop(procs.Child.of(standalone), timeout_s=60)
    assert result, "predict did not finish"
    np.testing.assert_allclose(result[0], ort_scores(repo, x), rtol=1e-5, atol=1e-7)
    # Requests went through the balancer until it died, then to the standalone server.
    assert used[cluster.endpoint] > 0 and used[f"{HOST}:{port}"] > 0, used
