"""The study's figures (matplotlib, Agg): module time vs clients (the paper's Figure 7) and the
server's throughput and batch sizes over time (Figure 6). Every figure carries ``label``
(e.g. "emulated client CPU") in its title."""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from argonic.study.latency_model import ModelFit
from argonic.study.scrape import BATCH, BATCH_BOUNDS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_module_time(
    per_n: list[dict[str, Any]],
    fit: ModelFit | None,
    path: str | os.PathLike[str],
    label: str,
    mva: ModelFit | None = None,
) -> None:
    """Mean EmTrackMichelId time per event vs simultaneous clients, with the fitted model."""
    plt = _plt()
    n = np.array([p["n_clients"] for p in per_n], float)
    mean = np.array([p["module_s_steady_mean"] for p in per_n])
    std = np.array([p["module_s_steady_std"] for p in per_n])
    everything = np.array([p["module_s_mean"] for p in per_n])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar(
        n,
        mean,
        yerr=std,
        fmt="o",
        color="k",
        capsize=3,
        label="measured, all clients running (mean, std over events): fitted",
    )
    ax.plot(n, everything, "x", color="0.5", label="measured, all events (incl. the tail)")
    if fit is not None:
        grid = np.linspace(0, max(n.max(), fit.knee) * 1.05 + 1, 400)
        ax.plot(
            grid,
            fit.predict(grid / fit.servers),
            "-",
            color="C3",
            label=f"Eq. 4 fit: t_flat {fit.t_flat:.3g} s, t_gpu {fit.t_gpu:.3g} s "
            f"(max err {fit.max_relative_error:.0%})",
        )
        if mva is not None:
            whole = np.arange(1, int(grid.max()) + 1)
            ax.plot(
                whole,
                mva.predict(whole / mva.servers),
                "--",
                color="C2",
                label=f"same system by MVA: t_flat {mva.t_flat:.3g} s, t_gpu {mva.t_gpu:.3g} s "
                f"(max err {mva.max_relative_error:.0%})",
            )
        if np.isfinite(fit.knee):
            ax.axvline(
                fit.knee * fit.servers,
                ls="--",
                color="C0",
                label=f"knee N* = t_ideal/t_gpu = {fit.knee * fit.servers:.1f}",
            )
        ax.set_title(
            f"EmTrackMichelId time vs clients, latency model (Eq. 4) max |model - measured| / "
            f"measured = {fit.max_relative_error:.1%}\n({label})",
            fontsize=8,
        )
    else:
        ax.set_title(f"EmTrackMichelId time vs clients\n({label})", fontsize=9)
    ax.set_xlabel("simultaneous clients (one server)")
    ax.set_ylabel("module time per event [s]")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _spaced(samples: list[dict[str, Any]], min_dt: float) -> list[dict[str, Any]]:
    """Samples at least ``min_dt`` apart (the scrapes at phase boundaries fall between the
    periodic ones: a rate over a few milliseconds would be noise)."""
    kept: list[dict[str, Any]] = []
    for s in samples:
        if not kept or s["t_s"] - kept[-1]["t_s"] >= min_dt:
            kept.append(s)
    return kept


def _rates(samples: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dts = np.diff([s["t_s"] for s in samples])
    samples = _spaced(samples, 0.6 * float(np.median(dts)) if dts.size else 0.0)
    t = np.array([s["t_s"] for s in samples])
    count = np.array([s["nv_inference_count"] for s in samples])
    execs = np.array([s[f"{BATCH}_count"] for s in samples])
    rows = np.array([s[f"{BATCH}_sum"] for s in samples])
    dt = np.diff(t)
    ok = dt > 0
    mid = (t[1:] + t[:-1])[ok] / 2
    rate = np.diff(count)[ok] / dt[ok]
    dexec = np.diff(execs)[ok]
    mean_batch = np.where(dexec > 0, np.diff(rows)[ok] / np.maximum(dexec, 1), np.nan)
    return mid, rate, mean_batch


def plot_server(
    samples: list[dict[str, Any]],
    phases: list[dict[str, Any]],
    path: str | os.PathLike[str],
    label: str,
) -> None:
    """Server inferences/s and mean execution batch size over time; batch-size distribution per phase."""
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(6.4, 7.5))
    if len(samples) >= 2:
        mid, rate, mean_batch = _rates(samples)
        axes[0].plot(mid, rate, "-", color="C0", lw=1)
        axes[1].plot(mid, mean_batch, ".", color="C1", ms=3)
    for p in phases:
        for ax in axes[:2]:
            ax.axvspan(p["t_release_s"], p["t_end_s"], color="0.9", zorder=0)
        axes[0].text(
            (p["t_release_s"] + p["t_end_s"]) / 2,
            0.98,
            f"N={p['n_clients']}",
            ha="center",
            va="top",
            fontsize=7,
            transform=axes[0].get_xaxis_transform(),
        )
    axes[0].set_ylabel("inferences / s")
    axes[0].set_title(f"server throughput and batches over time\n({label})", fontsize=9)
    axes[1].set_ylabel("mean rows per execution")
    axes[1].set_xlabel("time since start [s] (shaded: clients running)")
    edges = np.array((0,) + BATCH_BOUNDS, float)
    width = 0.8 / max(len(phases), 1)
    drawn = 0
    for i, p in enumerate(phases):
        counts = np.array(p["batch_histogram"], float)
        total = counts.sum()
        if total > 0:
            drawn += 1
            axes[2].bar(
                np.arange(len(counts)) + i * width - 0.4,
                counts / total,
                width=width,
                align="edge",
                label=f"N={p['n_clients']}",
            )
    axes[2].set_xticks(range(len(BATCH_BOUNDS)))
    axes[2].set_xticklabels(
        [
            f"{int(a) + 1}-{int(b)}" if b > a + 1 else f"{int(b)}"
            for a, b in itertools.pairwise(edges)
        ],
        rotation=45,
        fontsize=7,
    )
    axes[2].set_xlabel("rows per model execution")
    axes[2].set_ylabel("fraction of executions")
    if drawn:
        axes[2].legend(fontsize=7, ncol=4)
    else:
        axes[2].text(
            0.5, 0.5, "no server metrics", ha="center", va="center", transform=axes[2].transAxes
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def replot(output: str | os.PathLike[str]) -> list[str]:
    """Draw a finished study's figures again from its summary.json and server_metrics.csv."""
    import csv
    import json
    from pathlib import Path

    from argonic.study.latency_model import fit_module_time, fit_module_time_mva

    out = Path(output)
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "server_metrics.csv") as f:
        samples = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    fit = summary["fit"]
    servers = summary["config"]["servers"]
    points = fit["points"]
    refit = fit_module_time(
        [p["clients_per_server"] * servers for p in points],
        [p["measured_s"] for p in points],
        t_other=None if fit["t_other_fitted"] else fit["t_other"],
        servers=servers,
        t_cpu=fit["t_cpu"],
        t_gpu_hint=fit["t_gpu"] if fit["t_gpu_source"] == "hint" else None,
    )
    paths = [str(out / "module_time_vs_clients.png"), str(out / "server_over_time.png")]
    mva = None
    if not fit["t_other_fitted"]:
        mva = fit_module_time_mva(
            [p["clients_per_server"] * servers for p in points],
            [p["measured_s"] for p in points],
            t_other=fit["t_other"],
            servers=servers,
            t_cpu=fit["t_cpu"],
        )
    plot_module_time(summary["per_n"], refit, paths[0], summary["label"], mva)
    plot_server(samples, summary["per_n"], paths[1], summary["label"])
    return paths
