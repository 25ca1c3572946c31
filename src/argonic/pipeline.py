"""`argonic run`: the end-to-end SONIC job on built-in defaults.

Simulate events, start a local `argonic serve` with the shipped model repository, run
the reconstruction chain with remote inference through it, and (by default) run the
same chain with local inference to show that the physics does not change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from argonic.inference.local_server import LocalServer
from argonic.reco.executors import run_reco
from argonic.reco.simulation import simulate_file
from argonic.repository import MODEL_NAME, shipped_repository
from argonic.settings import load_settings


def compare_reco_files(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> dict[str, Any]:
    """Largest score difference and number of hits whose predicted class differs between two reco files."""
    max_diff, differ, hits = 0.0, 0, 0
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in fa["events"]:
            sa, sb = fa["events"][key]["scores"][:], fb["events"][key]["scores"][:]
            if len(sa):
                max_diff = max(max_diff, float(np.abs(sa - sb).max()))
            differ += int(
                np.count_nonzero(
                    fa["events"][key]["predicted"][:] != fb["events"][key]["predicted"][:]
                )
            )
            hits += len(sa)
    return {"hits": hits, "max_abs_score_difference": max_diff, "hits_with_different_class": differ}


def run_sonic(
    workdir: str | os.PathLike[str] = "argonic-run",
    detector: str = "protodune-sp",
    n_events: int = 1,
    seed: int = 1,
    batch_size: int = 1693,
    compare_local: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Simulate, serve, reconstruct through the server; return one summary of all steps."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    events = work / "events.h5"
    sim = simulate_file(
        events, detector=detector, n_events=n_events, seed=seed, show_progress=show_progress
    )
    server = LocalServer(shipped_repository(), MODEL_NAME)
    try:
        address = server.start()
        settings = load_settings(
            flags={
                "inference.interface": "remote",
                "inference.remote.servers": [address],
                "inference.batch_size": batch_size,
            }
        )
        remote = run_reco(events, work / "reco_remote.h5", settings, show_progress=show_progress)
    finally:
        server.stop()
    summary: dict[str, Any] = {
        "workdir": str(work),
        "simulation": sim,
        "server": address,
        "remote": remote,
    }
    if compare_local:
        local = run_reco(
            events, work / "reco_local.h5", load_settings(), show_progress=show_progress
        )
        t_local = _module_seconds(local)
        t_remote = _module_seconds(remote)
        summary["local"] = local
        summary["emtrackmichelid_s_per_event"] = {"local": t_local, "remote": t_remote}
        summary["agreement"] = compare_reco_files(work / "reco_local.h5", work / "reco_remote.h5")
    return summary


def _module_seconds(reco_summary: dict[str, Any]) -> float:
    return next(
        r["wall_s_per_event"] for r in reco_summary["modules"] if r["module"] == "emtrackmichelid"
    )
