"""2D deconvolution of one plane's noise-filtered waveforms, and its regions of interest.

In the Fourier domain of (wire, tick) the waveforms are the charge times the readout
kernel's spectrum R (field x electronics response, argonic.detector.response) plus noise.
The charge estimate is Y R* / (|R|^2 + eps^2) G: a Wiener-style inverse (``eps``: a
fraction of the plane's largest |R|, so frequencies where the response is weaker than the
noise are not amplified; the induction planes' response vanishes at zero frequency, so
their slowest components, long tracks nearly parallel to the drift, are lost, as without
Wire-Cell's L1SP) times a Gaussian software filter in time (sigma 2.7 ticks, Wire-Cell's
"gauss" filter, the frame the hit finder is tuned for). A Gaussian filter in wire as well
(0.5-0.75 wires, as Wire-Cell's) cost the induction planes charge on the hits and did not
reduce the noise hits here: it is not applied. ``EPSILON`` per plane trades the induction
planes' charge bias against their noise (benchmarks/bench_sigproc.py, BENCHMARKS.md).
Regions of interest: ticks above ``ROI_SIGMAS`` times the plane's deconvolved noise RMS
(robust) and ``ROI_THRESHOLD``, padded by ``ROI_PAD`` ticks; zero elsewhere (tight ROIs;
loose ones, at half the threshold, are padded into them where they touch).
"""

from __future__ import annotations

import numpy as np

from argonic.detector.event import PlaneFrame
from argonic.detector.response import kernel_spectrum, off_grid, on_grid, padded_shape
from argonic.detector.simulate import FILTER_SIGMA_TICKS, ROI_PAD, ROI_THRESHOLD, dilate_ticks

EPSILON = {"U": 0.05, "V": 0.02, "W": 0.02}  # x the plane's largest |R| (tuned on bench_sigproc)
ROI_SIGMAS = 5.0


def _time_filter(cols: int) -> np.ndarray:
    """The Gaussian software filter in time on the rfft2 grid's tick frequencies."""
    f_tick = np.fft.rfftfreq(cols)  # cycles per tick
    return np.exp(-0.5 * (2 * np.pi * f_tick * FILTER_SIGMA_TICKS) ** 2)[None, :]


def deconvolve(waveforms: np.ndarray, plane: str, wrapped: bool) -> np.ndarray:
    """Charge (ke- per wire and tick, Gaussian-filtered) [n_wires, n_ticks] of one plane's
    noise-filtered waveforms (ADC, baseline 0)."""
    from scipy import fft

    shape = padded_shape(*waveforms.shape, wrapped)
    spectrum = kernel_spectrum(plane, *waveforms.shape, wrapped)
    eps = EPSILON[plane] * np.abs(spectrum).max()
    inverse = np.conj(spectrum) / (np.abs(spectrum) ** 2 + eps**2) * _time_filter(shape[1])
    grid = fft.rfft2(on_grid(waveforms, wrapped), workers=-1) * inverse
    return off_grid(fft.irfft2(grid, s=shape, workers=-1), waveforms.shape).astype(np.float32)


def regions_of_interest(signal: np.ndarray, bad: np.ndarray | None = None) -> np.ndarray:
    """Flat pixel indices (sorted) of the regions of interest of a deconvolved plane."""
    n_t = signal.shape[1]
    q1, q3 = np.percentile(signal, [25, 75])
    threshold = max(ROI_THRESHOLD, ROI_SIGMAS * (q3 - q1) / 1.349)
    flat = signal.ravel()
    tight = np.flatnonzero(flat > threshold)
    loose = np.flatnonzero(flat > threshold / 2)
    region = dilate_ticks(tight, ROI_PAD, n_t)
    # loose pixels that touch a tight region join it
    near = np.intersect1d(loose, dilate_ticks(region, 1, n_t), assume_unique=True)
    region = np.union1d(region, dilate_ticks(near, ROI_PAD // 2, n_t))
    if bad is not None and bad.any():
        region = region[~bad[region // n_t]]
    return region


def deconvolve_plane(
    tpc: int, plane_index: int, plane: str, waveforms: np.ndarray, wrapped: bool, bad=None
) -> PlaneFrame:
    """The deconvolved frame of one (TPC, plane), kept in its regions of interest."""
    signal = deconvolve(waveforms, plane, wrapped)
    return PlaneFrame.from_pixels(tpc, plane_index, signal, regions_of_interest(signal, bad))
