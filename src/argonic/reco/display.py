"""Event display: one plane of one event, wire vs tick, colour = charge, hits by truth label."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from argonic import ArgonicError
from argonic._util import atomic_output
from argonic.detector.event import LABEL_NAMES
from argonic.detector.eventfile import EventFile

_LABEL_COLOURS = ("tab:blue", "tab:red", "tab:gray")


def draw_event(
    events_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    event: int = 0,
    plane: str = "W",
    tpc: int | None = None,
    show_hits: bool = True,
) -> dict[str, Any]:
    """Draw ``plane`` of ``tpc`` (default: the TPC with most hits) of one event to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with EventFile(events_file) as f:
        det = f.detector
        p = det.plane(plane.upper())
        ev = f[event]
    on_plane = ev.hits.plane == p.index
    if tpc is None:
        counts = np.bincount(ev.hits.tpc[on_plane], minlength=len(det.tpcs))
        tpc = int(np.argmax(counts))
    if not 0 <= tpc < len(det.tpcs):
        raise ArgonicError(f"TPC {tpc} out of range: {det.name} has TPCs 0-{len(det.tpcs) - 1}")
    frame = next((fr for fr in ev.frames if fr.tpc == tpc and fr.plane == p.index), None)
    image = frame.dense() if frame is not None else np.zeros((p.n_wires, det.n_ticks), np.float32)
    hits = ev.hits.select(on_plane & (ev.hits.tpc == tpc))

    fig, ax = plt.subplots(figsize=(10, 7), dpi=110)
    vmax = max(float(np.percentile(image[image > 0], 99)) if np.any(image > 0) else 1.0, 1.0)
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
    fig.colorbar(im, ax=ax, label="charge [ke-/tick]")
    if show_hits and len(hits):
        for label, colour in enumerate(_LABEL_COLOURS):
            sel = (hits.label == label) & ~hits.michel
            ax.scatter(
                hits.wire[sel],
                hits.peak_tick[sel],
                s=2,
                c=colour,
                label=LABEL_NAMES[label],
                linewidths=0,
            )
        sel = hits.michel
        ax.scatter(
            hits.wire[sel], hits.peak_tick[sel], s=4, c="tab:green", label="michel", linewidths=0
        )
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    ax.set_xlabel(f"{p.name} wire")
    ax.set_ylabel("tick (0.5 us)")
    ax.set_title(
        f"{det.name} run {ev.run} event {ev.event}: TPC {tpc}, plane {p.name}, {len(hits)} hits"
    )
    fig.tight_layout()
    with atomic_output(output) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return {"output": str(output), "event": event, "tpc": tpc, "plane": p.name, "hits": len(hits)}
