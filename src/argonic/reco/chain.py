"""The reconstruction chain up to EmTrackMichelId, with per-module wall and CPU time (the paper's Table 2).

Modules, per event: ``read`` (event input), for events with raw waveforms ``noisefilter``
and ``deconvolution`` (argonic.reco.sigproc: the deconvolved frames from the raw ones, as a
production job makes them; the frames stored beside them are not used), ``hitfinding``
(Gaussian hit finder on the deconvolved frames), ``emtrackmichelid`` (patches + inference through the configured
ModelInterface) and, where ``[reco] michel_context`` is on, ``michelcontext`` (each hit's
scores refined by its neighbours', argonic.reco.michel_context). ``RecoWriter`` stores every hit
with its [track, em, none, michel] scores (and the network's own, ``network_scores``).
``argonic.reco.executors`` runs the chain over a whole file, here or on Dask workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from argonic import ArgonicError
from argonic.detector.event import LABEL_NAMES, NONE, Hits, PlaneFrame
from argonic.detector.eventfile import EventFile, write_frames
from argonic.detector.response import field_response
from argonic.reco.hits import find_hits
from argonic.reco.michel_context import MichelContext
from argonic.reco.module import EmTrackMichelId
from argonic.reco.sigproc import deconvolve_frames, filter_frames
from argonic.settings import RecoSettings
from argonic.tracing import client_span


@dataclass
class EventResult:
    """What the chain produces for one event, with the time each module took."""

    index: int
    ids: tuple[int, int, int]  # run, subrun, event
    hits: Hits
    scores: np.ndarray  # the chain's output: the network's, refined by MichelContext if on
    network_scores: np.ndarray | None = None  # EmTrackMichelId's own, where a stage followed
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    patches_s: float = 0.0
    inference_s: float = 0.0
    frames: list[PlaneFrame] | None = None  # the deconvolved frames, where [reco] keep_frames

    @contextmanager
    def timed(self, module: str) -> Iterator[None]:
        """Time one module (wall and CPU), as a tracing span too (argonic.tracing)."""
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            with client_span(module):
                yield
        finally:
            self.wall[module] = self.wall.get(module, 0.0) + time.perf_counter() - w0
            self.cpu[module] = self.cpu.get(module, 0.0) + time.process_time() - c0


def reconstruct_hits(frames: list[PlaneFrame], stored: Hits) -> Hits:
    """Run the hit finder on every frame; each hit takes the truth of the stored hit on the
    same (TPC, plane, wire) within half a tick of its peak (NONE where there is none).

    Hit by hit, not all or nothing: frames recomputed from raw waveforms on another CPU
    (other FFT kernels) can move a peak by a rounding error or a hit across a threshold,
    and the other hits must keep their truth."""
    hits = Hits.concat([find_hits(f) for f in frames])
    if not len(hits) or not len(stored):
        return hits

    def keys(h: Hits) -> np.ndarray:  # (TPC, plane, wire) then the peak in 1/100 tick
        channel = (h.tpc.astype(np.int64) * 8 + h.plane) * 100_000 + h.wire
        return channel * 10_000_000 + np.rint(h.peak_tick * 100).astype(np.int64)

    mine, theirs = keys(hits), keys(stored)
    order = np.argsort(theirs, kind="stable")
    sorted_keys = theirs[order]
    pos = np.searchsorted(sorted_keys, mine)
    best = np.full(len(hits), -1)
    gap = np.full(len(hits), 51)  # half a tick, in 1/100 tick, plus one
    for candidate in (pos - 1, pos):  # the stored neighbours on either side
        ok = (candidate >= 0) & (candidate < len(order))
        c = np.clip(candidate, 0, len(order) - 1)
        d = np.abs(sorted_keys[c] - mine)  # > 10^7 when the channel differs
        better = ok & (d < gap)
        best[better], gap[better] = order[c[better]], d[better]
    found = best >= 0
    hits.label = np.where(found, stored.label[best], NONE).astype(np.uint8)
    hits.michel = found & stored.michel[best]
    hits.michel_id = np.where(found, stored.michel_id[best], 0).astype(np.int32)
    return hits


def reco_event(
    events: EventFile,
    index: int,
    module: EmTrackMichelId,
    context: MichelContext | None = None,
    options: RecoSettings | None = None,
) -> EventResult:
    """Run the chain's modules on event ``index`` of ``events``: read, signal processing
    where the event has raw waveforms, hit finding, EmTrackMichelId, then MichelContext
    where given; ``options``: the ``[reco]`` settings of the signal processing and of
    what the result keeps (default: the defaults). Traced as one "event" span."""
    with client_span("event", **{"event.index": index}):
        return _reco_event(events, index, module, context, options)


def _reco_event(
    events: EventFile,
    index: int,
    module: EmTrackMichelId,
    context: MichelContext | None,
    options: RecoSettings | None,
) -> EventResult:
    options = options or RecoSettings()
    result = EventResult(index, (0, 0, 0), Hits(), np.zeros((0, 4), np.float32))
    p0, i0 = module.seconds_patches, module.seconds_inference
    with result.timed("read"):
        event = events[index]
    result.ids = (event.run, event.subrun, event.event)
    if not event.raw and not event.frames and len(event.hits):
        raise ArgonicError(
            f"{events.path}: event {index} has {len(event.hits)} hits but neither raw waveforms "
            "nor deconvolved frames: the chain has nothing to start from"
        )
    if event.raw:
        field_response()  # once per process, at job start in production: not an event's cost
        with result.timed("noisefilter"):
            filtered = filter_frames(event.raw, coherent=options.coherent_noise)
        with result.timed("deconvolution"):
            event.frames = deconvolve_frames(filtered, events.detector)
    with result.timed("hitfinding"):
        result.hits = reconstruct_hits(event.frames, event.hits)
    with result.timed("emtrackmichelid"):
        result.scores = module.produce(event, result.hits)
    if context is not None:
        with result.timed("michelcontext"):
            result.network_scores = result.scores
            result.scores = context.apply(result.hits, result.scores, events.detector)
    if options.keep_frames:
        result.frames = event.frames
    result.patches_s = module.seconds_patches - p0
    result.inference_s = module.seconds_inference - i0
    return result


class RecoWriter:
    """Writes EventResults to the reco file (atomically) and adds up the summary."""

    def __init__(self, out: h5py.File) -> None:
        self.out = out
        self.n_events = 0
        self.n_hits = 0
        self.classes = np.zeros(3, np.int64)
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.patches_s = 0.0
        self.inference_s = 0.0

    def write(self, r: EventResult) -> None:
        predicted = np.argmax(r.scores[:, :3], axis=1).astype(np.uint8)
        g = self.out.create_group(f"events/{r.index:06d}")
        g.attrs.update(dict(zip(("run", "subrun", "event"), r.ids, strict=True)))
        for name, col in r.hits.columns().items():
            g[f"hits/{name}"] = col
        g["scores"] = r.scores
        if r.network_scores is not None:
            g["network_scores"] = r.network_scores
        g["predicted"] = predicted
        if r.frames is not None:
            write_frames(g.create_group("frames"), r.frames)
        self.n_events += 1
        self.n_hits += len(r.hits)
        self.classes += np.bincount(predicted, minlength=3)
        for m in r.wall:
            self.wall[m] = self.wall.get(m, 0.0) + r.wall[m]
            self.cpu[m] = self.cpu.get(m, 0.0) + r.cpu[m]
        self.patches_s += r.patches_s
        self.inference_s += r.inference_s

    def summary(self) -> dict[str, Any]:
        n = max(self.n_events, 1)
        total = sum(self.wall.values()) or 1.0
        return {
            "events": self.n_events,
            "hits": self.n_hits,
            "hits_per_event": self.n_hits / n,
            "modules": [
                {
                    "module": m,
                    "wall_s_per_event": self.wall[m] / n,
                    "cpu_s_per_event": self.cpu[m] / n,
                    "share": self.wall[m] / total,
                }
                for m in self.wall
            ],
            "emtrackmichelid_patches_s_per_event": self.patches_s / n,
            "emtrackmichelid_inference_s_per_event": self.inference_s / n,
            "predicted": {name: int(c) for name, c in zip(LABEL_NAMES, self.classes, strict=True)},
        }


RECO_FORMAT = "argonic-reco"


@dataclass
class RecoEvent:
    """One event of a reco file: its hits, their scores and predicted classes."""

    index: int
    ids: tuple[int, int, int]  # run, subrun, event
    hits: Hits
    scores: np.ndarray  # [N, 4] track, em, none, michel
    predicted: np.ndarray  # [N] TRACK, EM or NONE


def is_reco_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an HDF5 file written by ``argonic reco``."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == RECO_FORMAT
    except OSError:
        return False


def read_reco_event(path: str | os.PathLike[str], index: int) -> tuple[RecoEvent, dict[str, Any]]:
    """Event ``index`` of the reco file ``path``, and the file's attributes."""
    if not Path(path).is_file():
        raise ArgonicError(f"{path}: no such file")
    if not is_reco_file(path):
        raise ArgonicError(f"{path}: not an argonic reco file (no format={RECO_FORMAT!r})")
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        keys = sorted(f["events"].keys()) if "events" in f else []
        if not 0 <= index < len(keys):
            raise ArgonicError(f"event index {index} out of range: {path} has {len(keys)} events")
        g = f["events"][keys[index]]
        hits = Hits(**{name: g[f"hits/{name}"][:] for name in Hits.DTYPES})
        event = RecoEvent(
            int(keys[index]),
            (int(g.attrs["run"]), int(g.attrs["subrun"]), int(g.attrs["event"])),
            hits,
            g["scores"][:],
            g["predicted"][:],
        )
    return event, attrs


def format_table(summary: dict[str, Any]) -> str:
    """The per-module time table, as the paper's Table 2."""
    lines = [f"{'module':<18}{'wall s/event':>14}{'CPU s/event':>14}{'share':>8}"]
    for row in summary["modules"]:
        lines.append(
            f"{row['module']:<18}{row['wall_s_per_event']:>14.3f}{row['cpu_s_per_event']:>14.3f}"
            f"{row['share']:>8.1%}"
        )
    lines.append(f"{'  patches':<18}{summary['emtrackmichelid_patches_s_per_event']:>14.3f}")
    lines.append(f"{'  inference':<18}{summary['emtrackmichelid_inference_s_per_event']:>14.3f}")
    if "bytes_sent_per_event" in summary:
        lines.append(f"{'  MB sent/event':<18}{summary['bytes_sent_per_event'] / 1e6:>14.3f}")
        lines.append(f"{'  MB recv/event':<18}{summary['bytes_received_per_event'] / 1e6:>14.3f}")
    return "\n".join(lines)
