"""A tiny scaling study end to end (local argonic serve, 2 emulated clients, mini detector):
its outputs' structure and their consistency with independent counts."""

import csv
import json
import math
import multiprocessing
import os

import numpy as np
import pytest

from argonic import procs
from argonic.settings import SettingsError, StudySettings, load_settings
from argonic.study.driver import event_order, run_study
from argonic.study.latency_model import LatencyModel
from argonic.study.scrape import parse_metrics
from argonic.study.sizing import servers_needed, sizing_report

PATCH_BYTES = 48 * 48 * 4
BATCH = 20  # small requests so that planes need several


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    before = set(procs.children(os.getpid()))
    cfg = StudySettings(
        output=str(out),
        clients=[1, 2],
        events=1,
        pool=2,
        batch_size=BATCH,
        detector="mini",
        max_patches=60,
        scrape_interval_s=0.2,
        show_progress=False,
        farms=[400],
        farm_servers=[1, 4],
    )
    summary = run_study(cfg)
    leftover = set(procs.children(os.getpid())) - before
    return out, summary, leftover


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_no_process_outlives_the_study(study):
    _, _, leftover = study
    assert not leftover
    assert not multiprocessing.active_children()


def test_one_row_per_client_event_with_positive_module_times(study):
    out, _, _ = study
    rows = _read(out / "results.csv")
    assert sorted((int(r["n_clients"]), int(r["client"])) for r in rows) == [(1, 0), (2, 0), (2, 1)]
    for r in rows:
        assert r["client_cpu"] == "emulated"
        for key in ("read_s", "hitfinding_s", "emtrackmichelid_s", "inference_s", "total_s"):
            assert float(r[key]) > 0
        parts = float(r["read_s"]) + float(r["hitfinding_s"]) + float(r["emtrackmichelid_s"])
        assert float(r["total_s"]) == pytest.approx(parts, rel=1e-6, abs=1e-6)
        assert float(r["end_s"]) > float(r["start_s"])


def test_requests_and_bytes_follow_from_the_patches(study):
    out, _, _ = study
    workload = json.loads((out / "workload.json").read_text())
    patches = np.load(out / "patches.npy", mmap_mode="r")
    assert len(patches) == sum(w["patches"] for w in workload)
    for r in _read(out / "results.csv"):
        w = workload[int(r["event_index"])]
        assert int(r["patches"]) == w["patches"] == sum(w["plane_patches"]) <= 60
        # one request per BATCH patches of each plane (planes are sent separately)
        assert int(r["requests"]) == sum(math.ceil(c / BATCH) for c in w["plane_patches"])
        raw = int(r["patches"]) * PATCH_BYTES
        assert raw <= int(r["bytes_sent"]) <= raw + 512 * int(r["requests"])


def test_server_counts_equal_what_the_clients_sent(study):
    out, summary, _ = study
    rows = _read(out / "results.csv")
    samples = _read(out / "server_metrics.csv")
    assert len(samples) >= 3
    first, last = samples[0], samples[-1]  # first: after the warm-up, before any client
    assert float(last["nv_inference_count"]) - float(first["nv_inference_count"]) == sum(
        int(r["patches"]) for r in rows
    )
    assert float(last["nv_inference_request_success"]) - float(
        first["nv_inference_request_success"]
    ) == sum(int(r["requests"]) for r in rows)
    assert float(last["nv_inference_request_failure"]) == 0
    for p in summary["per_n"]:
        assert p["server"]["inference_count_equals_patches_sent"] is True
        assert p["client_events"] == p["n_clients"]
        hist = p["batch_histogram"]
        assert sum(hist) == p["server"]["executions"] > 0


def test_summary_plots_and_labels(study):
    out, summary, _ = study
    on_disk = json.loads((out / "summary.json").read_text())
    assert (
        on_disk["label"].startswith("emulated client CPU") and summary["label"] == on_disk["label"]
    )
    assert [p["n_clients"] for p in on_disk["per_n"]] == [1, 2]
    fit = on_disk["fit"]
    assert len(fit["points"]) == 2 and fit["t_flat"] > 0 and fit["t_gpu"] > 0
    assert [m["module"] for m in on_disk["table3"]["modules"]] == [
        "read",
        "hitfinding",
        "emtrackmichelid",
        "total",
    ]
    assert on_disk["sizing"]["rows"]
    for png in ("module_time_vs_clients.png", "server_over_time.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000


def test_bad_options_are_refused():
    for override, key in (
        ("study.client_cpu=fast", "client_cpu"),
        ('study.server="nowhere"', "server"),
        ("study.clients=[0, 2]", "clients"),
        ("study.cpu_scale=2.0", "cpu_scale"),  # with client_cpu real, below
    ):
        extra = ["study.client_cpu=real"] if key == "cpu_scale" else []
        with pytest.raises(SettingsError, match=key):
            load_settings(overrides=[override, *extra])


def test_parse_metrics_reads_tritons_exposition():
    text = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="emtrkmichelid",version="1"} 1693
nv_inference_count{model="emtrkmichelid",version="2"} 7
nv_inference_count{model="other",version="1"} 99
nv_inference_exec_count{model="emtrkmichelid",version="1"} 7
nv_cpu_utilization 0.5
argonic_execution_batch_size_bucket{model="emtrkmichelid",version="1",le="1.0"} 0
argonic_execution_batch_size_bucket{model="emtrkmichelid",version="1",le="256.0"} 7
argonic_execution_batch_size_bucket{model="emtrkmichelid",version="1",le="+Inf"} 7
"""
    m = parse_metrics(text, "emtrkmichelid")
    assert m["nv_inference_count"] == 1700
    assert m["nv_inference_exec_count"] == 7
    assert m["nv_cpu_utilization"] == 0.5
    assert (
        m["argonic_execution_batch_size_le_256"] == 7
        and m["argonic_execution_batch_size_le_1"] == 0
    )


def test_sizing_with_the_papers_parameters():
    # the paper: ~70 clients per T4 (t_ideal 125 s, t_gpu 1.77 s); 400 clients need 6 GPUs
    model = LatencyModel(t_cpu=330.0, p=0.65, t_gpu=1.77, t_latency=7.0 + 2.05 + 0.38)
    assert servers_needed(model, 400) == math.ceil(400 / model.optimal_ratio) == 6
    report = sizing_report(model, farms=[400], servers=[4])
    four = next(r for r in report["rows"] if r["servers"] == 4)
    assert four["saturated"] and four["t_event_s"] == pytest.approx(model.t_gpu * 100, rel=0.01)
    six = next(r for r in report["rows"] if r["servers"] == 6)
    assert not six["saturated"] and six["t_event_s"] == pytest.approx(model.t_ideal)


def test_event_order_cycles_the_pool_differently_per_client():
    orders = [event_order(c, 8, 8) for c in range(6)]
    for o in orders:
        assert sorted(o) == list(range(8))  # every event once per cycle
    assert len({tuple(o) for o in orders}) == 6  # no two clients in lockstep
    long = event_order(0, 20, 8)
    assert len(long) == 20 and sorted(long[:8]) == sorted(long[8:16]) == list(range(8))
