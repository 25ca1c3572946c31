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

import contextlib
import csv
import json
import logging
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from argonic import ArgonicError
from argonic.inference.fallback import LocalServer
from argonic.study.client import ROW_FIELDS, client_main
from argonic.study.latency_model import ModelFit, fit_module_time, fit_module_time_mva
from argonic.study.scrape import BATCH, BATCH_BOUNDS, COUNTERS, SAMPLE_FIELDS, MetricsScraper
from argonic.study.sizing import DEFAULT_FARMS, DEFAULT_SERVERS, format_sizing, sizing_report

log = logging.getLogger(__name__)

CPU_MODES = ("emulated", "real")


class StudyError(ArgonicError):
    """The study could not run (a client failed, the server is unreachable, bad options)."""


@dataclass
class StudyConfig:
    """Options of `argonic study` (see ``argonic study --help``)."""

    output: str = "study"
    clients: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    events: int = 4  # events per client
    pool: int | None = (
        None  # events simulated (default: events, so every client runs every event once)
    )
    batch_size: int = 1693
    server: str | None = None  # "host:port"; None: start a local argonic serve
    metrics_url: str | None = None  # default http://<server host>:8002/metrics
    servers: int = 1  # servers behind ``server`` (clients per server = N / servers in the fit)
    events_file: str | None = None  # default: simulate ``events`` events of ``detector``
    detector: str = "mini"
    seed: int = 1
    client_cpu: str = "emulated"
    cpu_scale: float = 1.0  # emulated: multiply the measured non-ML CPU durations
    max_patches: int | None = None  # emulated: send at most this many patches per event
    rtt_ms: float = 0.0
    link_gbps: float | None = None
    shared_link: bool = False
    model_repository: str | None = None  # local server's repository (default: the shipped one)
    model_name: str = "emtrkmichelid"
    dynamic_batching: bool = True  # local server: False serves a copy without dynamic_batching
    scrape_interval_s: float = 0.5
    local_baseline: bool = True  # measure local (in-process ONNX Runtime) inference per event
    farms: list[int] = field(default_factory=lambda: list(DEFAULT_FARMS))
    farm_servers: list[int] = field(default_factory=lambda: list(DEFAULT_SERVERS))
    plots: bool = True
    ready_timeout_s: float = 300.0
    phase_timeout_s: float = 1800.0
    show_progress: bool = True

    def validate(self) -> None:
        def bad(key: str, why: str) -> StudyError:
            return StudyError(f"{key} = {getattr(self, key)!r}: {why}")

        if not self.clients or any(int(n) < 1 for n in self.clients):
            raise bad("clients", "give client counts >= 1")
        if self.events < 1:
            raise bad("events", "expected >= 1")
        if self.pool is not None and self.pool < 1:
            raise bad("pool", "expected >= 1")
        if self.batch_size < 1:
            raise bad("batch_size", "expected >= 1")
        if self.client_cpu not in CPU_MODES:
            raise bad("client_cpu", f"choose from {', '.join(CPU_MODES)}")
        if self.cpu_scale < 0:
            raise bad("cpu_scale", "expected >= 0")
        if self.client_cpu == "real" and (self.cpu_scale != 1.0 or self.max_patches):
            raise StudyError("cpu_scale and max_patches apply to emulated clients only")
        if self.max_patches is not None and self.max_patches < 1:
            raise bad("max_patches", "expected >= 1")
        if self.rtt_ms < 0 or (self.link_gbps is not None and self.link_gbps <= 0):
            raise StudyError("rtt_ms must be >= 0 and link_gbps > 0")
        if self.server is not None:
            host, _, port = self.server.rpartition(":")
            if not host or not port.isdigit():
                raise bad("server", 'expected "host:port"')
            if not self.dynamic_batching or self.model_repository:
                raise StudyError(
                    "dynamic_batching and model_repository choose the local server's model: "
                    "configure the remote server itself"
                )
        if self.servers < 1:
            raise bad("servers", "expected >= 1")

    @property
    def label(self) -> str:
        parts = ["emulated client CPU" if self.client_cpu == "emulated" else "real client CPU"]
        if self.client_cpu == "emulated" and self.cpu_scale != 1.0:
            parts.append(f"x{self.cpu_scale:g}")
        if self.max_patches:
            parts.append(f"<= {self.max_patches} patches/event")
        parts.append(f"batch {self.batch_size}")
        if self.rtt_ms or self.link_gbps:
            parts.append(
                f"RTT {self.rtt_ms:g} ms" + (f", {self.link_gbps:g} Gbps" if self.link_gbps else "")
            )
        if not self.dynamic_batching:
            parts.append("no dynamic batching")
        return ", ".join(parts)


# --- the workload: measured once, in the parent ---------------------------------------------


class _CapturingInterface:
    """Stands in for the ModelInterface while measuring: keeps the patches, answers zeros."""

    def __init__(self) -> None:
        self.planes: list[np.ndarray] = []

    def predict(self, patches: np.ndarray) -> np.ndarray:
        self.planes.append(np.array(patches, np.float32, copy=True))
        return np.zeros((len(patches), 4), np.float32)


def prepare_workload(
    events_file: str | os.PathLike[str],
    out_dir: Path,
    max_patches: int | None = None,
    local_baseline: bool = True,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the chain once per event in this process (no inference) and time its modules.

    Writes ``patches.npy`` (all events' patches, event after event, plane after plane) and
    returns per event: offset and count of its patches there, per-plane counts and
    patch-building seconds (the module's total shared by patch count), read_s,
    hitfinding_s, patches_s, and local_inference_s (in-process ONNX Runtime, batch 256).
    With ``max_patches`` each plane keeps its first share of patches (the event is
    reduced for the inference only) and the patch-building time is scaled to match.
    """
    from argonic.detector.eventfile import EventFile
    from argonic.reco.chain import reco_event
    from argonic.reco.module import EmTrackMichelId

    workload: list[dict[str, Any]] = []
    chunks: list[np.ndarray] = []
    offset = 0
    with EventFile(events_file) as events:
        for i in range(len(events)):
            capture = _CapturingInterface()
            result = reco_event(events, i, EmTrackMichelId(capture, events.detector))  # type: ignore[arg-type]
            counts = [len(p) for p in capture.planes]
            total = sum(counts)
            keep = counts
            if max_patches is not None and total > max_patches:
                keep = [round(c * max_patches / total) for c in counts]
            kept = sum(keep)
            patches_s = result.patches_s * (kept / total if total else 1.0)
            plane_s = [patches_s * k / kept if kept else 0.0 for k in keep]
            planes = [p[:k] for p, k in zip(capture.planes, keep, strict=True) if k > 0]
            plane_s = [s for s, k in zip(plane_s, keep, strict=True) if k > 0]
            keep = [k for k in keep if k > 0]
            chunks.extend(planes)
            workload.append(
                {
                    "event_index": i,
                    "offset": offset,
                    "patches": kept,
                    "event_hits": total,
                    "plane_patches": keep,
                    "plane_patches_s": plane_s,
                    "read_s": result.wall["read"],
                    "hitfinding_s": result.wall["hitfinding"],
                    "patches_s": patches_s,
                    "local_inference_s": None,
                }
            )
            offset += kept
    all_patches = np.concatenate(chunks) if chunks else np.zeros((0, 48, 48, 1), np.float32)
    np.save(out_dir / "patches.npy", all_patches)
    if local_baseline and len(all_patches):
        from argonic.inference import make_interface

        with make_interface({"interface": "local", "batch_size": 256}) as local:
            local.predict(all_patches[: min(256, len(all_patches))])  # warm-up
            for w in workload:
                t0 = time.perf_counter()
                local.predict(all_patches[w["offset"] : w["offset"] + w["patches"]])
                w["local_inference_s"] = time.perf_counter() - t0
    return workload


# --- the server and the model repository ----------------------------------------------------


def repository_without_dynamic_batching(source: Path, model_name: str, target: Path) -> Path:
    """A copy of ``source`` (model files linked, not copied) whose config has no dynamic_batching."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

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
    config = text_format.Parse((src / "config.pbtxt").read_text(), mc.ModelConfig())
    config.ClearField("dynamic_batching")
    (dst / "config.pbtxt").write_text(text_format.MessageToString(config))
    return target


# --- one phase: N clients -------------------------------------------------------------------


def _run_phase(
    ctx: Any,
    n: int,
    base_spec: dict[str, Any],
    cfg: StudyConfig,
    n_pool: int,
    scraper: MetricsScraper,
    t_zero: float,
) -> dict[str, Any]:
    """Start N clients, release them together, collect their rows; stop them all whatever happens."""
    queue = ctx.Queue()
    barrier = ctx.Barrier(n + 1)
    procs = []
    try:
        for c in range(n):
            spec = {
                **base_spec,
                "client": c,
                "n_clients": n,
                "events": event_order(c, cfg.events, n_pool, cfg.seed),
                "barrier_timeout_s": cfg.ready_timeout_s + 60,
            }
            p = ctx.Process(
                target=client_main,
                args=(spec, barrier, queue),
                name=f"argonic-study-client-{c}",
                daemon=True,
            )
            p.start()
            procs.append(p)
        ready = _collect(queue, procs, n, "ready", cfg.ready_timeout_s, "get ready")
        del ready
        scraper.phase = n
        before = scraper.scrape()
        barrier.wait(60)
        t_release = time.monotonic() - t_zero
        messages = _collect(queue, procs, n, "rows", cfg.phase_timeout_s, "finish")
        t_end = time.monotonic() - t_zero
        after = scraper.scrape()
        for p in procs:
            p.join(30)
    except BaseException:
        with contextlib.suppress(Exception):
            barrier.abort()
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        queue.close()
        queue.join_thread()
    rows = [
        row for _, _, client_rows in sorted(messages, key=lambda m: m[1]) for row in client_rows
    ]
    return {
        "n_clients": n,
        "t_release_s": t_release,
        "t_end_s": t_end,
        "rows": rows,
        "before": before,
        "after": after,
    }


def event_order(client: int, k: int, pool: int, seed: int = 1) -> list[int]:
    """The ``k`` events (indices into a pool of ``pool``) client ``client`` runs, in order.

    A per-client shuffled cycle through the pool: clients do not run the same sequence in
    lockstep (emulated CPU work has no jitter of its own, so two clients with the same
    sequence would collide at the server on every event).
    """
    rng = np.random.default_rng([seed, client])
    cycles = [rng.permutation(pool) for _ in range(-(-k // pool))]
    return [int(e) for e in np.concatenate(cycles)[:k]]


def _collect(
    queue: Any, procs: list[Any], n: int, kind: str, timeout_s: float, what: str
) -> list[tuple]:
    """``n`` messages of ``kind`` from the clients; StudyError on a client error, death or timeout."""
    got: list[tuple] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        try:
            msg = queue.get(timeout=0.5)
        except queue_module.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise StudyError(
                    f"client process {dead[0].name} died (exit code {dead[0].exitcode}) "
                    f"before it could {what}"
                ) from None
            if time.monotonic() > deadline:
                raise StudyError(
                    f"{n - len(got)} of {n} clients did not {what} within {timeout_s:g} s"
                ) from None
            continue
        if msg[0] == "error":
            raise StudyError(f"client {msg[1]} failed:\n{msg[2]}")
        if msg[0] == kind:
            got.append(msg)
    return got


# --- aggregation ----------------------------------------------------------------------------


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
    per_n: list[dict[str, Any]], workload: list[dict[str, Any]], cfg: StudyConfig
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


def _write_csv(path: Path, fields: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# --- the study ------------------------------------------------------------------------------


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Run the whole study (see the module docstring); return the summary (also in summary.json)."""
    cfg.validate()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    say = (
        (lambda msg: print(msg, file=sys.stderr, flush=True))
        if cfg.show_progress
        else (lambda msg: None)
    )

    from argonic.repository import shipped_repository

    events_file = cfg.events_file
    if events_file is None:
        from argonic.reco.events import simulate_file

        events_file = str(out / "events.h5")
        pool = cfg.pool or cfg.events
        say(f"simulating {pool} {cfg.detector} event(s) -> {events_file}")
        simulate_file(
            events_file, detector=cfg.detector, n_events=pool, seed=cfg.seed, show_progress=False
        )
    say("measuring each event's modules once in this process (and local inference)")
    workload = prepare_workload(events_file, out, cfg.max_patches, cfg.local_baseline)
    (out / "workload.json").write_text(json.dumps(workload, indent=1))

    server = proxy = scraper = None
    completed = False
    phases: list[dict[str, Any]] = []
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["argonic.study.client"])
    helpers_before = _helpers_running()
    try:
        if cfg.server is None:
            repository = (
                Path(cfg.model_repository) if cfg.model_repository else shipped_repository()
            )
            if not cfg.dynamic_batching:
                repository = repository_without_dynamic_batching(
                    repository, cfg.model_name, out / "model_repository"
                )
            server = LocalServer(repository, cfg.model_name)
            say(f"starting a local argonic serve ({repository})")
            fallback_log = logging.getLogger("argonic.inference.fallback")
            level = fallback_log.level
            fallback_log.setLevel(logging.ERROR)  # it would call our server a "fallback server"
            try:
                address = server.start()
            finally:
                fallback_log.setLevel(level)
            metrics_url = cfg.metrics_url or server.metrics_url
        else:
            address = cfg.server
            metrics_url = cfg.metrics_url or f"http://{address.rpartition(':')[0]}:8002/metrics"
        _warm_up(address, cfg, out / "patches.npy")
        client_address = address
        if cfg.rtt_ms or cfg.link_gbps:
            from argonic.study.netem import NetemProxy

            proxy = NetemProxy(
                address, rtt_ms=cfg.rtt_ms, link_gbps=cfg.link_gbps, shared_link=cfg.shared_link
            )
            client_address = proxy.start()
            say(
                f"network emulation: {client_address} -> {address}, RTT {cfg.rtt_ms:g} ms, "
                f"link {cfg.link_gbps or 'unlimited'} Gbps"
            )
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
            phases.append(_run_phase(ctx, n, base_spec, cfg, len(workload), scraper, t_zero))
        completed = True
    finally:
        if scraper is not None:
            scraper.stop()
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
        _stop_helpers(helpers_before, tracker=completed)

    rows = [r for p in phases for r in p["rows"]]
    _write_csv(out / "results.csv", ROW_FIELDS, rows)
    _write_csv(out / "server_metrics.csv", SAMPLE_FIELDS, scraper.samples if scraper else [])
    per_n = [summarise_phase(p) for p in phases]
    fit = fit_study(per_n, workload, cfg)
    mva = fit_study_mva(fit)
    summary: dict[str, Any] = {
        "label": cfg.label,
        "client_cpu": cfg.client_cpu,
        "config": asdict(cfg),
        "events_file": str(events_file),
        "server": cfg.server or f"local argonic serve ({address})",
        "metrics_url": metrics_url,
        "network": proxy.as_dict() if proxy else None,
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
        "scrape_failures": scraper.failures if scraper else 0,
        "files": {},
    }
    if cfg.plots:
        from argonic.study.plots import plot_module_time, plot_server

        plot_module_time(per_n, fit, out / "module_time_vs_clients.png", cfg.label, mva)
        plot_server(
            scraper.samples if scraper else [], per_n, out / "server_over_time.png", cfg.label
        )
        summary["files"]["plots"] = [
            str(out / "module_time_vs_clients.png"),
            str(out / "server_over_time.png"),
        ]
    summary["files"].update(
        results=str(out / "results.csv"),
        server_metrics=str(out / "server_metrics.csv"),
        summary=str(out / "summary.json"),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _warm_up(address: str, cfg: StudyConfig, patches_file: Path) -> None:
    """One request straight to the server (not through the proxy) so the first phase is not its first call."""
    from argonic.inference.remote import RemoteInterface

    patches = np.load(patches_file, mmap_mode="r")
    remote = {"servers": [address], "model_name": cfg.model_name, "server_stats": "off"}
    if cfg.model_repository:
        remote["model_repository"] = cfg.model_repository
    with RemoteInterface({"batch_size": cfg.batch_size, "remote": remote}) as interface:
        if len(patches):
            interface.predict(np.asarray(patches[: min(len(patches), cfg.batch_size)]))


def _helpers_running() -> tuple[bool, bool]:
    """Whether multiprocessing's forkserver and resource tracker processes are running now."""
    from multiprocessing import forkserver, resource_tracker

    fs = getattr(forkserver._forkserver, "_forkserver_pid", None) is not None  # type: ignore[attr-defined]
    rt = getattr(resource_tracker._resource_tracker, "_pid", None) is not None  # type: ignore[attr-defined]
    return fs, rt


def _stop_helpers(running_before: tuple[bool, bool], tracker: bool = True) -> None:
    """Stop the forkserver and resource tracker if this study started them (they would
    otherwise live until this process exits). The tracker is left alone after an error: a
    traceback may still hold semaphores it would unlink under their owners."""
    import gc
    from multiprocessing import forkserver, resource_tracker

    gc.collect()

    fs_before, rt_before = running_before
    if not fs_before:
        with contextlib.suppress(Exception):
            forkserver._forkserver._stop()  # type: ignore[attr-defined]
    if not rt_before and tracker:
        with contextlib.suppress(Exception):
            resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


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
