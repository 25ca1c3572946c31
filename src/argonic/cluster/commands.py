"""The library side of ``argonic cluster up|down|status``.

``up`` leaves the processes running (each in its own session) and returns, or with
``foreground`` stays and supervises them; ``down`` and ``status`` find the processes again
through the state file in the run directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from argonic import procs
from argonic.cluster.state import DEFAULT_RUN_DIR, STATE_FILE, Proc, atomic_write, load_state
from argonic.cluster.supervise import Cluster, health_check, stop_processes, supervise


def cluster_up(
    model_repository: str | Path,
    replicas: int = 2,
    *,
    foreground: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Start a cluster (``options``: :class:`Cluster`'s). Detached (default): return once it
    serves, leaving it running.

    ``foreground``: stay, restart replicas that exit unexpectedly, and stop everything on
    SIGINT / SIGTERM (for running under a supervisor or in a terminal).
    """
    cluster = Cluster(model_repository, replicas, detach=not foreground, **options)
    cluster.start()
    state = cluster.state()
    print(
        f"argonic cluster: {replicas} replica(s) behind nginx; endpoint {cluster.endpoint} "
        f"(state in {cluster.run_dir / STATE_FILE})",
        file=sys.stderr,
        flush=True,
    )
    if not foreground:
        return state
    return supervise(cluster)


def cluster_down(run_dir: str | Path = DEFAULT_RUN_DIR, timeout_s: float = 40.0) -> dict[str, Any]:
    """Stop the cluster recorded in ``run_dir``: nginx first, then drain the replicas."""
    state = load_state(run_dir)
    processes = [Proc.from_state(p) for p in state["processes"]]
    summary = stop_processes(processes, timeout_s)
    state["processes"] = [p.state() for p in processes]
    atomic_write(Path(run_dir) / STATE_FILE, json.dumps(state, indent=2))
    return {
        "endpoint": state["endpoint"],
        "run_dir": str(Path(run_dir).resolve()),
        **summary,
        "still_running": sum(p.alive() for p in processes),
    }


def cluster_status(run_dir: str | Path = DEFAULT_RUN_DIR) -> dict[str, Any]:
    """The state file, with each process's liveness and health (SERVING) checked now."""
    state = load_state(run_dir)
    for p in state["processes"]:
        p["alive"] = procs.alive(p["pid"], p.get("start_time"))
        p["serving"] = p["alive"] and health_check(f"{state['host']}:{p['grpc_port']}")
    state["serving"] = all(p["serving"] for p in state["processes"])
    return state
