"""What the farm model answers (`argonic farm`): the paper's saturation points, the GPUs and
per-site bandwidth 2,000 clients need in patch and plane mode, and how long KEDA's
autoscaler takes to relieve a saturated farm. Tables as text, figures as PNG."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from argonic.study.farm import PAPER, Autoscaler, paper_config, simulate, sweep
from argonic.study.latency_model import fit_module_time

#: The paper's saturation points on 4 T4s (docs/reference.md, section 1).
PAPER_SATURATION = {235: 190, 1693: 270}
FLAT = 0.10  # "unsaturated": module time within 10 % of a lone client's


def reproduce_paper(
    clients: list[int], events: int = 4, batches: tuple[int, ...] = (235, 1693)
) -> dict[str, Any]:
    """Module time vs clients on one server of 4 T4s at batch 235 and 1693; the knee of the
    latency model fitted to the curve (Eq. 3, the paper's definition), against the paper's."""
    out: dict[str, Any] = {}
    for batch in batches:
        published = PAPER_SATURATION[batch]
        config = paper_config(1, 1, batch, events=events)
        config = replace(config, service=replace(config.service, gpus=4))
        points = sweep(config, clients)
        module = [p["module_s"] for p in points]
        fit = fit_module_time(clients, module, PAPER["t_other_s"])
        flat = [n for n, m in zip(clients, module, strict=True) if m <= module[0] * (1 + FLAT)]
        out[str(batch)] = {
            "clients": clients,
            "module_s": module,
            "knee": fit.knee,
            "last_flat_point": max(flat),
            "published": published,
            "knee_error": (fit.knee - published) / published,
        }
    return out


def gpus_for(clients: int, mode: str, batch: int = 1693, events: int = 4) -> dict[str, Any]:
    """The fewest T4 servers that keep ``clients`` within 10 % of a lone client's module
    time (bisection, starting from Eq. 3's estimate)."""
    lone = sweep(paper_config(1, 1, batch, mode, events), [1])[0]["module_s"]

    def ok(gpus: int) -> tuple[bool, dict[str, Any]]:
        r = simulate(paper_config(clients, gpus, batch, mode, events))
        return r["module_s"] <= lone * (1 + FLAT), r

    lo, hi = 1, max(2, math.ceil(clients / 50))
    while not ok(hi)[0]:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid)[0] else (mid, hi)
    result = ok(hi)[1]
    return {
        "clients": clients,
        "mode": mode,
        "gpus": hi,
        "clients_per_gpu": clients / hi,
        "lone_module_s": lone,
        "module_s": result["module_s"],
        "event_s": result["event_s"],
        "uplink_gbps_total": result["uplink_gbps_per_site"],
    }


def bandwidth(
    clients: int, gpus: int, sites: int, limits: list[float | None], events: int = 4
) -> list[dict[str, Any]]:
    """Module time and uplink use per site, patch vs plane mode, under per-site caps."""
    rows = []
    for mode in ("patch", "plane"):
        for gbps in limits:
            r = simulate(paper_config(clients, gpus, 1693, mode, events, sites, gbps))
            rows.append(
                {
                    "mode": mode,
                    "site_gbps": gbps,
                    "sites": sites,
                    "module_s": r["module_s"],
                    "event_s": r["event_s"],
                    "uplink_gbps_per_site": r["uplink_gbps_per_site"],
                }
            )
    return rows


def autoscaling(
    clients: int, start_gpus: int, autoscaler: Autoscaler, events: int = 8
) -> dict[str, Any]:
    """A farm started with too few servers: the KEDA rule's timeline, and the time from the
    first poll above the threshold to the first poll below it again."""
    r = simulate(paper_config(clients, start_gpus, 1693, "patch", events, autoscaler=autoscaler))
    timeline = r["timeline"]
    above = [t for t, _, m in timeline if m > autoscaler.threshold_ms]
    below = [t for t, _, m in timeline if above and t > above[0] and m <= autoscaler.threshold_ms]
    return {
        "clients": clients,
        "start_gpus": start_gpus,
        "end_gpus": r["servers_at_end"],
        "autoscaler": autoscaler.__dict__,
        "saturated_at_s": above[0] if above else None,
        "relieved_at_s": below[0] if below else None,
        "relief_s": below[0] - above[0] if below else None,
        "timeline": timeline,
        "module_s_all": r["module_s_all"],
    }


def format_report(report: dict[str, Any]) -> str:
    """The report's tables as text."""
    lines = ["The paper's farm (4 T4s, 55,000 patches/event, 110 s + 7 s CPU, 12 ms RTT):"]
    for batch, p in report["paper"].items():
        lines.append(
            f"  batch {batch}: knee {p['knee']:.0f} clients (paper ~{p['published']}, "
            f"{p['knee_error']:+.0%}); module time within 10 % of one client's up to "
            f"{p['last_flat_point']} of the points simulated"
        )
    for s in report["sizing"]:
        lines.append(
            f"{s['clients']} clients, {s['mode']} mode: {s['gpus']} T4s "
            f"({s['clients_per_gpu']:.0f} clients per GPU; module {s['module_s']:.1f} s vs "
            f"{s['lone_module_s']:.1f} s alone), uplink {s['uplink_gbps_total']:.2f} Gbit/s in all"
        )
    lines.append("per-site uplink caps (module s per event, Gbit/s used per site):")
    for b in report["bandwidth"]:
        cap = f"{b['site_gbps']:g} Gbit/s" if b["site_gbps"] else "no cap"
        lines.append(
            f"  {b['mode']:5s} {b['sites']} sites, {cap:>13s}: module {b['module_s']:7.1f} s, "
            f"{b['uplink_gbps_per_site']:.3f} Gbit/s per site"
        )
    a = report["autoscaling"]
    relief = f"{a['relief_s']:.0f} s" if a["relief_s"] is not None else "not within the run"
    lines.append(
        f"autoscaling: {a['clients']} clients from {a['start_gpus']} T4s (threshold "
        f"{a['autoscaler']['threshold_ms']:g} ms, servers ready {a['autoscaler']['startup_s']:g} s "
        f"after the decision): saturated at {a['saturated_at_s']} s, relieved after {relief}, "
        f"{a['end_gpus']} T4s at the end"
    )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Figure 6/7's shape (module time vs clients) and the autoscaling timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for batch, p in report["paper"].items():
        ax.plot(p["clients"], p["module_s"], "o-", label=f"batch {batch} (knee {p['knee']:.0f})")
        ax.axvline(p["published"], ls=":", c="grey")
    ax.set_xlabel("simultaneous clients (4 T4 GPUs)")
    ax.set_ylabel("EmTrackMichelId s/event")
    ax.set_title("farm model: the paper's farm (dotted: published saturation)")
    ax.legend()
    paths = [out / "farm_module_time_vs_clients.png"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    plt.close(fig)
    a = report["autoscaling"]
    if a["timeline"]:
        t, servers, metric = (np.asarray(v) for v in zip(*a["timeline"], strict=True))
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(t, metric, label="queue ms / execution")
        ax.axhline(a["autoscaler"]["threshold_ms"], ls=":", c="grey")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("s")
        ax.set_ylabel("ms")
        ax2 = ax.twinx()
        ax2.step(t, servers, c="C1", where="post", label="GPUs")
        ax2.set_ylabel("GPUs")
        ax.set_title(f"KEDA autoscaling, {a['clients']} clients")
        paths.append(out / "farm_autoscaling.png")
        fig.savefig(paths[1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def farm_report(
    clients: int = 2000,
    paper_clients: tuple[int, ...] = (1, 50, 100, 150, 200, 250, 300, 350, 400),
    sites: int = 10,
    site_limits: tuple[float | None, ...] = (None, 10.0, 1.0),
    autoscaler: Autoscaler | None = None,
    start_fraction: float = 0.5,
) -> dict[str, Any]:
    """Every answer of the module docstring for a farm of ``clients``."""
    sizing = [gpus_for(clients, "patch"), gpus_for(clients, "plane")]
    gpus = sizing[0]["gpus"]
    autoscaler = autoscaler or Autoscaler(threshold_ms=100.0)
    if autoscaler.max_servers is None:  # maxReplicas with the headroom an operator would give
        autoscaler = replace(autoscaler, max_servers=2 * gpus)
    return {
        "paper": reproduce_paper(list(paper_clients)),
        "sizing": sizing,
        "bandwidth": bandwidth(clients, gpus, sites, list(site_limits)),
        "autoscaling": autoscaling(clients, max(1, round(gpus * start_fraction)), autoscaler),
    }
