"""PointIdAlg patches: the 48x48 inputs of EmTrackMichelId, built as production builds them.

Per (TPC, plane) image, from the deconvolved signal in ke-/tick (REFERENCE.md section 4):
1. the drift axis is downsampled by the mean of windows of 6 ticks;
2. multiplied by the per-plane gain 1.2e-3 / c_p;
3. clipped to [-10, 30] and mapped linearly to [-5, 15] (i.e. 0.5 x value);
4. the patch of a hit on wire w at peak tick t spans wires [w-24, w+24) and downsampled
   drift bins [int(t/6)-24, int(t/6)+24); pixels outside the plane are zero.
Output: NHWC float32 [N, 48, 48, 1] in hit order (axis 1 wire, axis 2 drift).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from argonic.detector.event import Event, Hits, PlaneFrame
from argonic.detector.geometry import Detector

PATCH_SIZE = 48
DRIFT_WINDOW = 6
ADC_MIN, ADC_MAX = -10.0, 30.0
OUT_MIN, OUT_MAX = -5.0, 15.0
GAIN_NUMERATOR = 1.2e-3


def plane_image(frame: PlaneFrame, calib_c: float) -> np.ndarray:
    """The preprocessed [n_wires, ceil(n_ticks/6)] image of one frame (steps 1-3).

    A last, partial drift window is averaged over 6 ticks as if the missing ticks were zero.
    """
    n_bins = -(-frame.n_ticks // DRIFT_WINDOW)
    flat = frame.wire.astype(np.int64) * n_bins + frame.tick // DRIFT_WINDOW
    img = np.bincount(flat, weights=frame.value, minlength=frame.n_wires * n_bins)
    img = img.reshape(frame.n_wires, n_bins) * (GAIN_NUMERATOR / calib_c / DRIFT_WINDOW)
    np.clip(img, ADC_MIN, ADC_MAX, out=img)
    img = OUT_MIN + (img - ADC_MIN) * ((OUT_MAX - OUT_MIN) / (ADC_MAX - ADC_MIN))
    return img.astype(np.float32)


def patch_origin(wire: np.ndarray, peak_tick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First wire and first drift bin of each hit's patch (may be negative at plane edges)."""
    half = PATCH_SIZE // 2
    d = np.floor(np.asarray(peak_tick, np.float64) / DRIFT_WINDOW).astype(np.int64)
    return np.asarray(wire, np.int64) - half, d - half


def cut_patches(
    image: np.ndarray, wire: np.ndarray, peak_tick: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Cut the [N, 48, 48] patches of hits (wire, peak tick) out of one preprocessed image."""
    n = len(wire)
    if out is None:
        out = np.empty((n, PATCH_SIZE, PATCH_SIZE), np.float32)
    if n == 0:
        return out
    w0, d0 = patch_origin(wire, peak_tick)
    pad = PATCH_SIZE
    padded = np.zeros((image.shape[0] + 2 * pad, image.shape[1] + 2 * pad), np.float32)
    padded[pad:-pad, pad:-pad] = image
    # hits further outside than a whole patch see only zeros; clamp them onto the zero border
    w0 = np.clip(w0 + pad, 0, padded.shape[0] - PATCH_SIZE)
    d0 = np.clip(d0 + pad, 0, padded.shape[1] - PATCH_SIZE)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (PATCH_SIZE, PATCH_SIZE))
    out[...] = windows[w0, d0]
    return out


def plane_patches(
    event: Event, detector: Detector, hits: Hits | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each (TPC, plane) with hits in turn: (indices into ``hits``, their patches [n, 48, 48, 1])."""
    hits = event.hits if hits is None else hits
    frames = {(f.tpc, f.plane): f for f in event.frames}
    key = hits.tpc.astype(np.int64) * 8 + hits.plane
    for k in np.unique(key):
        tpc, plane = divmod(int(k), 8)
        idx = np.flatnonzero(key == k)
        patches = np.zeros((len(idx), PATCH_SIZE, PATCH_SIZE, 1), np.float32)
        frame = frames.get((tpc, plane))
        if frame is not None:  # the hit finder never makes hits without signal; zeros if given some
            image = plane_image(frame, detector.planes[plane].calib_c)
            cut_patches(image, hits.wire[idx], hits.peak_tick[idx], out=patches[..., 0])
        yield idx, patches


def event_patches(event: Event, detector: Detector, hits: Hits | None = None) -> np.ndarray:
    """All patches of an event, [N, 48, 48, 1] float32, in the order of ``hits`` (default: the event's)."""
    hits = event.hits if hits is None else hits
    out = np.zeros((len(hits), PATCH_SIZE, PATCH_SIZE, 1), np.float32)
    for idx, patches in plane_patches(event, detector, hits):
        out[idx] = patches
    return out
