"""The study's workload, measured once in the parent: every event's patches (the same ones
every client sends) and the wall time of its modules, with local inference as the baseline."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from argonic.inference.base import PATCH_SHAPE
from argonic.patches import cut_patches, encode_plane
from argonic.settings import RemoteSettings


class _CapturingInterface:
    """Stands in for the ModelInterface while measuring: keeps the patches, answers zeros."""

    def __init__(self) -> None:
        self.planes: list[np.ndarray] = []

    def predict(self, patches: np.ndarray) -> np.ndarray:
        self.planes.append(np.array(patches, np.float32, copy=True))
        return np.zeros((len(patches), 4), np.float32)


class _PlaneCapturingInterface(_CapturingInterface):
    """Also keeps each plane's image and hits (the module ships whole planes to an interface
    with ``predict_plane``)."""

    def __init__(self) -> None:
        super().__init__()
        self.plane_inputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.seconds_patches = 0.0

    def predict_plane(self, image: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        image = np.array(image, np.float32)
        self.plane_inputs.append((image, np.array(wire), np.array(tick)))
        patches = np.zeros((len(wire), *PATCH_SHAPE), np.float32)
        cut_patches(image, wire, tick, out=patches[..., 0])
        return self.predict(patches)


def recorded_requests(
    events_file: str | os.PathLike[str],
    mode: str = "patch",
    batch_size: int = 16,
    remote: RemoteSettings | None = None,
) -> list[bytes]:
    """The ModelInfer requests argonic's client sends for the events of ``events_file``:
    patch mode, ``batch_size`` patches each (plain fp32), or plane mode, one per (TPC, plane)."""
    from argonic.detector.eventfile import EventFile
    from argonic.inference.remote.identity import ModelSignature
    from argonic.inference.remote.wire import Encoder
    from argonic.reco.chain import reco_event
    from argonic.reco.module import EmTrackMichelId

    if mode not in ("patch", "plane"):
        raise ValueError(f"mode must be 'patch' or 'plane', not {mode!r}")
    remote = remote or RemoteSettings()
    encoder = Encoder(remote, ModelSignature.default(remote.model_name))
    requests: list[bytes] = []
    with EventFile(events_file) as events:
        for i in range(len(events)):
            capture = _PlaneCapturingInterface() if mode == "plane" else _CapturingInterface()
            reco_event(events, i, EmTrackMichelId(capture, events.detector))  # type: ignore[arg-type]
            if mode == "plane":
                assert isinstance(capture, _PlaneCapturingInterface)
                requests += [encoder.plane(encode_plane(*p), "none") for p in capture.plane_inputs]
                continue
            patches = np.concatenate(capture.planes)
            requests += [
                encoder.patches(patches[s : s + batch_size], ("FP32", "none"))
                for s in range(0, len(patches), batch_size)
            ]
    return requests


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
