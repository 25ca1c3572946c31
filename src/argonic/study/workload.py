"""The study's workload, measured once in the parent: every event's patches (the same ones
every client sends) and the wall time of its modules, with local inference as the baseline."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


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
