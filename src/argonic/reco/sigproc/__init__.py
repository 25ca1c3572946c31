"""Signal processing of raw waveforms, as ProtoDUNE-SP's reconstruction begins: noise
filtering (``noise``), then 2D deconvolution in time and wire with regions of interest
(``deconvolution``); the output is the deconvolved frame hit finding reads."""

from __future__ import annotations

import numpy as np

from argonic.detector.event import PlaneFrame, RawFrame
from argonic.detector.geometry import Detector
from argonic.reco.sigproc.deconvolution import deconvolve_plane
from argonic.reco.sigproc.noise import filter_noise

__all__ = ["deconvolve_frames", "deconvolve_plane", "filter_frames", "filter_noise", "process"]


def filter_frames(
    raws: list[RawFrame], coherent: bool = False
) -> list[tuple[RawFrame, np.ndarray, np.ndarray]]:
    """Each raw frame with its noise-filtered waveforms (coherent noise removed per board
    if ``coherent``) and bad-channel mask."""
    return [(r, *filter_noise(r.adc, coherent)) for r in raws]


def deconvolve_frames(
    filtered: list[tuple[RawFrame, np.ndarray, np.ndarray]], detector: Detector
) -> list[PlaneFrame]:
    """The deconvolved frames (regions of interest) of noise-filtered planes; planes
    without any region of interest are left out, as the simulation leaves them out."""
    frames = []
    for raw, waveforms, bad in filtered:
        plane = detector.planes[raw.plane]
        frame = deconvolve_plane(raw.tpc, raw.plane, plane.name, waveforms, plane.wrapped, bad)
        if len(frame.value):
            frames.append(frame)
    return frames


def process(raws: list[RawFrame], detector: Detector, coherent: bool = False) -> list[PlaneFrame]:
    """Noise filtering then deconvolution of every raw frame."""
    return deconvolve_frames(filter_frames(raws, coherent), detector)
