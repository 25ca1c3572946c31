"""The EmTrackMichelId module: PointIdAlg patches of every hit -> ModelInterface -> per-hit scores."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from argonic import ArgonicError
from argonic.detector.event import Event, Hits
from argonic.detector.geometry import Detector, get_detector
from argonic.inference.base import ModelInterface
from argonic.patches import PATCH_SIZE, cut_patches, plane_image
from argonic.tracing import client_span

N_SCORES = 4  # [track, em, none, michel]


class EmTrackMichelId:
    """Classify every hit as track, em or none, with a Michel score, through ``interface``.

    Each (TPC, plane) goes to the interface in turn, as its preprocessed image and its
    hits (``predict_plane``): a local interface cuts the patches (PointIdAlg rules) and
    runs them in its batch size, a remote one in plane mode sends the image and lets the
    server cut them. Memory stays bounded (~3,000 patches, 28 MB, per plane of a full
    event). ``seconds_patches`` counts building images and, where the interface cuts them
    here, patches; ``seconds_inference`` the rest of the interface's time.

    ``on_patches(done, total)``, if set, is called after each (TPC, plane) with the hits of
    the event scored so far (progress inside an event).

    ``detector`` defaults to each event's own (``Event.detector_name``, set by the
    simulation and the event file), so ``EmTrackMichelId(interface).produce(event)`` works.
    """

    def __init__(self, interface: ModelInterface, detector: Detector | None = None) -> None:
        self.interface = interface
        self.detector = detector
        self.seconds_patches = 0.0  # wall time spent building patches (the paper's "preprocessing")
        self.seconds_inference = 0.0  # wall time inside the interface
        self.on_patches: Callable[[int, int], None] | None = None

    def _detector(self, event: Event) -> Detector:
        if self.detector is not None:
            return self.detector
        if not event.detector_name:
            raise ArgonicError(
                "the event does not say its detector: give one, "
                "EmTrackMichelId(interface, get_detector('protodune-sp'))"
            )
        return get_detector(event.detector_name)

    def produce(self, event: Event, hits: Hits | None = None) -> np.ndarray:
        """Scores [N, 4] float32 for ``hits`` (default: the event's own; in their order) of
        ``event``."""
        hits = event.hits if hits is None else hits
        detector = self._detector(event)
        scores = np.zeros((len(hits), N_SCORES), np.float32)
        frames = {(f.tpc, f.plane): f for f in event.frames}
        key = hits.tpc.astype(np.int64) * 8 + hits.plane
        done = 0
        for k in np.unique(key):
            tpc, plane = divmod(int(k), 8)
            idx = np.flatnonzero(key == k)
            t0 = time.perf_counter()
            frame = frames.get((tpc, plane))
            # the hit finder never makes hits without signal; all-zero patches if given some
            image = (
                plane_image(frame, detector.planes[plane].calib_c)
                if frame is not None
                else np.zeros((1, 1), np.float32)
            )
            wire, peak_tick = hits.wire[idx], hits.peak_tick[idx]
            if not hasattr(self.interface, "predict_plane"):  # a duck-typed stand-in: cut here
                patches = np.zeros((len(idx), PATCH_SIZE, PATCH_SIZE, 1), np.float32)
                cut_patches(image, wire, peak_tick, out=patches[..., 0])
                t1 = time.perf_counter()
                self.seconds_patches += t1 - t0
                scores[idx] = self.interface.predict(patches)
                self.seconds_inference += time.perf_counter() - t1
                done += len(idx)
                if self.on_patches is not None:
                    self.on_patches(done, len(hits))
                continue
            t1 = time.perf_counter()
            cut0 = self.interface.seconds_patches
            with client_span("plane", **{"tpc": tpc, "plane": plane, "hits": len(idx)}):
                scores[idx] = self.interface.predict_plane(image, wire, peak_tick)
            cut = self.interface.seconds_patches - cut0
            self.seconds_patches += t1 - t0 + cut
            self.seconds_inference += time.perf_counter() - t1 - cut
            done += len(idx)
            if self.on_patches is not None:
                self.on_patches(done, len(hits))
        return scores
