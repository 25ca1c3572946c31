"""Noise filtering of one plane's raw waveforms: each channel's baseline (its median: the
signal occupies a few percent of a channel's ticks), then, where asked, the coherent noise
of each group of channels read by one front-end board (the median across the group at each
tick, computed on ticks outside the signal so that a track crossing the group is not
subtracted from itself), and dead or noisy channels masked (zeroed)."""

from __future__ import annotations

import warnings

import numpy as np

BOARD_CHANNELS = 16  # channels sharing a front-end ASIC's coherent noise
DEAD_RMS_ADC = 0.5  # below this RMS a channel reads nothing
NOISY_RMS_FACTOR = 3.0  # above this times the plane's median RMS a channel is noisy


def robust_rms(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """RMS from the interquartile range (as a Gaussian's), insensitive to signal."""
    q1, q3 = np.percentile(x, [25, 75], axis=axis)
    return (q3 - q1) / 1.349


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
        # each tick's median over the group's good channels, outside their signal
        quiet = np.abs(data) < 4 * np.maximum(rms, 1e-3)[:, None]
        masked = np.where(quiet & ~bad[:, None], data, np.nan)
        with warnings.catch_warnings():  # ticks where every channel has signal: no estimate
            warnings.simplefilter("ignore", RuntimeWarning)
            for start in range(0, len(data), group):
                common = np.nanmedian(masked[start : start + group], axis=0)
                data[start : start + group] -= np.nan_to_num(common)[None, :]
    data[bad] = 0.0
    return data, bad
