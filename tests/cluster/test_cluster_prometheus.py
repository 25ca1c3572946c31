"""Prometheus for real against argonic replicas: the autoscaling metric and the dashboard.

Runs Debian's prometheus binary (config from deploy/prometheus/, 1 s scrapes, temporary
storage, loopback port) against 2 `argonic serve` replicas behind nginx (argonic.cluster
writes the file_sd target list Prometheus reads). Load: first one client (light), then
six (heavy), then none. Through Prometheus's HTTP API it checks that SuperSONIC's metric,
mean queue time per execution, is higher under heavy load than under light load and has no
value (0/0) once idle, and that every Grafana dashboard query returns data.

The metric's windows are [3s] here instead of [30s] so the test takes seconds, not minutes;
the [30s] queries themselves are checked for data as they are.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml  # PyYAML (test extra)
from support.cluster import cluster_repository
from support.models import random_patches

from argonic import procs
from argonic.procs import free_port_block

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
QUEUE_TIME = (
    "sum(rate(nv_inference_queue_duration_us[{w}])) / "
    "(sum(rate(nv_inference_exec_count[{w}]))*1000)"
)

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("nginx") is None,
    reason="needs Debian packages prometheus and nginx",
)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Prometheus:
    def __init__(self, address: str) -> None:
        self.api = f"http://{address}/api/v1"

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        out = _get(f"{self.api}/query?{urllib.parse.urlencode(params)}")
        assert out["status"] == "success", out
        return out["data"]["result"]

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[tuple[float, float]]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
        out = _get(f"{self.api}/query_range?{urllib.parse.urlencode(params)}")
        assert out["status"] == "success", out
        if not out["data"]["result"]:
            return []
        (series,) = out["data"]["result"]
        return [(float(t), float(v)) for t, v in series["values"]]


@pytest.fixture
def prometheus_over_cluster(tmp_path):
    from argonic.cluster import Cluster

    repo = cluster_repository(tmp_path / "models", max_queue=0, max_batch=1024, layers=1)
    base = free_port_block(6)
    run_dir = tmp_path / "run"
    cluster = Cluster(
        repo,
        2,
        grpc_port=base,
        replica_port=base + 1,
        metrics_port=base + 3,
        run_dir=run_dir,
        start_timeout_s=60,
    )
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "argonic-rules.yml")]
    (job,) = config["scrape_configs"]
    job["file_sd_configs"] = [
        {"files": [str(run_dir / "prometheus-targets.json")], "refresh_interval": "1s"}
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"{HOST}:{base + 5}"
    # Prometheus first: it starts while the replicas load, and finds them through file_sd.
    proc = procs.start(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        log=tmp_path / "prometheus.log",
    )
    try:
        with cluster:
            prom = Prometheus(address)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if (
                        len([r for r in prom.query('up{job="argonic"}') if r["value"][1] == "1"])
                        == 2
                    ):
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            else:
                pytest.fail(
                    "Prometheus never scraped both replicas; log:\n"
                    + (tmp_path / "prometheus.log").read_text()
                )
            yield prom, cluster
    finally:
        procs.stop(procs.Child.of(proc), timeout_s=30)


def _load(endpoint: str, clients: int, seconds: float, x: np.ndarray) -> int:
    """``clients`` threads sending ModelInfer back to back for ``seconds``; returns requests."""
    import tritonclient.grpc as tc

    done = [0] * clients
    stop_at = time.monotonic() + seconds

    def run(i: int) -> None:
        client = tc.InferenceServerClient(endpoint)
        inp = tc.InferInput("main_input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while time.monotonic() < stop_at:
            client.infer("emtrkmichelid", [inp])
            done[i] += 1
        client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def _finite(values: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [v for t, v in values if start <= t <= end and math.isfinite(v)]


def test_queue_time_metric_follows_load_and_dashboard_has_data(prometheus_over_cluster):
    prom, cluster = prometheus_over_cluster
    x = random_patches(256, seed=2)
    t0 = time.time()
    light = _load(cluster.endpoint, 1, 3.5, x)
    t1 = time.time()
    heavy = _load(cluster.endpoint, 6, 3.5, x)
    t2 = time.time()
    time.sleep(2.5)  # two scrapes, so the last counters of the heavy phase are in
    # Every dashboard query has data at the end of the heavy phase (GPU: none without a GPU).
    dash = json.loads((ROOT / "deploy" / "grafana" / "argonic.json").read_text())
    empty = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "3s")
            result = prom.query(expr, at=t2)
            finite = [float(r["value"][1]) for r in result if math.isfinite(float(r["value"][1]))]
            if not finite:
                empty.append((panel["title"], expr))
    assert [e for e in empty if "nv_gpu_utilization" not in e[1]] == []
    assert prom.query("nv_gpu_utilization") == []  # CPU-only machine: the GPU panel stays empty
    # The recording rule and the KEDA query itself ([30s] windows) have a value under load.
    assert math.isfinite(
        float(prom.query("argonic:queue_time_per_execution_ms:rate30s", at=t2)[0]["value"][1])
    )
    keda = float(prom.query(QUEUE_TIME.format(w="30s"), at=t2)[0]["value"][1])
    assert keda > 0
    time.sleep(4.5)  # idle
    t3 = time.time()
    series = prom.query_range(QUEUE_TIME.format(w="3s"), t0, t3, step=0.5)
    light_ms = _finite(series, t0 + 3, t1)
    heavy_ms = _finite(series, t1 + 3, t2)
    idle_ms = _finite(series, t2 + 4.0, t3)
    print(
        f"requests: light {light}, heavy {heavy}; queue time per execution (ms): "
        f"light median {np.median(light_ms):.3f}, heavy median {np.median(heavy_ms):.3f}, "
        f"idle values {idle_ms}"
    )
    assert light_ms and heavy_ms
    assert np.median(heavy_ms) > 2 * np.median(light_ms)
    # Idle: no executions, 0/0 -> NaN (no finite value), i.e. nothing for KEDA to scale on.
    assert idle_ms == [] or max(idle_ms) < np.median(heavy_ms) / 10
