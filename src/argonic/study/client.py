"""One client process of the scaling study: the reco chain with remote inference, timed per module.

A client connects its RemoteInterface, loads its events, reports "ready", waits at the
barrier with all the others and, once released, runs its events and sends one row per
event back to the parent. Two modes (``cpu``):

- ``"real"``: the real chain (``reco_event``: read, hit finding, patch building, inference);
- ``"emulated"``: the non-ML CPU work (read, hit finding, patch building) is replaced by a
  ``time.sleep`` of the duration the parent measured for that event (times ``cpu_scale``);
  the inference requests are the real ones: the event's real patches (memory-mapped from
  the parent's .npy file), real bytes, real gRPC, batched by the real server. This lets a
  small machine hold many clients, as the paper's clients each had their own core.

This module imports little so that the forkserver can preload it.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Any

import numpy as np

from argonic.inference.remote import RemoteInterface

ROW_FIELDS = (
    "n_clients",
    "client",
    "event_seq",
    "event_index",
    "client_cpu",
    "start_s",
    "end_s",
    "read_s",
    "hitfinding_s",
    "emtrackmichelid_s",
    "patches_s",
    "inference_s",
    "total_s",
    "patches",
    "requests",
    "bytes_sent",
    "bytes_received",
    "failovers",
)


def _totals(interface: RemoteInterface) -> dict[str, float]:
    t = interface.stats()["total"]
    return {k: t[k] for k in ("patches", "requests", "bytes_sent", "bytes_received", "failovers")}


def _sleep_until(deadline: float) -> None:
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left)


def client_main(spec: dict[str, Any], barrier: Any, queue: Any) -> None:
    """Entry point of one client process (see the module docstring); never raises."""
    client = spec["client"]
    interface = None
    try:
        inference = {
            "interface": "remote",
            "batch_size": spec["batch_size"],
            "remote": {
                "servers": [spec["server"]],
                "model_name": spec["model_name"],
                "server_stats": "off",
                "timeout_s": spec.get("timeout_s", 600.0),
                "mode": spec.get("mode", "sync"),
                "retries": 2,
            },
        }
        if spec.get("model_repository"):
            inference["remote"]["model_repository"] = spec["model_repository"]
        interface = RemoteInterface(inference)
        _connect(interface, spec.get("barrier_timeout_s", 300.0))
        run = _prepare(spec, interface)
        queue.put(("ready", client, None))
        barrier.wait(spec.get("barrier_timeout_s", 300.0))
        rows = run()
        queue.put(("rows", client, rows))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the study
        queue.put(("error", client, traceback.format_exc()))
        with contextlib.suppress(Exception):
            barrier.abort()
    finally:
        if interface is not None:
            interface.close()


def _connect(interface: RemoteInterface, timeout_s: float) -> None:
    """Connect, trying again for up to ``timeout_s``: many clients connecting at once to a
    busy server may see a connection attempt time out."""
    from argonic.inference.remote import RemoteInferenceError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            interface.connect()
            return
        except RemoteInferenceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _prepare(spec: dict[str, Any], interface: RemoteInterface):
    """Load what the client needs; return the function that runs its events after the barrier."""
    order: list[int] = spec["events"]
    base = {"n_clients": spec["n_clients"], "client": spec["client"], "client_cpu": spec["cpu"]}
    t_zero = spec["t_zero"]  # the parent's time.monotonic() origin (CLOCK_MONOTONIC is system-wide)

    if spec["cpu"] == "emulated":
        patches = np.load(spec["patches_file"], mmap_mode="r")
        workload = spec["workload"]
        scale = float(spec.get("cpu_scale", 1.0))
        for ev in {e for e in order}:  # page the client's events in now, not on the clock
            w = workload[ev]
            np.asarray(patches[w["offset"] : w["offset"] + w["patches"]]).sum()

        def run_emulated() -> list[dict[str, Any]]:
            rows = []
            for seq, ev in enumerate(order):
                w = workload[ev]
                before = _totals(interface)
                start = time.perf_counter()
                row = {
                    **base,
                    "event_seq": seq,
                    "event_index": ev,
                    "start_s": time.monotonic() - t_zero,
                }
                _sleep_until(start + w["read_s"] * scale)
                t1 = time.perf_counter()
                _sleep_until(t1 + w["hitfinding_s"] * scale)
                t2 = time.perf_counter()
                building = inferring = 0.0
                offset = w["offset"]
                for count, plane_s in zip(w["plane_patches"], w["plane_patches_s"], strict=True):
                    p0 = time.perf_counter()
                    _sleep_until(p0 + plane_s * scale)
                    p1 = time.perf_counter()
                    interface.predict(patches[offset : offset + count])
                    building += p1 - p0
                    inferring += time.perf_counter() - p1
                    offset += count
                t3 = time.perf_counter()
                after = _totals(interface)
                row.update(
                    read_s=t1 - start,
                    hitfinding_s=t2 - t1,
                    emtrackmichelid_s=t3 - t2,
                    patches_s=building,
                    inference_s=inferring,
                    total_s=t3 - start,
                    end_s=time.monotonic() - t_zero,
                    **{k: after[k] - before[k] for k in after},
                )
                rows.append(row)
            return rows

        return run_emulated

    from argonic.detector.eventfile import EventFile
    from argonic.reco.chain import reco_event
    from argonic.reco.module import EmTrackMichelId

    events = EventFile(spec["events_file"])
    module = EmTrackMichelId(interface, events.detector)

    def run_real() -> list[dict[str, Any]]:
        rows = []
        try:
            for seq, ev in enumerate(order):
                before = _totals(interface)
                row = {
                    **base,
                    "event_seq": seq,
                    "event_index": ev,
                    "start_s": time.monotonic() - t_zero,
                }
                r = reco_event(events, ev, module)
                after = _totals(interface)
                row.update(
                    read_s=r.wall["read"],
                    hitfinding_s=r.wall["hitfinding"],
                    emtrackmichelid_s=r.wall["emtrackmichelid"],
                    patches_s=r.patches_s,
                    inference_s=r.inference_s,
                    total_s=sum(r.wall.values()),
                    end_s=time.monotonic() - t_zero,
                    **{k: after[k] - before[k] for k in after},
                )
                rows.append(row)
        finally:
            events.close()
        return rows

    return run_real
