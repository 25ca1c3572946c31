"""Gaussian hit finding on the deconvolved wire signal, and hit truth labelling.

``find_hits`` follows LArSoft's GausHitFinder on one (TPC, plane) frame, vectorised over
all its wires (no loop over wires or ticks):

1. regions of interest (ROI): runs of consecutive non-zero ticks on one wire;
2. candidate peaks: local maxima above ``threshold`` (ke-/tick); of two neighbouring peaks
   whose valley is shallower than ``PROMINENCE`` (ke-/tick, ~3x the noise) plus 5% of the
   lower one, the lower is dropped (repeated until stable), so noise wiggles on a long
   pulse do not make peaks;
3. each peak owns the ticks of its ROI between the valleys that separate it from its
   neighbours; in a ROI with more than ``max_multi`` peaks (LArSoft's MaxMultiHit, 4), or
   whose pulse above half its maximum is longer than ``LONG_PULSE_TICKS`` (a track along the
   drift), the span above threshold is instead cut into a train of equal hits of about
   ``LONG_PULSE_TICKS`` each, as LArSoft does for long pulses;
4. hit parameters by moments rather than a nonlinear fit: peak tick and amplitude from a
   parabola through the maximum and its two neighbours, integral = sum of the hit's ticks,
   sigma = integral / (amplitude sqrt(2 pi)) (exact for a Gaussian); for a pulse-train hit
   the peak tick is the charge centroid, the amplitude the maximum and sigma the RMS of
   a flat piece (length / sqrt(12)).

``label_hits`` gives each hit the truth category holding the most true charge on its wire
within peak +- 2 sigma; hits without true charge (noise) get NONE. A hit is Michel when
most of that charge is a Michel electron's own (LArSoft's convention, see
docs/event-file.md), and ``michel_id`` names the Michel electron holding most of it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from argonic.detector.event import EM, NONE, TRACK, Hits, PlaneFrame

if TYPE_CHECKING:
    from argonic.detector.simulate import PlaneTruth

HIT_THRESHOLD = 0.6  # ke-/tick (dunereco GausHitFinder-like ROI threshold)
PROMINENCE = 0.4  # ke-/tick
LONG_PULSE_TICKS = 16
MAX_MULTI_HIT = 4
_SQRT_2PI = math.sqrt(2 * math.pi)


def _sorted(frame: PlaneFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = frame.wire.astype(np.int64)
    t = frame.tick.astype(np.int64)
    v = frame.value.astype(np.float64)
    key = w * frame.n_ticks + t
    if len(key) > 1 and np.any(np.diff(key) <= 0):
        order = np.argsort(key, kind="stable")
        w, t, v = w[order], t[order], v[order]
    nz = v != 0
    return w[nz], t[nz], v[nz]


def _prune_peaks(v: np.ndarray, roi: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Drop the lower of two neighbouring peaks separated by a shallow valley (until stable)."""
    for _ in range(50):
        if len(peaks) < 2:
            return peaks
        valley = np.minimum.reduceat(v, peaks)[:-1]  # min over [p_i, p_{i+1})
        a, b = v[peaks[:-1]], v[peaks[1:]]
        low = np.minimum(a, b)
        shallow = (roi[peaks[:-1]] == roi[peaks[1:]]) & (low - valley < PROMINENCE + 0.05 * low)
        if not shallow.any():
            return peaks
        drop = np.zeros(len(peaks), bool)
        i = np.flatnonzero(shallow)
        drop[np.where(a[i] < b[i], i, i + 1)] = True
        peaks = peaks[~drop]
    return peaks


def find_hits(
    frame: PlaneFrame, threshold: float = HIT_THRESHOLD, max_multi: int = MAX_MULTI_HIT
) -> Hits:
    """Gaussian hits of one plane frame, sorted by wire then tick (labels NONE: see label_hits)."""
    w, t, v = _sorted(frame)
    n = len(v)
    if n == 0:
        return Hits()
    start = np.ones(n, bool)
    start[1:] = (w[1:] != w[:-1]) | (t[1:] != t[:-1] + 1)
    roi = np.cumsum(start) - 1
    roi_first = np.flatnonzero(start)
    roi_end = np.append(roi_first[1:], n)  # exclusive
    prev = np.full(n, -np.inf)
    prev[1:] = np.where(start[1:], -np.inf, v[:-1])
    nxt = np.full(n, -np.inf)
    nxt[:-1] = np.where(start[1:], -np.inf, v[1:])
    peaks = np.flatnonzero((v > threshold) & (v > prev) & (v >= nxt))
    peaks = _prune_peaks(v, roi, peaks)
    if len(peaks) == 0:
        return Hits()
    csum = np.concatenate([[0.0], np.cumsum(v)])
    pr = roi[peaks]
    # valleys between neighbouring peaks of one ROI: first minimum of v in [p_i, p_{i+1})
    same_next = np.zeros(len(peaks), bool)
    same_next[:-1] = pr[:-1] == pr[1:]
    interval = np.searchsorted(peaks, np.arange(n), side="right") - 1
    mins = np.minimum.reduceat(v, peaks)
    at_min = (interval >= 0) & (v == mins[np.maximum(interval, 0)])
    ids, first = np.unique(interval[at_min], return_index=True)
    valley = np.empty(len(peaks), np.int64)
    valley[ids] = np.flatnonzero(at_min)[first]
    seg_hi = np.where(same_next, valley, roi_end[pr])
    seg_lo = np.empty(len(peaks), np.int64)
    seg_lo[0] = roi_first[pr[0]]
    seg_lo[1:] = np.where(same_next[:-1], valley[:-1], roi_first[pr[1:]])
    # amplitude and peak tick from a parabola through the maximum and its neighbours
    y1 = v[peaks]
    y0 = np.where(np.isfinite(prev[peaks]), prev[peaks], y1)
    y2 = np.where(np.isfinite(nxt[peaks]), nxt[peaks], y1)
    den = y0 - 2 * y1 + y2
    delta = np.clip(np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1), 0.0), -0.5, 0.5)
    amp = y1 - 0.25 * (y0 - y2) * delta
    integral = csum[seg_hi] - csum[seg_lo]
    # length of each hit above half its maximum, to find long pulses
    owner = np.repeat(np.arange(len(peaks)), seg_hi - seg_lo)
    pix = _segment_pixels(seg_lo, seg_hi)
    above_half = np.bincount(owner, weights=v[pix] >= 0.5 * amp[owner], minlength=len(peaks))
    n_peaks_roi = np.bincount(pr, minlength=len(roi_first))
    train_roi = np.zeros(len(roi_first), bool)
    train_roi[pr[above_half > LONG_PULSE_TICKS]] = True
    train_roi |= n_peaks_roi > max_multi
    normal = ~train_roi[pr]
    out = [
        Hits(
            tpc=np.full(normal.sum(), frame.tpc),
            plane=np.full(normal.sum(), frame.plane),
            wire=w[peaks[normal]],
            peak_tick=(t[peaks] + delta)[normal],
            sigma=np.maximum(integral / np.maximum(amp, 1e-6) / _SQRT_2PI, 0.3)[normal],
            amplitude=amp[normal],
            integral=integral[normal],
            label=np.full(normal.sum(), NONE),
            michel=np.zeros(normal.sum(), bool),
        )
    ]
    rois = np.flatnonzero(train_roi)
    if len(rois):
        out.append(_pulse_trains(frame, w, t, v, csum, roi_first[rois], roi_end[rois], threshold))
    hits = Hits.concat(out)
    return hits.select(np.lexsort((hits.peak_tick, hits.wire)))


def _segment_pixels(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenated index ranges [lo_i, hi_i)."""
    lengths = hi - lo
    owner_start = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(lengths.sum()) + owner_start


def _pulse_trains(
    frame: PlaneFrame,
    w: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    csum: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    threshold: float,
) -> Hits:
    """Cut each ROI [lo, hi) into equal hits of ~LONG_PULSE_TICKS over its span above threshold."""
    pix = _segment_pixels(lo, hi)
    owner = np.repeat(np.arange(len(lo)), hi - lo)
    above = v[pix] > threshold
    big = np.iinfo(np.int64).max
    first = np.full(len(lo), big)
    np.minimum.at(first, owner[above], pix[above])
    last = np.full(len(lo), -1)
    np.maximum.at(last, owner[above], pix[above])
    ok = last >= 0
    lo, hi, first, last = lo[ok], hi[ok], first[ok], last[ok] + 1
    span = last - first
    n_hits = np.maximum(1, np.rint(span / LONG_PULSE_TICKS).astype(np.int64))
    k = np.arange(n_hits.sum()) - np.repeat(np.cumsum(n_hits) - n_hits, n_hits)
    owner = np.repeat(np.arange(len(lo)), n_hits)
    b0 = first[owner] + (k * span[owner]) // n_hits[owner]
    b1 = first[owner] + ((k + 1) * span[owner]) // n_hits[owner]
    b0 = np.where(k == 0, lo[owner], b0)  # the tails go to the first and last hit
    b1 = np.where(k == n_hits[owner] - 1, hi[owner], b1)
    integral = csum[b1] - csum[b0]
    pix = _segment_pixels(b0, b1)
    piece = np.repeat(np.arange(len(b0)), b1 - b0)
    vp = np.maximum(v[pix], 0)
    wsum = np.bincount(piece, weights=vp, minlength=len(b0))
    tmean = np.bincount(piece, weights=vp * t[pix], minlength=len(b0)) / np.maximum(wsum, 1e-9)
    amp = np.full(len(b0), -np.inf)
    np.maximum.at(amp, piece, v[pix])
    n = len(b0)
    return Hits(
        tpc=np.full(n, frame.tpc),
        plane=np.full(n, frame.plane),
        wire=w[b0],
        peak_tick=tmean,
        sigma=(b1 - b0) / math.sqrt(12),
        amplitude=amp,
        integral=integral,
        label=np.full(n, NONE),
        michel=np.zeros(n, bool),
    )


def _dominant_id(
    key: np.ndarray, q: np.ndarray, ids: np.ndarray, lo_key: np.ndarray, hi_key: np.ndarray
) -> np.ndarray:
    """Per window [lo_key, hi_key] of the sorted ``key``: the id holding most charge (0: none)."""
    j0 = np.searchsorted(key, lo_key, side="left")
    j1 = np.searchsorted(key, hi_key, side="right")
    out = np.zeros(len(lo_key), np.int32)
    n_in = np.maximum(j1 - j0, 0)
    if n_in.sum() == 0:
        return out
    owner = np.repeat(np.arange(len(lo_key)), n_in)
    idx = _segment_pixels(j0, j0 + n_in)
    span = int(ids.max()) + 1
    uniq, inv = np.unique(owner.astype(np.int64) * span + ids[idx], return_inverse=True)
    weight = np.bincount(inv, weights=q[idx], minlength=len(uniq))
    who = uniq // span
    best = np.lexsort((-weight, who))  # per owner, the heaviest id first
    first = best[np.r_[True, who[best][1:] != who[best][:-1]]]
    out[who[first]] = (uniq[first] % span).astype(np.int32)
    return out


def label_hits(hits: Hits, truth: PlaneTruth | None) -> Hits:
    """Set each hit's label (TRACK, EM, NONE), Michel flag and Michel id from the true charge.

    ``truth`` has arrays wire, tick, charge, category (TRACK or EM), michel and michel_id
    (the simulation's ``PlaneTruth``), or is None (every hit is NONE). The hit takes the
    category with the most true charge on its wire within peak_tick +- 2 sigma; Michel if
    Michel charge (a Michel electron's own deposits) is the majority of that charge, with the
    id of the Michel electron holding most of it; NONE if there is no true charge there.
    """
    n = len(hits)
    label = np.full(n, NONE, np.uint8)
    michel = np.zeros(n, bool)
    michel_id = np.zeros(n, np.int32)
    if truth is not None and n and len(truth.charge):
        n_t = int(max(truth.tick.max(), np.ceil(hits.peak_tick.max() + 2 * hits.sigma.max()))) + 2
        key = truth.wire.astype(np.int64) * n_t + truth.tick.astype(np.int64)
        order = np.argsort(key, kind="stable")
        key = key[order]
        q = truth.charge[order].astype(np.float64)
        cat = truth.category[order]
        mic = truth.michel[order]
        cs = np.stack(
            [
                np.concatenate([[0.0], np.cumsum(np.where(sel, q, 0.0))])
                for sel in (cat == TRACK, cat == EM, mic)
            ]
        )
        lo = np.ceil(hits.peak_tick - 2 * hits.sigma).astype(np.int64)
        hi = np.floor(hits.peak_tick + 2 * hits.sigma).astype(np.int64)
        base = hits.wire.astype(np.int64) * n_t
        i0 = np.searchsorted(key, base + np.maximum(lo, 0), side="left")
        i1 = np.searchsorted(key, base + np.maximum(hi, 0), side="right")
        trk, em, mq = cs[:, i1] - cs[:, i0]
        total = trk + em
        has = total > 0.05 * np.maximum(hits.integral, 0) + 1e-3
        label = np.where(has, np.where(trk >= em, TRACK, EM), NONE).astype(np.uint8)
        michel = has & (mq > 0.5 * total)
        ids = truth.michel.astype(np.int32) if truth.michel_id is None else truth.michel_id
        m_sel = np.flatnonzero(michel)
        on_m = mic & (ids[order] > 0)
        michel_id[m_sel] = np.maximum(
            _dominant_id(
                key[on_m],
                q[on_m],
                ids[order][on_m].astype(np.int64),
                base[m_sel] + np.maximum(lo[m_sel], 0),
                base[m_sel] + np.maximum(hi[m_sel], 0),
            ),
            1,
        )
    cols = hits.columns()
    cols["label"], cols["michel"], cols["michel_id"] = label, michel, michel_id
    return Hits(**cols)
