"""Per-hit evaluation of the network on held-out events, through any ModelInterface.

Metrics (REFERENCE.md section 4): the track/em/none confusion matrix (argmax of the
softmax head); track-vs-em accuracy on hits whose true label is track or em, with
track / (track + em) > 0.5 meaning track; Michel efficiency and purity at a cut on the
michel score (0.6 in production); ROC curves of both scores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from argonic import ArgonicError
from argonic._util import atomic_output, progress
from argonic.detector.event import EM, LABEL_NAMES, TRACK
from argonic.detector.eventfile import EventFile
from argonic.inference import inference_settings, make_interface
from argonic.reco.module import EmTrackMichelId
from argonic.settings import InferenceSettings

MICHEL_CUT = 0.6


def confusion_matrix(true_label: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[3, 3] hit counts: rows the true label, columns the argmax of scores[:, :3]."""
    predicted = np.argmax(scores[:, :3], axis=1)
    return np.bincount(true_label.astype(np.int64) * 3 + predicted, minlength=9).reshape(3, 3)


def track_score(scores: np.ndarray) -> np.ndarray:
    """track / (track + em), the downstream track-likeness (0.5 where both are 0)."""
    total = scores[:, 0] + scores[:, 1]
    return np.divide(
        scores[:, 0], total, out=np.full(len(scores), 0.5, np.float64), where=total > 0
    )


def track_em_accuracy(true_label: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of true track or em hits classified right by track_score > 0.5 (nan if none)."""
    sel = (true_label == TRACK) | (true_label == EM)
    if not sel.any():
        return float("nan")
    return float(np.mean((track_score(scores[sel]) > 0.5) == (true_label[sel] == TRACK)))


def efficiency_purity(truth: np.ndarray, score: np.ndarray, cut: float) -> tuple[float, float]:
    """(efficiency, purity) of the selection score > cut for the true hits ``truth`` (or nan)."""
    selected = score > cut
    n_true, n_sel, n_both = int(truth.sum()), int(selected.sum()), int(np.sum(truth & selected))
    return (n_both / n_true if n_true else float("nan"), n_both / n_sel if n_sel else float("nan"))


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(false-positive rate, true-positive rate, area) for cuts ``score >= c`` over all c.

    Tied scores move together (one point per distinct score); the area is the trapezoid
    rule, equal to P(score of a positive > score of a negative) + 0.5 P(tie).
    """
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    order = np.argsort(-np.asarray(score), kind="stable")
    s, p = np.asarray(score)[order], positive[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(p)[last_of_value]
    fp = (last_of_value + 1) - tp
    tpr, fpr = np.r_[0.0, tp / n_pos], np.r_[0.0, fp / n_neg]
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | os.PathLike[str]
) -> None:
    """Draw ROC curves (name -> (fpr, tpr, auc)) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        if np.isfinite(auc):  # undefined without both classes: nothing to draw
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
        else:
            ax.plot([], [], " ", label=f"{name}: needs hits of both classes")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="EmTrackMichelId, per hit",
    )
    ax.legend(loc="lower right")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def summarise(
    true_label: np.ndarray,
    true_michel: np.ndarray,
    scores: np.ndarray,
    michel_cut: float = MICHEL_CUT,
) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(metrics, ROC curves) of per-hit scores [N, 4] against the truth."""
    cm = confusion_matrix(true_label, scores)
    rows = cm.sum(axis=1, keepdims=True)
    sel = (true_label == TRACK) | (true_label == EM)
    curves = {
        "track vs em (track score)": roc_curve(true_label[sel] == TRACK, track_score(scores[sel])),
        "michel (michel score)": roc_curve(true_michel, scores[:, 3]),
    }
    eff, pur = efficiency_purity(true_michel, scores[:, 3], michel_cut)
    metrics = {
        "hits": len(true_label),
        "true_counts": dict(zip(LABEL_NAMES, rows[:, 0].tolist(), strict=True)),
        "confusion_matrix": {
            "rows_true_cols_predicted": list(LABEL_NAMES),
            "counts": cm.tolist(),
            "fractions": np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0).tolist(),
        },
        "accuracy_3class": float(np.trace(cm) / max(cm.sum(), 1)),
        "track_em_accuracy": track_em_accuracy(true_label, scores),
        "michel_hits": int(true_michel.sum()),
        "michel_cut": michel_cut,
        "michel_efficiency": eff,
        "michel_purity": pur,
        "auc_track_em": curves["track vs em (track score)"][2],
        "auc_michel": curves["michel (michel score)"][2],
    }
    return metrics, curves


def _describe(settings: InferenceSettings) -> dict[str, Any]:
    """The interface name, batch size and local options (no remote credentials) for the summary."""
    out: dict[str, Any] = {"interface": settings.interface, "batch_size": settings.batch_size}
    if settings.interface == "local":
        out.update(settings.local.model_dump())
    return out


def evaluate_file(
    events_file: str | os.PathLike[str],
    interface_config: InferenceSettings | Mapping[str, Any] | None = None,
    first_event: int = 0,
    n_events: int | None = None,
    michel_cut: float = MICHEL_CUT,
    roc_png: str | os.PathLike[str] | None = "roc.png",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score every hit of events [first_event, first_event + n_events) and compare with truth.

    interface_config: the ModelInterface configuration (default: local ONNX Runtime with
    the shipped model).
    """
    config = inference_settings(interface_config or {})
    labels, michels, scores = [], [], []
    t0 = time.perf_counter()
    with EventFile(events_file) as f, make_interface(config) as interface:
        stop = len(f) if n_events is None else first_event + n_events
        if not 0 <= first_event < stop <= len(f):
            raise ArgonicError(
                f"events [{first_event}, {stop}) not in {events_file} ({len(f)} events)"
            )
        module = EmTrackMichelId(interface, f.detector)
        for i in progress(range(first_event, stop), stop - first_event, "evaluate", show_progress):
            event = f[i]
            scores.append(module.produce(event, event.hits))
            labels.append(event.hits.label)
            michels.append(event.hits.michel)
    metrics, curves = summarise(
        np.concatenate(labels), np.concatenate(michels), np.concatenate(scores), michel_cut
    )
    if roc_png is not None:
        plot_roc(curves, roc_png)
    return {
        "events_file": str(events_file),
        "events": [first_event, stop],
        "interface": _describe(config),
        **metrics,
        "roc_png": None if roc_png is None else str(roc_png),
        "seconds": time.perf_counter() - t0,
    }
