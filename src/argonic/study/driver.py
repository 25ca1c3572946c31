"""The scaling study (`argonic study`): N simultaneous clients against one server, for several N.

For each N the parent starts N client processes (``argonic.study.client``, forkserver
context), waits until every client is ready (interface connected, events loaded), releases
them at once through a barrier (as the paper did), and collects one row per client-event
with the wall time of every module. Meanwhile it scrapes the server's /metrics (Triton's
names) every ``scrape_interval_s``, and exactly at each release and after each phase.

Outputs in ``output``: results.csv (one row per client-event), server_metrics.csv (the
scraped samples), summary.json (per-N aggregates, server deltas and their consistency with
what the clients sent, the latency-model fit, the Table 3-like local vs remote summary, the
sizing report), module_time_vs_clients.png (Figure 7) and server_over_time.png (Figure 6).

``client_cpu="emulated"`` (the default): each client's non-ML CPU work is a sleep of the
duration measured once per event in the parent (see client.py); every output says so.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from argonic import procs
from argonic._util import json_default
from argonic.inference.local_server import LocalServer
from argonic.settings import StudySettings
from argonic.study.client import ROW_FIELDS
from argonic.study.errors import StudyError
from argonic.study.phase import event_order, run_phase
from argonic.study.scrape import SAMPLE_FIELDS, MetricsScraper
from argonic.study.sizing import sizing_report
from argonic.study.summary import (
    fit_study,
    fit_study_mva,
    format_summary,
    summarise_phase,
    table3,
)
from argonic.study.workload import prepare_workload

__all__ = [
    "StudySettings",
    "StudyError",
    "event_order",
    "format_summary",
    "prepare_workload",
    "repository_without_dynamic_batching",
    "run_study",
]

log = logging.getLogger(__name__)


def repository_without_dynamic_batching(source: Path, model_name: str, target: Path) -> Path:
    """A copy of ``source`` (model files linked, not copied) whose config has no dynamic_batching."""
    from argonic.repository import read_config, write_config

    src, dst = source / model_name, target / model_name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_dir():
            (dst / item.name).mkdir()
            for f in item.iterdir():
                os.symlink(f.resolve(), dst / item.name / f.name)
        elif item.name != "config.pbtxt":
            os.symlink(item.resolve(), dst / item.name)
    config = read_config(src)
    config.ClearField("dynamic_batching")
    write_config(dst, config)
    return target


def _write_csv(path: Path, fields: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def run_study(cfg: StudySettings) -> dict[str, Any]:
    """Run the whole study (see the module docstring); return the summary (also in summary.json)."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    say = (
        (lambda msg: print(msg, file=sys.stderr, flush=True))
        if cfg.show_progress
        else (lambda msg: None)
    )
    events_file = _events_file(cfg, out, say)
    say("measuring each event's modules once in this process (and local inference)")
    workload = prepare_workload(events_file, out, cfg.max_patches, cfg.local_baseline)
    (out / "workload.json").write_text(json.dumps(workload, indent=1))

    server = proxy = scraper = None
    completed = False
    phases: list[dict[str, Any]] = []
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["argonic.study.client"])
    helpers_before = procs.multiprocessing_helpers()
    try:
        server, address, metrics_url = _server(cfg, out, say)
        _warm_up(address, cfg, out / "patches.npy")
        client_address = address
        if cfg.rtt_ms or cfg.link_gbps:
            proxy, client_address = _proxy(cfg, address, say)
        t_zero = time.monotonic()
        scraper = MetricsScraper(metrics_url, cfg.model_name, cfg.scrape_interval_s, t_zero)
        if scraper.scrape() is None:
            log.warning("cannot scrape %s (%s): no server metrics", metrics_url, scraper.last_error)
        scraper.start()
        base_spec = {
            "server": client_address,
            "batch_size": cfg.batch_size,
            "model_name": cfg.model_name,
            "cpu": cfg.client_cpu,
            "cpu_scale": cfg.cpu_scale,
            "events_file": str(events_file),
            "patches_file": str(out / "patches.npy"),
            "workload": workload,
            "t_zero": t_zero,
            "model_repository": str(cfg.model_repository or ""),
        }
        for n in sorted({int(c) for c in cfg.clients}):
            say(f"N = {n} clients x {cfg.events} event(s) ({cfg.label})")
            phases.append(run_phase(ctx, n, base_spec, cfg, len(workload), scraper, t_zero))
        completed = True
    finally:
        for part in (scraper, proxy, server):
            if part is not None:
                part.stop()
        procs.stop_multiprocessing_helpers(helpers_before, tracker=completed)

    samples = scraper.samples if scraper else []
    rows = [r for p in phases for r in p["rows"]]
    _write_csv(out / "results.csv", ROW_FIELDS, rows)
    _write_csv(out / "server_metrics.csv", SAMPLE_FIELDS, samples)
    summary, fit, mva = _summary(cfg, phases, rows, workload, samples)
    summary.update(
        events_file=str(events_file),
        server=cfg.server or f"local argonic serve ({address})",
        metrics_url=metrics_url,
        network=proxy.as_dict() if proxy else None,
        scrape_failures=scraper.failures if scraper else 0,
    )
    if cfg.plots:
        summary["files"]["plots"] = _plots(cfg, summary["per_n"], fit, mva, samples, out)
    summary["files"].update(
        results=str(out / "results.csv"),
        server_metrics=str(out / "server_metrics.csv"),
        summary=str(out / "summary.json"),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=json_default))
    return summary


def _events_file(cfg: StudySettings, out: Path, say: Callable[[str], None]) -> str:
    """The study's event file: the configured one, or ``pool`` events simulated now."""
    if cfg.events_file is not None:
        return cfg.events_file
    from argonic.reco.simulation import simulate_file

    events_file = str(out / "events.h5")
    pool = cfg.pool or cfg.events
    say(f"simulating {pool} {cfg.detector} event(s) -> {events_file}")
    simulate_file(
        events_file, detector=cfg.detector, n_events=pool, seed=cfg.seed, show_progress=False
    )
    return events_file


def _server(
    cfg: StudySettings, out: Path, say: Callable[[str], None]
) -> tuple[LocalServer | None, str, str]:
    """(the local server started, or None; its address; its /metrics URL)."""
    if cfg.server is not None:
        address = cfg.server
        return None, address, cfg.metrics_url or f"http://{address.rpartition(':')[0]}:8002/metrics"
    from argonic.repository import shipped_repository

    repository = Path(cfg.model_repository) if cfg.model_repository else shipped_repository()
    if not cfg.dynamic_batching:
        repository = repository_without_dynamic_batching(
            repository, cfg.model_name, out / "model_repository"
        )
    server = LocalServer(repository, cfg.model_name)
    say(f"starting a local argonic serve ({repository})")
    fallback_log = logging.getLogger("argonic.inference.local_server")
    level = fallback_log.level
    fallback_log.setLevel(logging.ERROR)  # it would call our server a "fallback server"
    try:
        address = server.start()
    finally:
        fallback_log.setLevel(level)
    return server, address, cfg.metrics_url or server.metrics_url


def _proxy(cfg: StudySettings, address: str, say: Callable[[str], None]) -> tuple[Any, str]:
    """The network emulator in front of the server, and the address clients use."""
    from argonic.study.netem import NetemProxy

    proxy = NetemProxy(
        address, rtt_ms=cfg.rtt_ms, link_gbps=cfg.link_gbps, shared_link=cfg.shared_link
    )
    client_address = proxy.start()
    say(
        f"network emulation: {client_address} -> {address}, RTT {cfg.rtt_ms:g} ms, "
        f"link {cfg.link_gbps or 'unlimited'} Gbps"
    )
    return proxy, client_address


def _summary(
    cfg: StudySettings,
    phases: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    workload: list[dict[str, Any]],
    samples: list[dict[str, Any]],
) -> tuple[dict[str, Any], Any, Any]:
    """(summary: per-N aggregates, the fits, Table 3, the sizing report; fit; MVA fit)."""
    per_n = [summarise_phase(p) for p in phases]
    fit = fit_study(per_n, workload, cfg)
    mva = fit_study_mva(fit)
    summary = {
        "label": cfg.label,
        "client_cpu": cfg.client_cpu,
        "config": cfg.model_dump(),
        "workload": {
            "events": len(workload),
            "patches_per_event": float(np.mean([w["patches"] for w in workload])),
            "hits_per_event": float(np.mean([w["event_hits"] for w in workload])),
        },
        "per_n": per_n,
        "fit": fit.as_dict(),
        "knee_clients": fit.knee * cfg.servers,
        "model_max_relative_error": fit.max_relative_error,
        "fit_mva": mva.as_dict() if mva else None,
        "table3": table3(
            workload, per_n, rows, cfg.cpu_scale if cfg.client_cpu == "emulated" else 1.0
        ),
        "sizing": sizing_report(fit.model, cfg.farms, cfg.farm_servers),
        "consistent": all(
            p["server"]["inference_count_equals_patches_sent"] is not False for p in per_n
        ),
        "files": {},
    }
    return summary, fit, mva


def _plots(
    cfg: StudySettings,
    per_n: list[dict[str, Any]],
    fit: Any,
    mva: Any,
    samples: list[dict[str, Any]],
    out: Path,
) -> list[str]:
    """Figures 6 and 7 as PNG files."""
    from argonic.study.plots import plot_module_time, plot_server

    plot_module_time(per_n, fit, out / "module_time_vs_clients.png", cfg.label, mva)
    plot_server(samples, per_n, out / "server_over_time.png", cfg.label)
    return [str(out / "module_time_vs_clients.png"), str(out / "server_over_time.png")]


def _warm_up(address: str, cfg: StudySettings, patches_file: Path) -> None:
    """One request straight to the server (not through the proxy) so the first phase is not its first call."""
    from argonic.inference.remote import RemoteInterface

    patches = np.load(patches_file, mmap_mode="r")
    remote = {"servers": [address], "model_name": cfg.model_name, "server_stats": "off"}
    if cfg.model_repository:
        remote["model_repository"] = cfg.model_repository
    with RemoteInterface({"batch_size": cfg.batch_size, "remote": remote}) as interface:
        if len(patches):
            interface.predict(np.asarray(patches[: min(len(patches), cfg.batch_size)]))
