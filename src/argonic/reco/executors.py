"""Run the reco chain over an event file: in this process or fanned out over Dask workers.

``run_reco`` writes the reco file (every hit with its scores, the settings used) and
returns the summary of ``argonic reco``. Executors (``EXECUTORS``): ``local`` runs every
event here with one ModelInterface; ``dask`` runs each event as a task on a LocalCluster of
``workers`` processes or on an existing scheduler (dask-jobqueue on Slurm, HTCondor, PBS;
dask-kubernetes): each worker opens the event file and builds its own ModelInterface once
(each worker is one SONIC client); results are written in event order. The event file
must be on a filesystem the workers see.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from argonic import ArgonicError, __version__
from argonic._util import Bars, atomic_output, progress
from argonic.detector.eventfile import EventFile
from argonic.inference import make_interface
from argonic.reco.chain import RECO_FORMAT, EventResult, RecoWriter, reco_event
from argonic.reco.michel_context import MichelContext
from argonic.reco.module import EmTrackMichelId
from argonic.settings import Settings

_WORKER_STATE: dict[tuple[str, str], tuple[EventFile, EmTrackMichelId, MichelContext | None]] = {}


def reco_task(events_file: str, index: int, settings_json: str) -> EventResult:
    """Run on a worker: one event through the chain, reusing the worker's file handle and interface."""
    key = (events_file, settings_json)
    settings = Settings.model_validate_json(settings_json)
    if key not in _WORKER_STATE:
        events = EventFile(events_file)
        interface = make_interface(settings.inference)
        context = MichelContext.from_settings(settings.reco)
        _WORKER_STATE[key] = (events, EmTrackMichelId(interface, events.detector), context)
    events, module, context = _WORKER_STATE[key]
    return reco_event(events, index, module, context, settings.reco)


def run_dask(
    events_file: str | os.PathLike[str],
    n_events: int,
    settings: Settings,
    writer: RecoWriter,
    workers: int = 2,
    scheduler: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run every event as a Dask task; write the results in event order; return executor facts."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        )
    try:
        with Client(scheduler or cluster) as client:
            path, cfg = str(Path(events_file).resolve()), settings.model_dump_json()
            futures = [client.submit(reco_task, path, i, cfg, pure=False) for i in range(n_events)]
            pending: dict[int, EventResult] = {}
            next_index = 0
            for future in progress(as_completed(futures), n_events, "reco (dask)", show_progress):
                result = future.result()
                pending[result.index] = result
                while next_index in pending:
                    writer.write(pending.pop(next_index))
                    next_index += 1
            n_workers = len(client.scheduler_info()["workers"])
    finally:
        if cluster is not None:
            cluster.close()
    return {"executor": "dask", "workers": n_workers, "scheduler": scheduler or "LocalCluster"}


def run_local(
    events_file: str | os.PathLike[str],
    n_events: int,
    settings: Settings,
    writer: RecoWriter,
    workers: int = 1,
    scheduler: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run every event in this process, with one ModelInterface; return its statistics."""
    context = MichelContext.from_settings(settings.reco)
    with EventFile(events_file) as events, make_interface(settings.inference) as interface:
        module = EmTrackMichelId(interface, events.detector)
        with Bars(show_progress) as bars:
            events_bar = bars.add("reco", len(events), "events")
            patches_bar = bars.add("  patches", None, "hits")
            module.on_patches = patches_bar.update
            for i in range(len(events)):
                patches_bar.update(0)
                writer.write(reco_event(events, i, module, context, settings.reco))
                events_bar.advance()
        return interface.stats() if hasattr(interface, "stats") else {}


Executor = Callable[..., dict[str, Any]]
EXECUTORS: dict[str, Executor] = {"local": run_local, "dask": run_dask}


def run_reco(
    events_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    settings: Settings,
    show_progress: bool = True,
    executor: str = "local",
    workers: int = 2,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Run the chain over every event of ``events_file``; write scores to ``output``; return a summary."""
    if executor not in EXECUTORS:
        raise ArgonicError(f"unknown executor {executor!r}: choose from {', '.join(EXECUTORS)}")
    with EventFile(events_file) as events:
        n, detector_name = len(events), events.detector_name
    wall0 = time.perf_counter()
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as out:
        out.attrs.update(
            {
                "format": RECO_FORMAT,
                "format_version": 1,
                "argonic_version": __version__,
                "events_file": str(events_file),
                "detector": detector_name,
                "config": settings.model_dump_json(),
            }
        )
        writer = RecoWriter(out)
        interface_stats = EXECUTORS[executor](
            events_file, n, settings, writer, workers, scheduler, show_progress
        )
    summary = {
        "output": str(output),
        "interface": settings.inference.interface,
        "batch_size": settings.inference.batch_size,
        "executor": executor,
        **writer.summary(),
        "wall_s": time.perf_counter() - wall0,
        "interface_stats": interface_stats,
    }
    total = interface_stats.get("total", {}) if isinstance(interface_stats, dict) else {}
    if "bytes_sent" in total:  # remote: message sizes (before gRPC compression) per event
        n_events = max(summary["events"], 1)
        summary["bytes_sent_per_event"] = total["bytes_sent"] / n_events
        summary["bytes_received_per_event"] = total["bytes_received"] / n_events
    return summary
