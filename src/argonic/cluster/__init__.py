"""Several ``argonic serve`` replicas behind one nginx gRPC load balancer, on one machine.

``Cluster`` starts N replicas on consecutive loopback ports and nginx in front of them,
writes a state file in its run directory and stops all of it again. ``cluster_up`` /
``cluster_down`` / ``cluster_status`` are the library side of ``argonic cluster
up|down|status``: ``up`` leaves the processes running (each in its own session) and
returns; ``down`` finds them again through the state file.

Ports: the balancer listens on ``grpc_port``; replica i (0-based) listens for gRPC on
``replica_port + i`` and serves metrics on ``metrics_port + i``. A Prometheus file_sd
target list of the replicas' metrics endpoints is written next to the state file.

nginx runs as a non-daemon child with ``-p <run dir> -e <run dir>/nginx-error.log``: its
pid file, logs and temp directories are in the run directory, never the system's.

- ``render``: the nginx template (package data, the one copy) and its rendering;
- ``state``: the run directory: process records, state file, Prometheus targets;
- ``supervise``: the replicas and nginx as processes (start, health, restart, stop);
- ``commands``: ``cluster_up``, ``cluster_down``, ``cluster_status``.
"""

from argonic.cluster.commands import cluster_down, cluster_status, cluster_up
from argonic.cluster.render import nginx_template, nginx_template_path, render_nginx_config
from argonic.cluster.state import (
    DEFAULT_RUN_DIR,
    NGINX_CONF,
    STATE_FILE,
    TARGETS_FILE,
    ClusterError,
    Proc,
    load_state,
)
from argonic.cluster.supervise import (
    RESTART_BACKOFF_S,
    Cluster,
    health_check,
    stop_processes,
)

__all__ = [
    "DEFAULT_RUN_DIR",
    "NGINX_CONF",
    "RESTART_BACKOFF_S",
    "STATE_FILE",
    "TARGETS_FILE",
    "Cluster",
    "ClusterError",
    "Proc",
    "cluster_down",
    "cluster_status",
    "cluster_up",
    "health_check",
    "load_state",
    "nginx_template",
    "nginx_template_path",
    "render_nginx_config",
    "stop_processes",
]
