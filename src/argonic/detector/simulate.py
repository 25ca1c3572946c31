"""Event simulation: particles -> drifted charge -> deconvolved wire signals and their truth.

The chain for one readout (``simulate_readout``):

1. particles (``physics``): cosmic muons with delta rays and Michel electrons, cosmic EM
   particles, one test-beam particle, 39Ar blips -> deposits (position, time, charge in
   ke- after recombination, truth category, Michel flag);
2. drift to the anode of the deposit's TPC: electron lifetime, longitudinal and transverse
   diffusion, arrival tick = trigger_tick + (t0 + drift time) / tick;
3. per (TPC, plane): charge shared between neighbouring wires by the transverse diffusion
   (the U and V channel numbers wrap), spread over ticks by the longitudinal diffusion,
   then smeared by the Wire-Cell "gauss" filter (sigma 2.7 ticks): the deconvolved signal
   in ke-/tick (no bipolar response: this is the frame after signal processing);
4. noise: white noise of 2.5 ADC (x 0.16 ke-/ADC = 0.40 ke-/tick), filtered by the same
   Gaussian (0.129 ke-/tick RMS after the filter); regions of interest (ROI) are the ticks
   where signal + noise exceeds ROI_THRESHOLD, padded by ROI_PAD ticks; zero elsewhere;
5. the truth of each frame (charge per pixel by category, Michel flags and Michel-electron
   ids: only the decay electron's own deposits, LArSoft's convention), from which reco
   labels the hits it finds (``argonic.reco.simulation``).

Noise is only computed where it matters: inside the padded regions around true signal
(from a bank of filtered noise, indexed at a random offset per wire, so it is correlated
along ticks as the real filtered noise is), plus noise-only ROIs placed at random with the
rate at which filtered Gaussian noise crosses ROI_THRESHOLD (Rice's formula), each with the
shape of a noise excursion above that level (Slepian model). Outside ROIs the output is
zero anyway, so the frame has the statistics of the dense computation at a fraction of
its cost; noise-only ROIs whose peak exceeds the hit threshold give the spurious hits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import ndtr

from argonic.detector import physics
from argonic.detector.event import Event, Hits, PlaneFrame, RawFrame
from argonic.detector.geometry import TPC, Detector, Plane
from argonic.detector.response import Noise, raw_waveforms

# --- detector response constants -----------------------------------------------------------
DIFFUSION_L_CM2_US = 4.0e-6  # 4.0 cm2/s: sigma_L = 1.3 mm after 3.6 m (2.25 ms)
DIFFUSION_T_CM2_US = 8.8e-6  # 8.8 cm2/s: sigma_T = 2.0 mm after 3.6 m
ELECTRON_LIFETIME_US = 10_000.0  # 10 ms
FILTER_SIGMA_TICKS = 2.7  # Wire-Cell gauss filter
ADC_KE = 0.16  # ke- per ADC count (ProtoDUNE-SP: ~14 mV/fC, 12-bit ADC)
NOISE_ADC = 2.5  # white noise RMS in ADC counts (the paper's simulation)
NOISE_WHITE_KE = NOISE_ADC * ADC_KE  # 0.40 ke-/tick before the filter
NOISE_RMS_KE = NOISE_WHITE_KE / math.sqrt(2 * math.sqrt(math.pi) * FILTER_SIGMA_TICKS)  # 0.129
ROI_THRESHOLD = 0.5  # ke-/tick, ~3.9 x the filtered noise RMS
ROI_PAD = 8  # ticks added on both sides of a region above threshold
SIGNAL_FLOOR = 0.01  # ke-/tick: where the noise-free signal is below this, there is no signal
_BANK = 1 << 20  # samples in the filtered noise bank of one event


@dataclass
class PlaneTruth:
    """True charge of one (TPC, plane) on wires and ticks, for hit labelling."""

    wire: np.ndarray  # int32
    tick: np.ndarray  # int32
    charge: np.ndarray  # float32, ke-
    category: np.ndarray  # uint8: TRACK or EM
    michel: np.ndarray  # bool: a Michel electron's own deposit
    michel_id: np.ndarray | None = None  # int32: which Michel electron (0: none); None: michel


def readout_window_us(det: Detector) -> tuple[float, float]:
    """Times (us, relative to the trigger) of deposits whose charge can reach the readout."""
    max_drift = max(t.drift_length for t in det.tpcs) / det.drift_velocity_cm_per_us
    return (
        -det.trigger_tick * det.tick_us - max_drift - 20.0,
        (det.n_ticks - det.trigger_tick) * det.tick_us + 20.0,
    )


def make_world(det: Detector, rng: np.random.Generator) -> physics.World:
    """A particle world spanning all TPCs of ``det`` (deposits outside it are not made)."""
    (x0, x1), (y0, y1), (z0, z1) = det.bounds
    return physics.World(np.array([x0, y0, z0]), np.array([x1, y1, z1]), rng)


def generate_deposits(
    det: Detector,
    rng: np.random.Generator,
    cosmics: bool = True,
    beam: bool = True,
    radiologicals: bool = True,
) -> dict[str, np.ndarray]:
    """All deposits of one readout (see ``physics``): pos [N,3] cm, t us, q ke-, cat, michel."""
    world = make_world(det, rng)
    (x0, x1), (y0, y1), (z0, z1) = det.bounds
    window = readout_window_us(det)
    if cosmics:
        n_mu = physics.cosmic_muons(world, window)
        physics.cosmic_em(world, window, n_mu)
    if beam:
        if det.name == "protodune-sp":
            physics.beam_particle(world)
        else:  # other detectors: through the middle of the upstream face, slightly down
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2, z0 + 1e-3])
            physics.beam_particle(world, centre, np.array([0.0, -0.2, 1.0]))
    if radiologicals:
        physics.ar39_betas(world, window)
    return world.dep.arrays()


def _share(
    center: np.ndarray, sigma: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bins floor(center)+offsets and the Gaussian fraction of each deposit in them (sum 1)."""
    k = np.floor(center).astype(np.int64)[:, None] + offsets[None, :]
    s = sigma[:, None]
    f = ndtr((k + 1 - center[:, None]) / s) - ndtr((k - center[:, None]) / s)
    f /= np.maximum(f.sum(axis=1, keepdims=True), 1e-12)
    return k, f


def drift(det: Detector, tpc: TPC, dep: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deposits of ``tpc`` drifted to its anode: y, z, tick (float), charge, diffusion widths."""
    pos = dep["pos"]
    inside = tpc.contains(pos[:, 0], pos[:, 1], pos[:, 2])
    p = pos[inside]
    t_drift = np.abs(p[:, 0] - tpc.x_anode) / det.drift_velocity_cm_per_us
    tick = det.trigger_tick + (dep["t"][inside] + t_drift) / det.tick_us
    keep = (tick > -10) & (tick < det.n_ticks + 10)
    t_drift, tick = t_drift[keep], tick[keep]
    q = dep["q"][inside][keep] * np.exp(-t_drift / ELECTRON_LIFETIME_US)
    return {
        "y": p[keep, 1],
        "z": p[keep, 2],
        "tick": tick,
        "q": q.astype(np.float64),
        "sigma_l_ticks": np.sqrt(2 * DIFFUSION_L_CM2_US * t_drift) / det.cm_per_tick,
        "sigma_t_cm": np.sqrt(2 * DIFFUSION_T_CM2_US * t_drift),
        "cat": dep["cat"][inside][keep],
        "michel": dep["michel"][inside][keep],
        "michel_id": _michel_ids(dep)[inside][keep],
    }


def _michel_ids(dep: dict[str, np.ndarray]) -> np.ndarray:
    """The deposits' Michel-electron ids (int32, 0: none); 1 for every flagged one if absent."""
    if "michel_id" in dep:
        return np.asarray(dep["michel_id"], np.int32)
    return np.asarray(dep["michel"], bool).astype(np.int32)


def plane_charge(
    det: Detector, tpc: TPC, plane: Plane, d: dict[str, np.ndarray]
) -> tuple[np.ndarray, PlaneTruth]:
    """Drifted charge binned on (wire, tick) of one plane (before the filter), and the truth."""
    n_w, n_t = plane.n_wires, det.n_ticks
    w = det.wire(tpc, plane, d["y"], d["z"])
    wk, wf = _share(w, np.maximum(d["sigma_t_cm"] / plane.pitch_cm, 0.02), np.arange(-1, 2))
    if plane.wrapped:
        wk = np.mod(wk, n_w)
    # tick k spans [k - 0.5, k + 0.5): shift by half a tick to share into [k, k + 1) bins
    tk, tf = _share(d["tick"] + 0.5, np.maximum(d["sigma_l_ticks"], 0.05), np.arange(-3, 4))
    q = d["q"]
    # truth: charge per wire at the deposit's nearest tick
    t_near = np.rint(d["tick"]).astype(np.int64)
    tw = wk.ravel()
    tt = np.repeat(t_near, 3)
    tq = (q[:, None] * wf).ravel()
    ok = (tw >= 0) & (tw < n_w) & (tt >= 0) & (tt < n_t) & (tq > 1e-3)
    truth = PlaneTruth(
        tw[ok].astype(np.int32),
        tt[ok].astype(np.int32),
        tq[ok].astype(np.float32),
        np.repeat(d["cat"], 3)[ok],
        np.repeat(d["michel"], 3)[ok],
        np.repeat(d["michel_id"], 3)[ok],
    )
    # signal: 3 wires x 7 ticks per deposit
    flat_w = np.repeat(wk, 7, axis=1)  # [N, 21]
    flat_t = np.tile(tk, (1, 3))
    weight = (q[:, None, None] * wf[:, :, None] * tf[:, None, :]).reshape(len(q), 21)
    ok = (flat_w >= 0) & (flat_w < n_w) & (flat_t >= 0) & (flat_t < n_t)
    grid = np.bincount((flat_w * n_t + flat_t)[ok], weights=weight[ok], minlength=n_w * n_t)
    return grid.reshape(n_w, n_t).astype(np.float32), truth


def noise_bank(rng: np.random.Generator, n: int = _BANK) -> np.ndarray:
    """Filtered white noise (periodic), RMS NOISE_RMS_KE, to be indexed along ticks."""
    white = rng.standard_normal(n).astype(np.float32) * NOISE_WHITE_KE
    return gaussian_filter1d(white, FILTER_SIGMA_TICKS, mode="wrap", truncate=4.0)


def dilate_ticks(index: np.ndarray, pad: int, n_ticks: int) -> np.ndarray:
    """Sorted flat pixel indices (wire * n_ticks + tick) widened by ``pad`` ticks on each side.

    Works on runs of consecutive ticks, so its cost scales with the number of pixels set,
    not with the frame size; the widening stops at the ends of each wire.
    """
    if len(index) == 0:
        return index
    row, col = np.divmod(index, n_ticks)
    brk = np.flatnonzero((np.diff(index) != 1) | (np.diff(row) != 0)) + 1
    first = np.concatenate([[0], brk])
    last = np.concatenate([brk - 1, [len(index) - 1]])
    r = row[first]
    lo = np.maximum(col[first] - pad, 0)
    hi = np.minimum(col[last] + pad, n_ticks - 1)
    new = np.ones(len(lo), bool)
    new[1:] = (r[1:] != r[:-1]) | (lo[1:] > hi[:-1] + 1)
    g = np.flatnonzero(new)
    glo, ghi, gr = lo[g], np.append(hi[g[1:] - 1], hi[-1]), r[g]
    length = ghi - glo + 1
    base = np.repeat(gr * n_ticks + glo - np.concatenate([[0], np.cumsum(length)[:-1]]), length)
    return base + np.arange(length.sum())


def noise_roi_rate() -> float:
    """Upcrossings of ROI_THRESHOLD per wire and tick by the filtered noise (Rice's formula)."""
    sigma_r = math.sqrt(2) * FILTER_SIGMA_TICKS  # autocorrelation width of Gaussian-filtered noise
    return math.exp(-(ROI_THRESHOLD**2) / (2 * NOISE_RMS_KE**2)) / (2 * math.pi * sigma_r)


def digitise(
    signal: np.ndarray, rng: np.random.Generator, bank: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deconvolved frame with noise, kept only in regions of interest: (wire, tick, value).

    ``bank`` None: no noise, keep the signal above SIGNAL_FLOOR.
    """
    n_w, n_t = signal.shape
    flat = signal.ravel()
    core = np.flatnonzero(flat > SIGNAL_FLOOR)
    if bank is None:
        return (core // n_t).astype(np.int32), (core % n_t).astype(np.int32), flat[core]
    region = dilate_ticks(core, 2 * ROI_PAD, n_t)
    offset = rng.integers(0, len(bank), n_w)
    rw, rt = np.divmod(region, n_t)
    vals = flat[region] + bank[(offset[rw] + rt) % len(bank)]
    # noise-only regions of interest: Slepian excursions above ROI_THRESHOLD
    n_ex = rng.poisson(noise_roi_rate() * (n_w * n_t - len(region)))
    if n_ex:
        lag = np.arange(-ROI_PAD - 2, ROI_PAD + 3)
        r = np.exp(-(lag**2) / (4 * FILTER_SIGMA_TICKS**2))
        ew = rng.integers(0, n_w, n_ex)
        et = rng.integers(0, n_t, n_ex)
        peak = np.sqrt(ROI_THRESHOLD**2 + 2 * NOISE_RMS_KE**2 * rng.exponential(size=n_ex))
        ww = np.repeat(ew, len(lag))
        tt = (et[:, None] + lag[None, :]).ravel()
        ev = (peak[:, None] * r[None, :]).ravel() + bank[(offset[ww] + tt) % len(bank)] * np.tile(
            np.sqrt(1 - r**2), n_ex
        )
        ei = ww.astype(np.int64) * n_t + tt
        ok = (tt >= 0) & (tt < n_t)
        ei, ev = ei[ok], ev[ok]
        ei, first = np.unique(ei, return_index=True)
        ev = ev[first]
        pos = np.minimum(np.searchsorted(region, ei), max(len(region) - 1, 0))
        clear = region[pos] != ei if len(region) else np.ones(len(ei), bool)
        region = np.concatenate([region, ei[clear]])
        vals = np.concatenate([vals, ev[clear]])
        order = np.argsort(region, kind="stable")
        region, vals = region[order], vals[order]
    roi = dilate_ticks(region[vals > ROI_THRESHOLD], ROI_PAD, n_t)
    keep = np.searchsorted(region, roi)  # roi pixels are in region, except past its edges
    ok = keep < len(region)
    keep = keep[ok][region[keep[ok]] == roi[ok]]
    idx = region[keep]
    wire, tick = np.divmod(idx, n_t)
    return wire.astype(np.int32), tick.astype(np.int32), vals[keep].astype(np.float32)


def simulate_readout(
    detector: Detector,
    rng: np.random.Generator,
    run: int,
    subrun: int,
    event: int,
    *,
    cosmics: bool = True,
    beam: bool = True,
    radiologicals: bool = True,
    deposits: dict[str, np.ndarray] | None = None,
    noise: bool = True,
    on_plane: Callable[[], None] | None = None,
    response: str = "ideal",
    raw_noise: Noise | None = None,
) -> tuple[Event, list[PlaneTruth | None]]:
    """One readout of ``detector``, and the truth of each of its frames.

    ``response`` "ideal": the deconvolved frames of every (TPC, plane) with signal, written
    directly (steps 3-4 of the module doc). "raw": the raw waveforms of every (TPC, plane):
    the drifted charge convolved with the field and electronics response
    (argonic.detector.response), ``raw_noise`` (default: white, NOISE_ADC RMS), baselines,
    12-bit ADC; the event has ``raw`` frames and no deconvolved ones (signal processing
    belongs to reco).

    The event has no hits: hit finding and labelling belong to reco (``argonic.reco.simulation``).

    ``deposits`` (pos, t, q, cat, michel[, michel_id]) replaces the particle generation, for
    tests. ``on_plane`` is called after each (TPC, plane) is read out (progress).
    """
    if response not in ("ideal", "raw"):
        raise ValueError(f"response must be 'ideal' or 'raw', not {response!r}")
    dep = (
        deposits
        if deposits is not None
        else generate_deposits(
            detector, rng, cosmics=cosmics, beam=beam, radiologicals=radiologicals
        )
    )
    if response == "raw":
        model = raw_noise or Noise(rms_adc=NOISE_ADC)
        return _raw_readout(
            detector, rng, (run, subrun, event), dep, model if noise else None, on_plane
        )
    bank = noise_bank(rng) if noise else None
    frames: list[PlaneFrame] = []
    truths: list[PlaneTruth | None] = []
    for tpc, plane, signal, truth in _plane_charges(detector, dep):
        rows = np.flatnonzero(signal.any(axis=1))
        if len(rows) > signal.shape[0] // 2:  # in place: ndimage filters line by line
            gaussian_filter1d(
                signal, FILTER_SIGMA_TICKS, axis=1, output=signal, mode="constant", truncate=4.0
            )
        elif len(rows):
            signal[rows] = gaussian_filter1d(
                signal[rows], FILTER_SIGMA_TICKS, axis=1, mode="constant", truncate=4.0
            )
        wire, tick, value = digitise(signal, rng, bank)
        if on_plane is not None:
            on_plane()
        if len(value):
            frames.append(
                PlaneFrame(
                    tpc.index, plane.index, plane.n_wires, detector.n_ticks, wire, tick, value
                )
            )
            truths.append(truth)
    return Event(run, subrun, event, frames, Hits.concat([]), detector.name), truths


def _raw_readout(
    detector: Detector,
    rng: np.random.Generator,
    ids: tuple[int, int, int],
    dep: dict[str, np.ndarray],
    noise: Noise | None,
    on_plane: Callable[[], None] | None,
) -> tuple[Event, list[PlaneTruth | None]]:
    """simulate_readout's "raw" response: every (TPC, plane)'s raw waveforms and truth."""
    raws: list[RawFrame] = []
    truths: list[PlaneTruth | None] = []
    for tpc, plane, charge, truth in _plane_charges(detector, dep):
        adc = raw_waveforms(charge, plane.name, plane.wrapped, rng if noise else None, noise)
        raws.append(RawFrame(tpc.index, plane.index, adc))
        truths.append(truth)
        if on_plane is not None:
            on_plane()
    event = Event(*ids, [], Hits.concat([]), detector.name, raws)
    return event, truths


def _plane_charges(
    detector: Detector, dep: dict[str, np.ndarray]
) -> Iterator[tuple[TPC, Plane, np.ndarray, PlaneTruth | None]]:
    """(TPC, plane, drifted charge [n_wires, n_ticks] ke-, truth or None) of every plane."""
    for tpc in detector.tpcs:
        d = drift(detector, tpc, dep)
        for plane in detector.planes:
            if len(d["q"]):
                yield tpc, plane, *plane_charge(detector, tpc, plane, d)
            else:
                yield tpc, plane, np.zeros((plane.n_wires, detector.n_ticks), np.float32), None
