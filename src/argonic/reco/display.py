"""Event display: one plane of one event, wire vs tick, colour = charge, hits by truth label;
with a reco file, the predicted class and the Michel score beside the truth."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from argonic import ArgonicError
from argonic._util import atomic_output
from argonic.detector.event import LABEL_NAMES, Hits
from argonic.detector.eventfile import EventFile
from argonic.reco.chain import RecoEvent, is_reco_file, read_reco_event

_LABEL_COLOURS = ("tab:blue", "tab:red", "tab:gray")


def _events_file_of(reco: str | os.PathLike[str], recorded: str) -> Path:
    """The event file a reco file was made from: as recorded, or next to the reco file."""
    for path in (
        Path(recorded),
        Path(reco).parent / recorded,
        Path(reco).parent / Path(recorded).name,
    ):
        if path.is_file():
            return path
    raise ArgonicError(
        f"{reco} was made from {recorded!r}, which is not found: "
        f"give it as `argonic show EVENTS.h5 --reco {reco}`"
    )


def _draw_labels(ax: Any, hits: Hits, labels: np.ndarray, michel: np.ndarray | None) -> None:
    """Hits as dots coloured by class (track, em, none), Michel hits (if given) in green."""
    for label, colour in enumerate(_LABEL_COLOURS):
        sel = labels == label
        if michel is not None:
            sel &= ~michel
        ax.scatter(hits.wire[sel], hits.peak_tick[sel], s=2, c=colour, label=LABEL_NAMES[label])
    if michel is not None:
        ax.scatter(hits.wire[michel], hits.peak_tick[michel], s=4, c="tab:green", label="michel")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)


def _image(ax: Any, data: np.ndarray, cmap: str, vmin: float, vmax: float) -> Any:
    """``data`` [wire, tick] drawn wire across, tick up."""
    return ax.imshow(
        data.T,
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        extent=(-0.5, data.shape[0] - 0.5, -0.5, data.shape[1] - 0.5),
    )


def draw_event(
    events_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    event: int = 0,
    plane: str = "W",
    tpc: int | None = None,
    show_hits: bool = True,
    reco: str | os.PathLike[str] | None = None,
    michel_cut: float = 0.5,
) -> dict[str, Any]:
    """Draw ``plane`` of ``tpc`` (default: the TPC with most hits) of one event to a PNG.

    ``events_file`` may be a reco file (``argonic reco`` output), or ``reco`` names one:
    then three panels share the axes: truth labels, the predicted class (Michel: score
    above ``michel_cut``) and the Michel score of every hit.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted, reco, ev, det = _load(events_file, reco, event)
    p = det.plane(plane.upper())
    hits_all = predicted.hits if predicted is not None else ev.hits
    on_plane = hits_all.plane == p.index
    if tpc is None:
        counts = np.bincount(hits_all.tpc[on_plane], minlength=len(det.tpcs))
        tpc = int(np.argmax(counts))
    if not 0 <= tpc < len(det.tpcs):
        raise ArgonicError(f"TPC {tpc} out of range: {det.name} has TPCs 0-{len(det.tpcs) - 1}")
    frame = next((fr for fr in ev.frames if fr.tpc == tpc and fr.plane == p.index), None)
    image = frame.dense() if frame is not None else np.zeros((p.n_wires, det.n_ticks), np.float32)
    sel = on_plane & (hits_all.tpc == tpc)
    hits = hits_all.select(sel)

    # an event with raw waveforms: the raw ADC beside the deconvolved frame
    raw = None
    if predicted is None:
        raw = next((r for r in ev.raw if r.tpc == tpc and r.plane == p.index), None)
    panels = 3 if predicted is not None else 2 if raw is not None else 1
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(10 if panels == 1 else 10.5 * panels, 7),
        dpi=110,
        sharex=True,
        sharey=True,
    )
    axes = np.atleast_1d(axes)
    vmax = max(float(np.percentile(image[image > 0], 99)) if np.any(image > 0) else 1.0, 1.0)
    cmap = "viridis" if not show_hits else "Greys"
    for ax in axes:
        im = _image(ax, image, cmap, 0, vmax)
        ax.set_xlabel(f"{p.name} wire")
    axes[0].set_ylabel("tick (0.5 us)")
    charge_axis = axes[-1] if panels <= 2 else axes[0]
    fig.colorbar(im, ax=charge_axis, label="charge [ke-/tick]")
    if raw is not None:
        _draw_raw(fig, axes, raw.adc)
        axes = axes[::-1]  # the hits go on the deconvolved frame
    summary: dict[str, Any] = {
        "output": str(output),
        "event": event,
        "tpc": tpc,
        "plane": p.name,
        "hits": len(hits),
        "raw_panel": raw is not None,
    }
    if show_hits and len(hits):
        _draw_labels(axes[0], hits, hits.label, hits.michel)
    axes[0].set_title(
        "truth" if predicted is not None else "deconvolved" if raw is not None else ""
    )
    if predicted is not None:
        summary["reco"] = str(reco)
        summary.update(_draw_predicted(fig, axes, hits, predicted, sel, michel_cut))
    fig.suptitle(
        f"{det.name} run {ev.run} event {ev.event}: TPC {tpc}, plane {p.name}, {len(hits)} hits"
    )
    fig.tight_layout()
    with atomic_output(output) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return summary


def _load(
    events_file: str | os.PathLike[str] | None, reco: str | os.PathLike[str] | None, event: int
) -> tuple[RecoEvent | None, str | os.PathLike[str] | None, Any, Any]:
    """(the reco event or None, the reco file, the event, the detector); the event file may
    be a reco file, or be named by one."""
    predicted: RecoEvent | None = None
    if reco is None and is_reco_file(events_file):
        reco, events_file = events_file, None
    if reco is not None:
        predicted, attrs = read_reco_event(reco, event)
        if events_file is None:
            events_file = _events_file_of(reco, str(attrs.get("events_file", "")))
    with EventFile(events_file) as f:
        det = f.detector
        ev = f[event]
    if predicted is not None and predicted.ids != (ev.run, ev.subrun, ev.event):
        raise ArgonicError(
            f"{reco} event {event} is run/subrun/event {predicted.ids}, but {events_file} "
            f"has {(ev.run, ev.subrun, ev.event)}: not made from this event file"
        )
    return predicted, reco, ev, det


def _draw_raw(fig: Any, axes: Any, adc: np.ndarray) -> None:
    """The raw waveforms (baseline removed) on the first panel."""
    adc = adc.astype(np.float32)
    adc -= np.median(adc, axis=1, keepdims=True)
    lim = max(float(np.percentile(np.abs(adc), 99.9)), 1.0)
    axes[0].images[0].remove()
    fig.colorbar(
        _image(axes[0], adc, "RdBu_r", -lim, lim), ax=axes[1], label="raw [ADC - baseline]"
    )
    axes[0].set_title("raw waveforms")


def _draw_predicted(
    fig: Any, axes: Any, hits: Hits, predicted: RecoEvent, sel: np.ndarray, michel_cut: float
) -> dict[str, Any]:
    """The predicted classes and the Michel scores on panels 2 and 3; their summary."""
    scores = predicted.scores[sel]
    classes = predicted.predicted[sel]
    michel_score = scores[:, 3]
    _draw_labels(axes[1], hits, classes, michel_score > michel_cut)
    axes[1].set_title(f"predicted class (michel: score > {michel_cut:g})")
    order = np.argsort(michel_score)  # high scores drawn on top
    dots = axes[2].scatter(
        hits.wire[order],
        hits.peak_tick[order],
        s=3,
        c=michel_score[order],
        cmap="plasma",
        vmin=0,
        vmax=1,
    )
    fig.colorbar(dots, ax=axes[2], label="michel score")
    axes[2].set_title("Michel score")
    return {
        "same_class_as_truth": float(np.mean(classes == hits.label)) if len(hits) else 1.0,
        "michel_hits": {
            "truth": int(hits.michel.sum()),
            "predicted": int((michel_score > michel_cut).sum()),
        },
    }
