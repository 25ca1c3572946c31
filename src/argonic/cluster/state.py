"""A cluster's run directory: the process records, the state file and the Prometheus targets.

``cluster.json`` lists every process (role, argv, log, pid and start time, ports) so that
``argonic cluster down|status`` find them again; ``prometheus-targets.json`` is a file_sd
target list of the replicas' metrics endpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from argonic import ArgonicError, procs

STATE_FILE = "cluster.json"
TARGETS_FILE = "prometheus-targets.json"
NGINX_CONF = "nginx.conf"
DEFAULT_RUN_DIR = ".argonic-cluster"


class ClusterError(ArgonicError):
    """A cluster could not be started, found or stopped."""


@dataclass
class Proc:
    """One process of the cluster, as recorded in the state file."""

    role: str  # "replica" or "balancer"
    index: int
    argv: list[str]
    log: str
    pid: int = 0
    start_time: int | None = None
    grpc_port: int = 0
    metrics_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # set for this process only
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_state(cls, p: dict[str, Any]) -> Proc:
        """The record of one process in the state file (no handle: found by pid)."""
        return cls(
            p["role"],
            p["index"],
            p["argv"],
            p["log"],
            pid=p["pid"],
            start_time=p.get("start_time"),
            grpc_port=p["grpc_port"],
            metrics_port=p.get("metrics_port"),
            env=p.get("env", {}),
        )

    def child(self) -> procs.Child:
        """The process to stop: nginx stops gracefully on SIGQUIT, a replica drains on SIGTERM."""
        stop_signal = signal.SIGQUIT if self.role == "balancer" else signal.SIGTERM
        return procs.Child(self.pid, self.start_time, self.popen, stop_signal=stop_signal)

    def alive(self) -> bool:
        return self.child().alive()

    def state(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}
        d["alive"] = self.alive()
        return d


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def write_state(run_dir: Path, state: dict[str, Any], metrics_endpoints: list[str]) -> None:
    """The state file and the Prometheus file_sd targets of the replicas' metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / STATE_FILE, json.dumps(state, indent=2))
    targets = [
        {"targets": [m], "labels": {"replica": str(i), "job": "argonic"}}
        for i, m in enumerate(metrics_endpoints)
    ]
    atomic_write(run_dir / TARGETS_FILE, json.dumps(targets, indent=2))


def load_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterError(
            f"no cluster state file {path} (was `argonic cluster up` run with this --run-dir?)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ClusterError(f"cluster state file {path} is not valid JSON: {exc}") from None
