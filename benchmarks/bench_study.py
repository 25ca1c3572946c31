"""The scaling study's measurements (BENCHMARKS.md, "Study").

Runs `argonic study` configurations against a local argonic serve and writes each one's
CSV, summary.json and PNGs under benchmarks/results/study/<name>/ (the large inputs,
patches.npy and events.h5, are removed), then prints markdown tables.

    python benchmarks/bench_study.py                 # all parts (~8-12 minutes on 2 cores)
    python benchmarks/bench_study.py --only scaling  # one part: scaling, network, batching
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import harness

from argonic.settings import StudySettings
from argonic.study.driver import format_summary, run_study

ROOT = Path(__file__).resolve().parent / "results" / "study"


def _run(name: str, **options) -> dict:
    out = ROOT / name
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    s = run_study(StudySettings(output=str(out), **options))
    s["bench_wall_s"] = time.perf_counter() - t0
    for big in ("patches.npy", "events.h5"):
        (out / big).unlink(missing_ok=True)
    shutil.rmtree(out / "model_repository", ignore_errors=True)
    print(format_summary(s), file=sys.stderr)
    print(f"[{name}: {s['bench_wall_s']:.0f} s]", file=sys.stderr)
    return s


def scaling(events_file: str | None) -> None:
    s = _run(
        "scaling",
        clients=[1, 2, 4, 8, 12, 16, 20, 24, 32],
        events=8,
        batch_size=1693,
        max_patches=300,
        cpu_scale=100.0,
        events_file=events_file,
    )
    fit = s["fit"]
    print(f"\n### Scaling ({s['label']})\n")
    print(
        "| N | module s (all clients running) | std | model s | model error | all events s | "
        "server inf/s | rows/exec | queue ms/request | count = patches sent |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for p, pt in zip(s["per_n"], fit["points"], strict=True):
        sv = p["server"]
        print(
            f"| {p['n_clients']} | {p['module_s_steady_mean']:.3f} | {p['module_s_steady_std']:.3f} | "
            f"{pt['model_s']:.3f} | {pt['relative_error']:+.1%} | {p['module_s_mean']:.3f} | "
            f"{sv['inferences_per_s']:.0f} | {sv['mean_rows_per_execution']:.0f} | "
            f"{sv['queue_ms_per_request']:.1f} | {sv['inference_count_equals_patches_sent']} |"
        )
    print(
        f"\nfit: t_flat {fit['t_flat']:.3f} s, t_gpu {fit['t_gpu']:.3f} s/event ({fit['t_gpu_source']}), "
        f"t_other {fit['t_other']:.3f} s, knee {s['knee_clients']:.1f} clients, optimal "
        f"{fit['optimal_clients_per_server']} per server, max |error| {s['model_max_relative_error']:.1%}"
    )


def network(events_file: str | None) -> None:
    print("\n### Batch 235 vs 1693 through the network emulator (N = 1)\n")
    print(
        "| batch | RTT ms | link Gbps | requests/event | module s | inference s/event | server request s/event | "
        "outside server s/event | MB sent/event |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for rtt, gbps in ((0.0, None), (12.0, 1.0)):
        for batch in (235, 1693):
            s = _run(
                f"net_b{batch}_rtt{rtt:g}",
                clients=[1],
                events=6,
                batch_size=batch,
                rtt_ms=rtt,
                link_gbps=gbps,
                events_file=events_file,
                local_baseline=False,
            )
            results[(rtt, batch)] = s
            for p in s["per_n"]:
                print(
                    f"| {batch} | {rtt:g} | {gbps or '-'} | {p['requests_per_event']:.1f} | "
                    f"{p['module_s_mean']:.3f} | {p['inference_s_mean']:.3f} | "
                    f"{p['server']['request_s_per_event']:.3f} | {p['outside_server_s_per_event']:.3f} | "
                    f"{p['bytes_sent_per_event'] / 1e6:.2f} |"
                )
    print(
        "\ntime outside the server per event, RTT 12 ms + 1 Gbps minus RTT 0 (N = 1), vs the model's "
        "t_travel + t_transmit = requests x RTT + bytes / rate:"
    )
    for batch in (235, 1693):
        a, b = results[(0.0, batch)]["per_n"][0], results[(12.0, batch)]["per_n"][0]
        travel, transmit = a["requests_per_event"] * 0.012, a["bytes_sent_per_event"] * 8 / 1e9
        print(
            f"- batch {batch}: measured {b['outside_server_s_per_event'] - a['outside_server_s_per_event']:+.3f} s, "
            f"model {travel + transmit:.3f} s ({a['requests_per_event']:.1f} requests x 12 ms = {travel:.3f} s "
            f"+ {transmit:.3f} s transmit)"
        )


def batching(events_file: str | None) -> None:
    print("\n### Dynamic batching on vs off (batch 235)\n")
    print("| dynamic batching | N | module s | server inf/s | rows/exec | queue ms/request |")
    print("|---|---:|---:|---:|---:|---:|")
    for on in (True, False):
        s = _run(
            f"dynbatch_{'on' if on else 'off'}",
            clients=[1, 4, 8, 16],
            events=3,
            batch_size=235,
            max_patches=300,
            cpu_scale=100.0,
            dynamic_batching=on,
            events_file=events_file,
        )
        for p in s["per_n"]:
            sv = p["server"]
            print(
                f"| {'on' if on else 'off'} | {p['n_clients']} | {p['module_s_mean']:.3f} | "
                f"{sv['inferences_per_s']:.0f} | {sv['mean_rows_per_execution']:.0f} | "
                f"{sv['queue_ms_per_request']:.1f} |"
            )


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--only", choices=("scaling", "network", "batching"), action="append")
    parser.add_argument(
        "--events-file", default=None, help="reuse an event file (default: simulate 8 mini events)"
    )
    a = parser.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    events_file = a.events_file
    if events_file is None:
        from argonic.reco.simulation import simulate_file

        events_file = str(ROOT / "events.h5")
        simulate_file(events_file, detector="mini", n_events=8, seed=1, show_progress=False)
    try:
        for part in a.only or ("scaling", "network", "batching"):
            {"scaling": scaling, "network": network, "batching": batching}[part](events_file)
    finally:
        if a.events_file is None:
            Path(events_file).unlink(missing_ok=True)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()
