"""Noise filtering of one plane's raw waveforms: each channel's baseline (its median: the
signal occupies a few percent of a channel's ticks), then, where asked, the coherent noise
of each group of channels read by one front-end board (the median across the group at each
tick, computed on ticks outside the signal so that a track crossing the group is not
subtracted from itself), and dead or noisy channels masked (zeroed)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import maximum_filter1d

BOARD_CHANNELS = 16  # channels sharing a front-end ASIC's coherent noise
SIGNAL_PAD = 20  # ticks either side of a loud sample kept out of the coherent estimate
DEAD_RMS_ADC = 0.5  # below this RMS a channel reads nothing
NOISY_RMS_FACTOR = 3.0  # above this times the plane's median RMS a channel is noisy


def robust_rms(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """RMS from the interquartile range (as a Gaussian's), insensitive to signal."""
    q1, q3 = np.percentile(x, [25, 75], axis=axis)
    return (q3 - q1) / 1.349


def _coherent(data: np.ndarray, rms: np.ndarray, bad: np.ndarray, group: int) -> np.ndarray:
    """Each group's common waveform: at each tick the median over the group's good channels
    that carry no signal there (signal: above 3 RMS, widened by SIGNAL_PAD ticks, since a
    pulse's tails sit below any threshold); where fewer than half the group is quiet, no
    estimate (a track crossing the board at one time must not be subtracted from itself)."""
    n_t = data.shape[1]
    loud = np.abs(data) > 3 * np.maximum(rms, 1e-3)[:, None]
    loud = maximum_filter1d(loud, 2 * SIGNAL_PAD + 1, axis=1)
    quiet = ~loud & ~bad[:, None]
    masked = np.where(quiet, data, np.nan)
    common = np.zeros_like(data)
    with warnings.catch_warnings():  # ticks without a quiet channel: no estimate
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, len(data), group):
            block = slice(start, start + group)
            estimate = np.nanmedian(masked[block], axis=0)
            enough = quiet[block].sum(axis=0) * 2 >= min(group, len(data) - start)
            common[block] = np.where(enough, np.nan_to_num(estimate), 0.0)[None, :n_t]
    return common


def filter_noise(
    raw: np.ndarray, coherent: bool = False, group: int = BOARD_CHANNELS
) -> tuple[np.ndarray, np.ndarray]:
    """(baseline-subtracted waveforms float32 [n_wires, n_ticks], bad-channel mask) of
    ``raw`` ADC counts; coherent noise removed per ``group`` channels if ``coherent``.
    Bad channels are found first, so that they neither feed the group's estimate nor
    receive it, and are zeroed."""
    data = raw.astype(np.float32)
    data -= np.median(data, axis=1, keepdims=True)
    rms = robust_rms(data, axis=1)
    typical = float(np.median(rms))
    bad = rms > NOISY_RMS_FACTOR * max(typical, DEAD_RMS_ADC)
    if typical >= DEAD_RMS_ADC:  # a plane with noise: a channel without any is dead
        bad |= rms < DEAD_RMS_ADC
    if coherent:
        data -= _coherent(data, rms, bad, group)
    data[bad] = 0.0
    return data, bad
