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

    predicted: RecoEvent | None = None
    if reco is None and is_reco_file(events_file):
        reco, events_file = events_file, None
    if reco is not None:
        predicted, attrs = read_reco_event(reco, event)
        if events_file is None:
            events_file = _events_file_of(reco, str(attrs.get("events_file", "")))
    with EventFile(events_file) as f:
        det = f.detector
        p = det.plane(plane.upper())
        ev = f[event]
    if predicted is not None and predicted.ids != (ev.run, ev.subrun, ev.event):
        raise ArgonicError(
            f"{reco} event {event} is run/subrun/event {predicted.ids}, but {events_file} "
            f"has {(ev.run, ev.subrun, ev.event)}: not made from this event file"
        )
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

    panels = 3 if predicted is not None else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(10 if panels == 1 else 21, 7), dpi=110, sharex=True, sharey=True
    )
    axes = np.atleast_1d(axes)
    vmax = max(float(np.percentile(image[image > 0], 99)) if np.any(image > 0) else 1.0, 1.0)
    for ax in axes:
        im = ax.imshow(
            image.T,
            origin="lower",
            aspect="auto",
            cmap="viridis" if not show_hits else "Greys",
            vmin=0,
            vmax=vmax,
            interpolation="nearest",
            extent=(-0.5, image.shape[0] - 0.5, -0.5, image.shape[1] - 0.5),
        )
        ax.set_xlabel(f"{p.name} wire")
    axes[0].set_ylabel("tick (0.5 us)")
    fig.colorbar(im, ax=axes[-1] if panels == 1 else axes[0], label="charge [ke-/tick]")
    summary: dict[str, Any] = {
        "output": str(output),
        "event": event,
        "tpc": tpc,
        "plane": p.name,
        "hits": len(hits),
    }
    if show_hits and len(hits):
        _draw_labels(axes[0], hits, hits.label, hits.michel)
    axes[0].set_title("truth" if panels > 1 else "")
    if predicted is not None:
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
        summary["reco"] = str(reco)
        summary["same_class_as_truth"] = float(np.mean(classes == hits.label)) if len(hits) else 1.0
        summary["michel_hits"] = {
            "truth": int(hits.michel.sum()),
            "predicted": int((michel_score > michel_cut).sum()),
        }
    fig.suptitle(
        f"{det.name} run {ev.run} event {ev.event}: TPC {tpc}, plane {p.name}, {len(hits)} hits"
    )
    fig.tight_layout()
    with atomic_output(output) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return summary
