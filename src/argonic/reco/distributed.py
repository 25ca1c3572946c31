"""Fan the reco chain out over Dask workers: a LocalCluster here, the same code on a site's scheduler.

Each worker process opens the event file and builds its own ModelInterface once (so each
worker is one SONIC client), then runs whole events; the caller writes results in event
order. With dask-jobqueue (Slurm, HTCondor, PBS) or dask-kubernetes, start the cluster
there and pass its scheduler address; the event file must be on a filesystem the workers see.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from argonic._util import progress
from argonic.detector.eventfile import EventFile
from argonic.inference import make_interface
from argonic.reco.chain import EventResult, RecoWriter, reco_event
from argonic.reco.module import EmTrackMichelId

_WORKER_STATE: dict[tuple[str, str], tuple[EventFile, EmTrackMichelId]] = {}


def reco_task(events_file: str, index: int, config_json: str) -> EventResult:
    """Run on a worker: one event through the chain, reusing the worker's file handle and interface."""
    key = (events_file, config_json)
    if key not in _WORKER_STATE:
        events = EventFile(events_file)
        interface = make_interface(json.loads(config_json)["inference"])
        _WORKER_STATE[key] = (events, EmTrackMichelId(interface, events.detector))
    events, module = _WORKER_STATE[key]
    return reco_event(events, index, module)


def run_dask(
    events_file: str | os.PathLike[str],
    n_events: int,
    config: dict[str, Any],
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
            path, cfg = str(Path(events_file).resolve()), json.dumps(config)
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
