"""The farm model (argonic.study.farm): exact single-client times, the closed system's
throughput bound, links, the KEDA rule, the paper's saturation points, and `argonic farm`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from argonic.study.farm import (
    Autoscaler,
    ClientModel,
    EventModel,
    FarmConfig,
    ServiceModel,
    paper_config,
    simulate,
    split_rows,
    study_client,
)
from argonic.study.farm_report import PAPER_SATURATION, reproduce_paper


def _config(clients: int, **kw) -> FarmConfig:
    event = EventModel(t_other_s=1.0, t_preprocess_s=0.05, requests=(100, 100, 50))
    client = ClientModel((event,), bytes_per_row=1000.0, rtt_s=0.01, request_overhead_s=0.002)
    service = ServiceModel(overhead_s=0.001, rows_per_s=10_000.0, max_rows=256)
    return FarmConfig(clients, 1, client, service, **{"events": 5, **kw})


def test_one_client_time_is_the_sum_of_its_parts():
    r = simulate(_config(1))
    per_request = [0.01 + 0.002 + 0.001 + rows / 10_000 for rows in (100, 100, 50)]
    assert r["module_s"] == pytest.approx(0.05 + sum(per_request))
    assert r["event_s"] == pytest.approx(1.0 + r["module_s"])


def test_many_clients_are_bounded_by_the_server():
    """Closed system: events/s <= clients / ideal event time and <= server capacity."""
    light, heavy = simulate(_config(2, events=20)), simulate(_config(200, events=20))
    ideal = simulate(_config(1))["event_s"]
    assert light["events_per_s"] == pytest.approx(2 / ideal, rel=0.05)
    alone = 1 / (3 * 0.001 + 250 / 10_000)  # events/s, every request executed alone
    rows_bound = 10_000 / 250  # events/s, no overhead at all
    assert 0.95 * alone <= heavy["events_per_s"] <= 1.01 * rows_bound  # saturated
    assert heavy["module_s"] > 10 * light["module_s"]


def test_dynamic_batching_merges_queued_requests():
    """With a per-execution overhead, merging (max_rows 256) beats one request per execution."""
    merged = simulate(_config(200, events=10))
    alone = simulate(
        _config(200, events=10).__class__(
            **{**_config(200, events=10).__dict__, "service": ServiceModel(0.001, 10_000.0, 100)}
        )
    )
    assert merged["events_per_s"] > alone["events_per_s"]


def test_a_site_link_adds_transmission_time():
    fast = simulate(_config(1))
    slow = simulate(_config(1, site_gbps=0.001))  # 1 Mbit/s
    assert slow["module_s"] - fast["module_s"] == pytest.approx(250 * 1000 * 8 / 1e6)


def test_keda_rule_scales_out_a_saturated_farm_and_relieves_it():
    a = Autoscaler(threshold_ms=50.0, window_s=10.0, poll_s=5.0, startup_s=20.0)
    r = simulate(_config(200, events=40, autoscaler=a))
    servers = [s for _, s, _ in r["timeline"]]
    metrics = [m for _, _, m in r["timeline"]]
    assert servers[0] == 1 and r["servers_at_end"] > 1
    assert max(metrics) > a.threshold_ms
    relieved = [t for t, _, m in r["timeline"] if m <= a.threshold_ms and t > 20.0]
    assert relieved, "the metric never came back below the threshold"
    # the HPA's scale-up policy: at most max(double, +4) per poll
    assert all(b <= max(2 * s, s + 4) for s, b in zip(servers, servers[1:], strict=False))


def test_split_rows_and_study_client():
    assert split_rows(10, 4) == (4, 4, 2) and split_rows(3, 1693) == (3,)
    workload = [
        {
            "read_s": 0.01,
            "hitfinding_s": 0.02,
            "plane_patches": [100, 5],
            "plane_patches_s": [0.001, 0.002],
        }
    ]
    client = study_client(workload, batch_size=64, cpu_scale=100, request_overhead_s=0.003)
    (event,) = client.events
    assert event.t_other_s == pytest.approx(3.0) and event.t_preprocess_s == pytest.approx(0.3)
    assert event.requests == (64, 36, 5)


def test_paper_farm_saturates_where_the_paper_measured():
    """4 T4s: the knee of the simulated curves within 15% of the paper's ~190 (batch 235)
    and ~270 (batch 1693) clients."""
    result = reproduce_paper([1, 150, 200, 250, 350])
    for batch in ("235", "1693"):
        p = result[batch]
        assert abs(p["knee"] - PAPER_SATURATION[int(batch)]) / PAPER_SATURATION[int(batch)] < 0.15
    assert result["1693"]["knee"] > result["235"]["knee"]  # larger requests: fewer round trips


def test_plane_mode_needs_fewer_bytes_not_fewer_gpus():
    patch = simulate(paper_config(40, 1, mode="patch", events=2))
    plane = simulate(paper_config(40, 1, mode="plane", events=2))
    assert plane["uplink_gbps_per_site"] < patch["uplink_gbps_per_site"] / 100
    assert math.isclose(plane["module_s"], patch["module_s"], rel_tol=0.3)


@pytest.mark.slow
def test_argonic_farm_command(tmp_path):
    out = tmp_path / "farm"
    command = ["farm", "--clients", "100", "--paper-clients", "1", "300", "--json", "-o"]
    run = subprocess.run(
        [sys.executable, "-m", "argonic.cli", *command, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert {s["mode"] for s in report["sizing"]} == {"patch", "plane"}
    assert all(s["gpus"] >= 1 for s in report["sizing"])
    assert report["autoscaling"]["end_gpus"] >= report["autoscaling"]["start_gpus"]
    assert (out / "farm.json").exists() and (out / "farm_module_time_vs_clients.png").exists()
