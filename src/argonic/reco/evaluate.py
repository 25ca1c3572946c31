"""Per-hit evaluation of the network on held-out events, through any ModelInterface.

Metrics (docs/reference.md, section 4): the track/em/none confusion matrix (argmax of the
softmax head); track-vs-em accuracy on hits whose true label is track or em, with
track / (track + em) > 0.5 meaning track (the shipped decision rule); Michel efficiency
and purity at a cut on the michel score (0.6 in production), at the best cut (largest
F1) and the largest efficiency at purity >= 0.8; the same per plane (U, V, W); ROC
curves of both scores; and, per Michel electron (the truth's ``michel_id``), the
fraction of Michel electrons with at least half of their hits tagged. The figures are
those of the chain's output: the network's scores refined by the MichelContext stage
where ``[reco] michel_context`` is on (the default), the network's own beside them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from argonic import ArgonicError
from argonic._util import atomic_output, progress
from argonic.detector.event import EM, LABEL_NAMES, MICHEL_CUT, TRACK
from argonic.detector.eventfile import EventFile
from argonic.inference import inference_settings, make_interface
from argonic.reco.michel_context import MichelContext
from argonic.reco.module import EmTrackMichelId
from argonic.settings import InferenceSettings, RecoSettings


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


def best_michel_cut(truth: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(cut, F1) of the cut ``score > cut`` with the largest F1 of efficiency and purity."""
    truth = np.asarray(truth, bool)
    if not truth.any():
        return float("nan"), float("nan")
    order = np.argsort(-np.asarray(score), kind="stable")
    s, t = np.asarray(score)[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    f1 = 2 * tp / (truth.sum() + last + 1)
    k = int(np.argmax(f1))
    below = s[last[k] + 1] if last[k] + 1 < len(s) else -np.inf
    cut = float(np.nextafter(s[last[k]], -np.inf)) if np.isinf(below) else float(below)
    return cut, float(f1[k])


def efficiency_at_purity(truth: np.ndarray, score: np.ndarray, purity: float) -> float:
    """The largest efficiency of a cut on ``score`` whose purity is >= ``purity`` (0 if none)."""
    truth = np.asarray(truth, bool)
    if not truth.any():
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="stable")
    s, t = np.asarray(score)[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    ok = tp / (last + 1) >= purity
    return float(tp[ok].max() / truth.sum()) if ok.any() else 0.0


def michel_electron_efficiency(
    electron: np.ndarray, tagged: np.ndarray, min_fraction: float = 0.5
) -> tuple[float, int]:
    """(fraction of Michel electrons with >= ``min_fraction`` of their hits tagged, number of
    Michel electrons); ``electron``: per hit an id unique in the sample, 0 for no Michel."""
    sel = electron != 0
    ids, inv = np.unique(electron[sel], return_inverse=True)
    if len(ids) == 0:
        return float("nan"), 0
    n_hits = np.bincount(inv, minlength=len(ids))
    n_tag = np.bincount(inv, weights=tagged[sel], minlength=len(ids))
    return float(np.mean(n_tag >= min_fraction * n_hits)), len(ids)


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


PLANE_NAMES = ("U", "V", "W")


def michel_figures(
    true_michel: np.ndarray, score: np.ndarray, michel_cut: float
) -> dict[str, float]:
    """Michel efficiency and purity at ``michel_cut`` and at the best cut, AUC."""
    eff, pur = efficiency_purity(true_michel, score, michel_cut)
    cut, _ = best_michel_cut(true_michel, score)
    eff_b, pur_b = efficiency_purity(true_michel, score, cut) if np.isfinite(cut) else (eff, pur)
    return {
        "michel_hits": int(true_michel.sum()),
        "michel_efficiency": eff,
        "michel_purity": pur,
        "michel_best_cut": cut,
        "michel_efficiency_best_cut": eff_b,
        "michel_purity_best_cut": pur_b,
        "michel_efficiency_at_purity_0.8": efficiency_at_purity(true_michel, score, 0.8),
        "auc_michel": roc_curve(true_michel, score)[2],
    }


def summarise(
    true_label: np.ndarray,
    true_michel: np.ndarray,
    scores: np.ndarray,
    michel_cut: float = MICHEL_CUT,
    plane: np.ndarray | None = None,
    michel_electron: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(metrics, ROC curves) of per-hit scores [N, 4] against the truth.

    plane: per hit 0/1/2 for per-plane figures; michel_electron: per hit an id of its
    Michel electron unique in the sample (0: none) for the Michel-electron-level figure.
    """
    cm = confusion_matrix(true_label, scores)
    rows = cm.sum(axis=1, keepdims=True)
    sel = (true_label == TRACK) | (true_label == EM)
    curves = {
        "track vs em (track score)": roc_curve(true_label[sel] == TRACK, track_score(scores[sel])),
        "michel (michel score)": roc_curve(true_michel, scores[:, 3]),
    }
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
        "auc_track_em": curves["track vs em (track score)"][2],
        "michel_cut": michel_cut,
        **michel_figures(true_michel, scores[:, 3], michel_cut),
    }
    if michel_electron is not None:
        for name, cut in (("", michel_cut), ("_best_cut", metrics["michel_best_cut"])):
            frac, n = michel_electron_efficiency(michel_electron, scores[:, 3] > cut)
            metrics[f"michel_electrons_half_tagged{name}"] = frac
            metrics["michel_electrons"] = n
    if plane is not None:
        per_plane = {}
        for p, name in enumerate(PLANE_NAMES):
            on = plane == p
            if not on.any():
                continue
            te = on & ((true_label == TRACK) | (true_label == EM))
            per_plane[name] = {
                "hits": int(on.sum()),
                "track_em_accuracy": track_em_accuracy(true_label[on], scores[on]),
                "auc_track_em": roc_curve(true_label[te] == TRACK, track_score(scores[te]))[2],
                **michel_figures(true_michel[on], scores[on, 3], michel_cut),
            }
        metrics["per_plane"] = per_plane
    return metrics, curves


# the network's own figures that evaluate_file reports beside the MichelContext stage's
NETWORK_FIGURES = (
    "accuracy_3class",
    "track_em_accuracy",
    "auc_track_em",
    "michel_efficiency",
    "michel_purity",
    "michel_best_cut",
    "michel_efficiency_best_cut",
    "michel_purity_best_cut",
    "michel_efficiency_at_purity_0.8",
    "auc_michel",
    "michel_electrons_half_tagged",
)


def _describe(settings: InferenceSettings) -> dict[str, Any]:
    """The interface name, batch size and local options (no remote credentials) for the summary."""
    out: dict[str, Any] = {"interface": settings.interface, "batch_size": settings.batch_size}
    if settings.interface == "local":
        out.update(settings.local.model_dump())
    return out


@dataclass
class _Scored:
    """Every hit of the evaluated events: truth, and per interface the network's scores and
    the chain's (after MichelContext where on; else the same array)."""

    label: np.ndarray
    michel: np.ndarray
    plane: np.ndarray
    electron: np.ndarray
    network: list[np.ndarray]
    chain: list[np.ndarray]
    events: tuple[int, int]


def _score_events(
    events_file: str | os.PathLike[str],
    configs: list[InferenceSettings],
    context: MichelContext | None,
    first_event: int,
    n_events: int | None,
    show_progress: bool,
) -> _Scored:
    """Score the events [first_event, first_event + n_events) with every interface of
    ``configs`` (each event read once)."""
    truth: dict[str, list[np.ndarray]] = {"label": [], "michel": [], "plane": [], "electron": []}
    network: list[list[np.ndarray]] = [[] for _ in configs]
    chain: list[list[np.ndarray]] = [[] for _ in configs]
    with EventFile(events_file) as f, contextlib.ExitStack() as stack:
        stop = len(f) if n_events is None else first_event + n_events
        if not 0 <= first_event < stop <= len(f):
            raise ArgonicError(
                f"events [{first_event}, {stop}) not in {events_file} ({len(f)} events)"
            )
        modules = [
            EmTrackMichelId(stack.enter_context(make_interface(c)), f.detector) for c in configs
        ]
        for i in progress(range(first_event, stop), stop - first_event, "evaluate", show_progress):
            event = f[i]
            hits = event.hits
            for k, module in enumerate(modules):
                network[k].append(module.produce(event, hits))
                chain[k].append(
                    network[k][-1]
                    if context is None
                    else context.apply(hits, network[k][-1], f.detector)
                )
            truth["label"].append(hits.label)
            truth["michel"].append(hits.michel)
            truth["plane"].append(hits.plane)
            # unique over the sample: (event, Michel electron); 0 stays "no Michel electron"
            mid = hits.michel_id.astype(np.int64)
            truth["electron"].append(np.where(mid > 0, (i + 1) * (1 << 32) + mid, 0))
    return _Scored(
        **{k: np.concatenate(v) for k, v in truth.items()},
        network=[np.concatenate(n) for n in network],
        chain=[np.concatenate(c) for c in chain],
        events=(first_event, stop),
    )


def _figures(
    scored: _Scored, k: int, context: MichelContext | None, michel_cut: float
) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(figures of interface ``k``'s chain output, with the network's own under "network"
    where the MichelContext stage is on; ROC curves of both)."""
    truth = (scored.label, scored.michel)
    metrics, curves = summarise(
        *truth,
        scored.chain[k],
        michel_cut,
        plane=scored.plane,
        michel_electron=scored.electron,
    )
    stage: dict[str, Any] = {"michel_context": None if context is None else context.sha256}
    if context is not None:
        network_metrics, network_curves = summarise(
            *truth, scored.network[k], michel_cut, michel_electron=scored.electron
        )
        stage["network"] = {k: v for k, v in network_metrics.items() if k in NETWORK_FIGURES}
        curves = {
            **{f"{name}, with context": c for name, c in curves.items()},
            **{f"{name}, network alone": c for name, c in network_curves.items()},
        }
    return {**stage, **metrics}, curves


def evaluate_file(
    events_file: str | os.PathLike[str],
    interface_config: InferenceSettings | Mapping[str, Any] | None = None,
    first_event: int = 0,
    n_events: int | None = None,
    michel_cut: float = MICHEL_CUT,
    roc_png: str | os.PathLike[str] | None = "roc.png",
    show_progress: bool = True,
    reco_config: RecoSettings | None = None,
) -> dict[str, Any]:
    """Score every hit of events [first_event, first_event + n_events) and compare with truth.

    interface_config: the ModelInterface configuration (default: local ONNX Runtime with
    the shipped model); reco_config: ``[reco]`` (default: the shipped MichelContext stage
    on). With the stage on, the figures are those of its output and ``network`` holds the
    network's own; the ROC PNG shows both.
    """
    config = inference_settings(interface_config or {})
    context = MichelContext.from_settings(reco_config or RecoSettings())
    t0 = time.perf_counter()
    scored = _score_events(events_file, [config], context, first_event, n_events, show_progress)
    figures, curves = _figures(scored, 0, context, michel_cut)
    if roc_png is not None:
        plot_roc(curves, roc_png)
    return {
        "events_file": str(events_file),
        "events": list(scored.events),
        "interface": _describe(config),
        **figures,
        "roc_png": None if roc_png is None else str(roc_png),
        "seconds": time.perf_counter() - t0,
    }


# the figures compare_models sets side by side
COMPARED = (
    "track_em_accuracy",
    "auc_track_em",
    "michel_efficiency",
    "michel_purity",
    "michel_efficiency_at_purity_0.8",
    "auc_michel",
    "accuracy_3class",
)


def compare_models(
    events_file: str | os.PathLike[str],
    models: list[str],
    repository: str | os.PathLike[str] | None = None,
    first_event: int = 0,
    n_events: int | None = None,
    michel_cut: float = MICHEL_CUT,
    show_progress: bool = True,
    reco_config: RecoSettings | None = None,
) -> dict[str, Any]:
    """The figures of several models of one repository on the same held-out hits, side by
    side: each model run in-process by the backend ``argonic serve`` loads for it, followed
    by the same MichelContext stage; ``same_class`` is the fraction of hits whose class
    (argmax of the three scores) each model shares with the first, chain and network."""
    if len(models) < 2 or len(set(models)) != len(models):
        raise ArgonicError(f"compare two or more different models, got {models}")
    configs = [
        inference_settings(
            {
                "interface": "local",
                "local": {
                    "backend": "repository",
                    "model": name,
                    "repository": str(repository or ""),
                },
            }
        )
        for name in models
    ]
    context = MichelContext.from_settings(reco_config or RecoSettings())
    t0 = time.perf_counter()
    scored = _score_events(events_file, configs, context, first_event, n_events, show_progress)
    figures = {name: _figures(scored, k, context, michel_cut)[0] for k, name in enumerate(models)}
    planes = {
        f"{figure}_{plane}": {n: f["per_plane"][plane][figure] for n, f in figures.items()}
        for plane in PLANE_NAMES
        for figure in ("track_em_accuracy", "michel_efficiency_at_purity_0.8")
        if all(plane in f["per_plane"] for f in figures.values())
    }

    def same(scores: list[np.ndarray]) -> dict[str, float]:
        first = scores[0][:, :3].argmax(1)
        return {
            n: float(np.mean(s[:, :3].argmax(1) == first))
            for n, s in zip(models, scores, strict=True)
        }

    return {
        "events_file": str(events_file),
        "events": list(scored.events),
        "hits": len(scored.label),
        "models": models,
        **{figure: {n: f[figure] for n, f in figures.items()} for figure in COMPARED},
        **planes,
        "same_class": same(scored.chain),
        "same_class_network": same(scored.network),
        "figures": [{"model": n, **f} for n, f in figures.items()],  # all of them: --json
        "seconds": time.perf_counter() - t0,
    }
