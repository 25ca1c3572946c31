"""The study's numbers: per-N aggregates of the client rows and the server's metric deltas,
the Table 3-like local vs remote comparison, the latency-model fits and the printed report."""

from __future__ import annotations

from typing import Any

import numpy as np

from argonic.settings import StudySettings
from argonic.study.latency_model import ModelFit, fit_module_time, fit_module_time_mva
from argonic.study.scrape import BATCH, BATCH_BOUNDS, COUNTERS
from argonic.study.sizing import format_sizing


def _delta(before: dict[str, Any] | None, after: dict[str, Any] | None, key: str) -> float | None:
    if before is None or after is None:
        return None
    return float(after[key]) - float(before[key])


def summarise_phase(phase: dict[str, Any]) -> dict[str, Any]:
    """Per-N aggregates of the client rows and the server's metric deltas over the phase."""
    rows = phase["rows"]
    module = np.array([r["emtrackmichelid_s"] for r in rows])
    # steady rows: events that ended while every client still had work (no tail where the
    # server is less loaded because some clients are done)
    last_end: dict[int, float] = {}
    for r in rows:
        last_end[r["client"]] = max(last_end.get(r["client"], 0.0), r["end_s"])
    steady_end = min(last_end.values())
    steady = np.array([r["emtrackmichelid_s"] for r in rows if r["end_s"] <= steady_end + 1e-9])
    other = np.array([r["read_s"] + r["hitfinding_s"] for r in rows])
    duration = phase["t_end_s"] - phase["t_release_s"]
    patches = int(sum(r["patches"] for r in rows))
    requests = int(sum(r["requests"] for r in rows))
    out: dict[str, Any] = {
        "n_clients": phase["n_clients"],
        "client_events": len(rows),
        "module_s_mean": float(module.mean()),
        "module_s_std": float(module.std()),
        "module_s_median": float(np.median(module)),
        "module_s_p90": float(np.percentile(module, 90)),
        "module_s_steady_mean": float(steady.mean()),
        "module_s_steady_std": float(steady.std()),
        "steady_events": int(steady.size),
        "other_s_mean": float(other.mean()),
        "total_s_mean": float(np.mean([r["total_s"] for r in rows])),
        "patches_s_mean": float(np.mean([r["patches_s"] for r in rows])),
        "inference_s_mean": float(np.mean([r["inference_s"] for r in rows])),
        "patches_per_event": patches / len(rows),
        "requests_per_event": requests / len(rows),
        "bytes_sent_per_event": float(np.mean([r["bytes_sent"] for r in rows])),
        "patches_sent": patches,
        "requests_sent": requests,
        "duration_s": duration,
        "failovers": int(sum(r.get("failovers", 0) for r in rows)),
        "client_patches_per_s": patches / duration if duration > 0 else None,
        "t_release_s": phase["t_release_s"],
        "t_end_s": phase["t_end_s"],
    }
    b, a = phase["before"], phase["after"]
    server: dict[str, Any] = {k: _delta(b, a, k) for k in COUNTERS}
    execs = _delta(b, a, f"{BATCH}_count")
    batch_rows = _delta(b, a, f"{BATCH}_sum")
    server["executions"] = execs
    server["mean_rows_per_execution"] = batch_rows / execs if execs else None
    inferences = server["nv_inference_count"]
    server["inferences_per_s"] = (
        inferences / duration if inferences is not None and duration > 0 else None
    )
    server["queue_ms_per_request"] = (
        server["nv_inference_queue_duration_us"] / 1000 / server["nv_inference_request_success"]
        if server["nv_inference_request_success"]
        else None
    )
    server["inference_count_equals_patches_sent"] = (
        None if inferences is None else inferences == patches
    )
    # the clients' wait minus the server's own request time: network travel + transmission +
    # (de)serialisation and the gRPC stacks, per event (independent of the server's speed)
    duration_us = server["nv_inference_request_duration_us"]
    if duration_us is not None and rows:
        server["request_s_per_event"] = duration_us * 1e-6 / len(rows)
        out["outside_server_s_per_event"] = out["inference_s_mean"] - server["request_s_per_event"]
    server["request_count_equals_requests_sent"] = (
        None
        if server["nv_inference_request_success"] is None
        else server["nv_inference_request_success"] == requests
    )
    out["server"] = server
    hist = []
    if b is not None and a is not None:
        cumulative = [a[f"{BATCH}_le_{x}"] - b[f"{BATCH}_le_{x}"] for x in BATCH_BOUNDS]
        hist = [cumulative[0]] + [
            cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))
        ]
    out["batch_histogram"] = hist
    return out


def table3(
    workload: list[dict[str, Any]],
    per_n: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    cpu_scale: float = 1.0,
) -> dict[str, Any]:
    """Local (measured in the parent) vs remote (the smallest N) time per event and module.

    The local CPU modules (read, hit finding, patch building) are multiplied by
    ``cpu_scale`` as the emulated clients' are; local inference is as measured."""
    n_min = per_n[0]["n_clients"]
    remote_rows = [r for r in rows if r["n_clients"] == n_min]
    remote = {
        m: float(np.mean([r[f"{m}_s"] for r in remote_rows]))
        for m in ("read", "hitfinding", "emtrackmichelid")
    }
    by_index = {w["event_index"]: w for w in workload}
    used = [by_index[r["event_index"]] for r in remote_rows]  # the events the remote clients ran
    local = {
        "read": float(np.mean([w["read_s"] for w in used])) * cpu_scale,
        "hitfinding": float(np.mean([w["hitfinding_s"] for w in used])) * cpu_scale,
    }
    if all(w["local_inference_s"] is not None for w in used):
        local["emtrackmichelid"] = float(
            np.mean([w["patches_s"] * cpu_scale + w["local_inference_s"] for w in used])
        )
    out = {"remote_clients": n_min, "local_cpu_scale": cpu_scale, "modules": []}
    for m in ("read", "hitfinding", "emtrackmichelid"):
        lo = local.get(m)
        out["modules"].append(
            {
                "module": m,
                "local_s": lo,
                "remote_s": remote[m],
                "speedup": lo / remote[m] if lo is not None and remote[m] > 0 else None,
            }
        )
    lo_total = sum(local.values()) if len(local) == 3 else None
    re_total = sum(remote.values())
    out["modules"].append(
        {
            "module": "total",
            "local_s": lo_total,
            "remote_s": re_total,
            "speedup": lo_total / re_total if lo_total else None,
        }
    )
    return out


def format_table3(t: dict[str, Any], label: str) -> str:
    scale = (
        f", local CPU modules x{t['local_cpu_scale']:g}"
        if t.get("local_cpu_scale", 1.0) != 1.0
        else ""
    )
    lines = [
        (
            f"Table 3 (per event; local: in-process ONNX Runtime{scale}; remote: {t['remote_clients']} "
            f"client(s); {label})"
        ),
        f"{'module':<18}{'local s':>10}{'remote s':>10}{'speedup':>9}",
    ]
    for r in t["modules"]:
        lo = f"{r['local_s']:.4f}" if r["local_s"] is not None else "-"
        sp = f"{r['speedup']:.2f}" if r["speedup"] is not None else "-"
        lines.append(f"{r['module']:<18}{lo:>10}{r['remote_s']:>10.4f}{sp:>9}")
    return "\n".join(lines)


def fit_study(
    per_n: list[dict[str, Any]], workload: list[dict[str, Any]], cfg: StudySettings
) -> ModelFit:
    """The latency model fitted to the mean module time per N (t_other measured at the smallest N)."""
    n = [p["n_clients"] for p in per_n]
    y = [p["module_s_steady_mean"] for p in per_n]
    t_other = per_n[0]["other_s_mean"]
    scale = cfg.cpu_scale if cfg.client_cpu == "emulated" else 1.0
    t_cpu = None
    if all(w["local_inference_s"] is not None for w in workload):
        t_cpu = float(
            np.mean(
                [
                    (w["read_s"] + w["hitfinding_s"] + w["patches_s"]) * scale
                    + w["local_inference_s"]
                    for w in workload
                ]
            )
        )
    rates = [p["server"]["inferences_per_s"] for p in per_n if p["server"].get("inferences_per_s")]
    hint = per_n[-1]["patches_per_event"] / max(rates) if rates else None
    return fit_module_time(n, y, t_other=t_other, servers=cfg.servers, t_cpu=t_cpu, t_gpu_hint=hint)


def fit_study_mva(fit: ModelFit) -> ModelFit | None:
    """The same data fitted by the mean value analysis of the same system (needs >= 2 points)."""
    if len(fit.ratios) < 2:
        return None
    return fit_module_time_mva(
        np.asarray(fit.ratios) * fit.servers,
        fit.measured,
        t_other=fit.t_other,
        servers=fit.servers,
        t_cpu=fit.t_cpu,
    )


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable report `argonic study` prints."""
    lines = [
        f"scaling study ({s['label']}); server {s['server']}",
        f"workload: {s['workload']['events']} event(s), {s['workload']['patches_per_event']:.0f} patches/event",
        (
            f"{'N':>4}{'module s':>10}{'steady':>8}{'std':>8}{'model s':>9}{'err':>7}{'other s':>9}{'req/ev':>8}"
            f"{'server inf/s':>13}{'rows/exec':>10}{'queue ms':>9}  count=patches"
        ),
    ]
    points = {p["clients_per_server"] * s["config"]["servers"]: p for p in s["fit"]["points"]}
    for p in s["per_n"]:
        sv, pt = p["server"], points.get(float(p["n_clients"]), {})

        def f(v: Any, fmt: str) -> str:
            return format(v, fmt) if v is not None else "-"

        lines.append(
            f"{p['n_clients']:>4}{p['module_s_mean']:>10.4f}{p['module_s_steady_mean']:>8.4f}"
            f"{p['module_s_steady_std']:>8.4f}"
            f"{f(pt.get('model_s'), '.4f'):>9}{f(pt.get('relative_error'), '+.1%'):>7}"
            f"{p['other_s_mean']:>9.4f}{p['requests_per_event']:>8.1f}{f(sv['inferences_per_s'], '.0f'):>13}"
            f"{f(sv['mean_rows_per_execution'], '.0f'):>10}{f(sv['queue_ms_per_request'], '.1f'):>9}"
            f"  {sv['inference_count_equals_patches_sent']}"
        )
    fit = s["fit"]
    lines += [
        "",
        (
            f"latency model fit: t_flat {fit['t_flat']:.4f} s, t_gpu {fit['t_gpu']:.4f} s/event "
            f"(from {fit['t_gpu_source']}), t_other {fit['t_other']:.4f} s, t_latency {fit['t_latency']:.4f} s"
        ),
        (
            f"knee N* = t_ideal / t_gpu = {s['knee_clients']:.1f} clients; optimal "
            f"{fit['optimal_clients_per_server']} clients per server; "
            f"largest |model - measured| / measured = {s['model_max_relative_error']:.1%}"
        ),
    ]
    if s.get("fit_mva"):
        m = s["fit_mva"]
        lines.append(
            f"same system by mean value analysis (smooth knee): t_flat {m['t_flat']:.4f} s, "
            f"t_gpu {m['t_gpu']:.4f} s/event, knee {m['knee_clients_per_server'] * s['config']['servers']:.1f}"
            f" clients, largest error {m['max_relative_error']:.1%}"
        )
    lines += ["", format_table3(s["table3"], s["label"]), "", format_sizing(s["sizing"])]
    if s.get("files", {}).get("plots"):
        lines += ["", "plots: " + ", ".join(s["files"]["plots"])]
    lines.append(
        f"results: {s['files']['results']}, {s['files']['server_metrics']}, {s['files']['summary']}"
    )
    return "\n".join(lines)
