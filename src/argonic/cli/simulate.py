"""`argonic simulate` and `argonic show`: events in, an event file or a display out."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from argonic import ArgonicError
from argonic.cli.options import (
    DETECTORS,
    PLANES,
    Summary,
    non_negative_int,
    output_file,
    positive_int,
)

if TYPE_CHECKING:
    pass


# --- simulate -----------------------------------------------------------------------------


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=DETECTORS, default="protodune-sp", help="detector")
    p.add_argument("--events", type=positive_int, default=1, help="number of events")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed")
    p.add_argument("--run", type=non_negative_int, default=1, help="run number stored in the file")
    p.add_argument(
        "--response",
        choices=("raw", "ideal"),
        default=None,
        help="raw: raw waveforms (field and electronics response, noise, ADC), which reco's "
        "signal processing deconvolves; ideal: the deconvolved frame written directly (fast: "
        "tests, the scaling study). Default: raw for protodune-sp, ideal for mini",
    )
    noise = p.add_argument_group("noise of the raw waveforms")
    noise.add_argument(
        "--noise-spectrum",
        choices=("white", "shaped"),
        default="white",
        help="white (the paper's simulation) or shaped by the cold electronics",
    )
    noise.add_argument(
        "--noise-adc", type=float, default=2.5, help="noise RMS per channel, ADC counts"
    )
    noise.add_argument(
        "--coherent-noise",
        type=float,
        default=0.0,
        metavar="ADC",
        help="RMS of noise shared by each front-end board's 16 channels (0: none)",
    )
    noise.add_argument(
        "--dead-channels", type=non_negative_int, default=0, help="dead channels per plane"
    )
    noise.add_argument(
        "--noisy-channels", type=non_negative_int, default=0, help="noisy channels per plane (5x)"
    )
    p.add_argument(
        "-o", "--output", type=output_file, default="events.h5", help="output HDF5 event file"
    )


def _simulate(a: argparse.Namespace) -> Summary:
    from argonic.detector.response import Noise
    from argonic.reco.simulation import simulate_file

    if a.noise_adc < 0 or a.coherent_noise < 0:
        raise ArgonicError("--noise-adc and --coherent-noise must be >= 0")
    noise = Noise(
        a.noise_adc, a.noise_spectrum, a.coherent_noise, 16, a.dead_channels, a.noisy_channels
    )
    return simulate_file(
        a.output,
        detector=a.detector,
        n_events=a.events,
        seed=a.seed,
        run=a.run,
        show_progress=not a.json,
        response=a.response,
        noise=noise,
    )


# --- show ---------------------------------------------------------------------------------


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events_file",
        help="HDF5 event file from `argonic simulate`, or a reco file from `argonic reco` "
        "(then its event file is found and the predictions drawn beside the truth)",
    )
    p.add_argument(
        "--reco",
        default=None,
        metavar="RECO.h5",
        help="reco file of these events: draw the predicted class and the Michel score too",
    )
    p.add_argument("--event", type=non_negative_int, default=0, help="event index in the file")
    p.add_argument("--plane", type=str.upper, choices=PLANES, default="W", help="plane to draw")
    p.add_argument("--tpc", type=int, default=None, help="TPC to draw (default: the busiest)")
    p.add_argument(
        "--hits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="overlay hits coloured by truth label",
    )
    p.add_argument(
        "--michel-cut", type=float, default=0.5, help="with a reco file: Michel score cut"
    )
    p.add_argument("-o", "--output", type=output_file, default="display.png", help="output PNG")


def _show(a: argparse.Namespace) -> Summary:
    from argonic.reco.display import draw_event

    return draw_event(
        a.events_file,
        a.output,
        event=a.event,
        plane=a.plane,
        tpc=a.tpc,
        show_hits=a.hits,
        reco=a.reco,
        michel_cut=a.michel_cut,
    )
