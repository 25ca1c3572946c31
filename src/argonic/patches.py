"""PointIdAlg patches: the 48x48 inputs of EmTrackMichelId, built as production builds them.

Per (TPC, plane) image, from the deconvolved signal in ke-/tick (docs/reference.md, section 4):
1. the drift axis is downsampled by the mean of windows of 6 ticks;
2. multiplied by the per-plane gain 1.2e-3 / c_p;
3. clipped to [-10, 30] and mapped linearly to [-5, 15] (i.e. 0.5 x value);
4. the patch of a hit on wire w at peak tick t spans wires [w-24, w+24) and downsampled
   drift bins [int(t/6)-24, int(t/6)+24); pixels outside the plane are zero.
Output: NHWC float32 [N, 48, 48, 1] in hit order (axis 1 wire, axis 2 drift).

The reco chain, the inference clients and the server all cut patches with this one
module, so the network sees bit-identical inputs wherever the patches are made.

## Plane mode
Plane-mode requests: one (TPC, plane) image and its hits instead of their patches.

A plane-mode request carries, per (TPC, plane), the preprocessed image of
:func:`plane_image` reduced to what the patches can see, losslessly,
plus the hit coordinates; the receiver rebuilds every patch with the same PointIdAlg code
(:func:`cut_patches`), so the network sees bit-identical inputs.

Tensors (KServe v2 names and datatypes, all without a batch dimension)::

    plane_shape  INT32 [2]   n_wires, n_bins of the image
    pixel_delta  INT32 [P]   flat (row-major) index of each sent pixel minus the previous
                             one's (the first: minus 0); indices strictly increase
    pixel_value  FP32  [P]   the image value of each sent pixel (float32, exact)
    hit_wire     INT32 [N]   wire of each hit
    hit_tick     FP32  [N]   peak tick of each hit (float32, as Hits stores it)

Sent pixels: the non-zero pixels inside at least one hit's patch. The others are zero in
every patch or in none, so leaving them out changes no patch. Index deltas are mostly
small numbers: a general-purpose compressor (zstd) shrinks them about 10x.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from argonic.detector.event import Event, Hits, PlaneFrame
from argonic.detector.geometry import Detector
from argonic.repository import PATCH_SIZE

if TYPE_CHECKING:
    from argonic.detector.eventfile import EventFile

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


def sampled_patches(
    events: EventFile | Sequence[Event], detector: Detector, n: int, rng: np.random.Generator
) -> np.ndarray:
    """The patches [<= n, 48, 48, 1] of hits drawn at random, the same number from each
    event (drawn first, so only the drawn hits are cut), in event order."""
    per_event = -(-n // len(events))
    parts = []
    for i in range(len(events)):
        event = events[i]
        pick = np.sort(rng.choice(len(event.hits), min(per_event, len(event.hits)), False))
        parts.append(event_patches(event, detector, event.hits.select(pick)))
    return np.concatenate(parts)[:n]


# --- plane mode ------------------------------------------------------------------------------
#: pixels of the largest plane a plane-mode request may describe (1 GB as float32)
MAX_PLANE_PIXELS = 1 << 28
PLANE_INPUTS = ("plane_shape", "pixel_delta", "pixel_value", "hit_wire", "hit_tick")
PLANE_DATATYPES = {
    "plane_shape": "INT32",
    "pixel_delta": "INT32",
    "pixel_value": "FP32",
    "hit_wire": "INT32",
    "hit_tick": "FP32",
}


class PlaneRequestError(ValueError):
    """A plane-mode request whose tensors do not describe a plane and its hits."""


def patch_coverage(shape: tuple[int, int], wire: np.ndarray, peak_tick: np.ndarray) -> np.ndarray:
    """Boolean [n_wires, n_bins] mask of the pixels inside at least one hit's patch.

    A 2-D difference array of the patch rectangles, summed along both axes: O(pixels + hits).
    """
    n_wires, n_bins = shape
    w0, d0 = patch_origin(wire, peak_tick)
    # rectangles clipped to the plane; an empty one (hit far outside) adds +1 and -1 to the
    # same cells, i.e. nothing
    w_lo, w_hi = np.clip(w0, 0, n_wires), np.clip(w0 + PATCH_SIZE, 0, n_wires)
    d_lo, d_hi = np.clip(d0, 0, n_bins), np.clip(d0 + PATCH_SIZE, 0, n_bins)
    counts = np.zeros((n_wires + 1, n_bins + 1), np.int32)
    np.add.at(counts, (w_lo, d_lo), 1)
    np.add.at(counts, (w_hi, d_lo), -1)
    np.add.at(counts, (w_lo, d_hi), -1)
    np.add.at(counts, (w_hi, d_hi), 1)
    np.cumsum(counts, axis=0, out=counts)
    np.cumsum(counts, axis=1, out=counts)
    return counts[:n_wires, :n_bins] > 0


def encode_plane(
    image: np.ndarray, wire: np.ndarray, peak_tick: np.ndarray
) -> dict[str, np.ndarray]:
    """The plane-mode tensors of one preprocessed image and its hits (see the module doc)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise PlaneRequestError(
            f"image must be 2-D [n_wires, n_bins], got shape {list(image.shape)}"
        )
    wire = np.asarray(wire)
    peak_tick = np.asarray(peak_tick)
    if wire.shape != peak_tick.shape or wire.ndim != 1:
        raise PlaneRequestError(
            f"wire {list(wire.shape)} and peak_tick {list(peak_tick.shape)} "
            "must be 1-D of the same length"
        )
    index = np.flatnonzero((image != 0) & patch_coverage(image.shape, wire, peak_tick))
    delta = np.diff(index, prepend=0).astype(np.int32)
    return {
        "plane_shape": np.asarray(image.shape, np.int32),
        "pixel_delta": delta,
        "pixel_value": image.ravel()[index],
        "hit_wire": wire.astype(np.int32),
        "hit_tick": peak_tick.astype(np.float32),
    }


def decode_plane_pixels(
    tensors: Mapping[str, np.ndarray],
) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """((n_wires, n_bins), flat pixel indices int64, pixel values float32, hit wires, hit
    peak ticks float32) of plane-mode tensors, checked, without building the image.

    Raises PlaneRequestError naming the first problem (missing tensor, bad shape or
    dtype, pixel indices outside the plane or not increasing, NaN/inf values).
    """
    missing = [n for n in PLANE_INPUTS if n not in tensors]
    if missing:
        raise PlaneRequestError(f"plane request lacks tensor(s) {missing}")
    shape = np.asarray(tensors["plane_shape"]).reshape(-1)
    if shape.size != 2 or (shape < 1).any() or (shape > 1 << 20).any():
        raise PlaneRequestError(f"plane_shape must be 2 positive sizes, got {shape.tolist()}")
    n_wires, n_bins = (int(s) for s in shape)
    if n_wires * n_bins > MAX_PLANE_PIXELS:
        raise PlaneRequestError(f"plane_shape {[n_wires, n_bins]} is too large")
    delta = np.asarray(tensors["pixel_delta"]).reshape(-1)
    value = np.asarray(tensors["pixel_value"], np.float32).reshape(-1)
    if delta.size != value.size:
        raise PlaneRequestError(f"pixel_delta has {delta.size} values but pixel_value {value.size}")
    index = np.cumsum(delta, dtype=np.int64)
    if delta.size and ((delta[1:] <= 0).any() or index[0] < 0 or index[-1] >= n_wires * n_bins):
        raise PlaneRequestError(
            f"pixel indices must increase strictly and lie inside plane_shape {[n_wires, n_bins]}"
        )
    if not np.isfinite(value).all():
        raise PlaneRequestError("pixel_value contains NaN or inf")
    wire = np.asarray(tensors["hit_wire"]).reshape(-1)
    tick = np.asarray(tensors["hit_tick"], np.float32).reshape(-1)
    if wire.size != tick.size:
        raise PlaneRequestError(f"hit_wire has {wire.size} values but hit_tick {tick.size}")
    if not np.isfinite(tick).all() or (np.abs(tick) > 1e9).any():
        raise PlaneRequestError("hit_tick contains NaN, inf or absurd values")
    return (n_wires, n_bins), index, value, wire, tick


def decode_plane(tensors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image [n_wires, n_bins] float32, hit wires, hit peak ticks) of plane-mode tensors.

    Raises PlaneRequestError naming the first problem (see :func:`decode_plane_pixels`).
    """
    (n_wires, n_bins), index, value, wire, tick = decode_plane_pixels(tensors)
    image = np.zeros(n_wires * n_bins, np.float32)
    image[index] = value
    return image.reshape(n_wires, n_bins), wire, tick


def plane_patch_chunks(image: np.ndarray, wire: np.ndarray, peak_tick: np.ndarray, chunk: int):
    """Yield (start, stop, patches [n, 48, 48, 1]) for hits in chunks of ``chunk`` (one buffer reused)."""
    buffer = np.empty((min(chunk, max(len(wire), 1)), PATCH_SIZE, PATCH_SIZE, 1), np.float32)
    for start in range(0, len(wire), chunk):
        stop = min(start + chunk, len(wire))
        patches = buffer[: stop - start]
        cut_patches(image, wire[start:stop], peak_tick[start:stop], out=patches[..., 0])
        yield start, stop, patches
