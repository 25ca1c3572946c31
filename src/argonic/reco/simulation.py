"""Simulated events with their hits: the detector simulation, then hit finding and labelling.

``simulate_event`` is what ``argonic simulate`` writes for each event: the readout of
:func:`argonic.detector.simulate.simulate_readout` plus the Gaussian hits of every frame,
each labelled from the frame's truth (:func:`argonic.reco.hits.label_hits`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from argonic import ArgonicError
from argonic._util import Bars
from argonic.detector.event import Event, Hits
from argonic.detector.eventfile import EventFileWriter
from argonic.detector.geometry import Detector, get_detector
from argonic.detector.response import Noise
from argonic.detector.simulate import simulate_readout
from argonic.reco.hits import find_hits, label_hits
from argonic.reco.sigproc import process


def simulate_event(
    detector: Detector, rng: np.random.Generator, run: int, subrun: int, event: int, **options: Any
) -> Event:
    """One readout (``simulate_readout``'s options) with the labelled hits of every frame.

    Raw readouts go through the reco chain's signal processing first: the event keeps its
    raw waveforms, the deconvolved frames that processing gives (for the tools that cut
    patches from a file: training, evaluation, display; reco recomputes them from the raw
    waveforms) and the hits found on them, labelled from the truth."""
    readout, truths = simulate_readout(detector, rng, run, subrun, event, **options)
    if readout.raw:
        truth_of = {(r.tpc, r.plane): t for r, t in zip(readout.raw, truths, strict=True)}
        noise = options.get("raw_noise")
        coherent = bool(noise is not None and noise.coherent_adc)  # as reco is told to
        readout.frames = process(readout.raw, detector, coherent)
        truths = [truth_of[(f.tpc, f.plane)] for f in readout.frames]
    readout.hits = Hits.concat(
        [
            label_hits(find_hits(frame), truth)
            for frame, truth in zip(readout.frames, truths, strict=True)
        ]
    )
    return readout


def simulate_file(
    output: str | Path,
    detector: str,
    n_events: int,
    seed: int,
    run: int = 1,
    show_progress: bool = True,
    response: str | None = None,
    noise: Noise | None = None,
) -> dict[str, Any]:
    """Simulate ``n_events`` events of ``detector`` into an HDF5 event file; return a summary.

    ``response``: "raw" (raw waveforms, then reco's signal processing) or "ideal" (the
    deconvolved frame written directly); None: "raw" for ProtoDUNE-SP, "ideal" for the
    small test detector; ``noise``: the raw waveforms' noise (default: white, 2.5 ADC). Event i uses ``np.random.default_rng([seed, i])``: the same seed
    gives the same file.
    """
    det = get_detector(detector)
    response = response or ("raw" if det.name == "protodune-sp" else "ideal")
    if n_events < 1:
        raise ArgonicError(f"number of events must be >= 1, got {n_events}")
    n_hits: list[int] = []
    start = time.perf_counter()
    n_planes = len(det.tpcs) * len(det.planes)
    with (
        EventFileWriter(output, detector_name=det.name, seed=seed, run=run) as writer,
        Bars(show_progress) as bars,
    ):
        events_bar = bars.add("simulate", n_events, "events")
        planes_bar = bars.add("  readout", n_planes, "planes")
        for i in range(n_events):
            planes_bar.update(0)
            rng = np.random.default_rng([seed, i])
            ev = simulate_event(
                det, rng, run, 0, i, on_plane=planes_bar.advance, response=response, raw_noise=noise
            )
            n_hits.append(len(ev.hits))
            writer.write(ev)
            events_bar.advance()
    elapsed = time.perf_counter() - start
    return {
        "output": str(output),
        "detector": det.name,
        "response": response,
        "events": n_events,
        "seed": seed,
        "hits_per_event": n_hits,
        "hits_mean": float(np.mean(n_hits)),
        "hits_std": float(np.std(n_hits)),
        "seconds_per_event": elapsed / n_events,
        "file_bytes": Path(output).stat().st_size,
    }
