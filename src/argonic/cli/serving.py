"""`argonic serve`, `argonic health` and `argonic cluster`: the server side."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from argonic._util import dump_json
from argonic.cli.options import (
    Summary,
    add_config_options,
    add_settings_flags,
    positive_int,
    settings_flags,
)
from argonic.repository import shipped_repository

if TYPE_CHECKING:
    from argonic.settings import ServerSettings


# --- serve --------------------------------------------------------------------------------


def _serve_args(p: argparse.ArgumentParser) -> None:
    add_config_options(p, "server.max_inflight_bytes=268435456")
    add_settings_flags(p, "server")
    p.add_argument(
        "--no-metrics",
        dest="server.allow_metrics",
        action="store_const",
        const=False,
        help="do not serve /metrics (the same as --allow-metrics false)",
    )


def server_settings(a: argparse.Namespace) -> ServerSettings:
    """The ``[server]`` table: file, environment, --set, then the flags."""
    from argonic.settings import load_settings

    return load_settings(a.config, a.set, settings_flags(a, "server")).server


def _serve(a: argparse.Namespace) -> Summary:
    from argonic.server import serve

    return serve(server_settings(a))


# --- health -------------------------------------------------------------------------------


def _health_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="HOST:PORT", help="gRPC address of the server")
    p.add_argument(
        "--model", default="", metavar="NAME", help="ask about this model (default: the server)"
    )
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")


def _health(a: argparse.Namespace) -> Summary | None:
    from argonic.server.grpc.health import check

    status = check(a.target, a.model, a.timeout)
    summary = {"target": a.target, "service": a.model, "status": status}
    if a.json:
        print(dump_json({**summary, "serving": status == "SERVING"}))
    else:
        print(f"{a.target}{f' model {a.model}' if a.model else ''}: {status}")
    if status != "SERVING":
        raise SystemExit(1)
    return None


# --- cluster ------------------------------------------------------------------------------


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("up", "down", "status"),
        help="up: start replicas + nginx; down: stop them; status: check them",
    )
    p.add_argument(
        "--replicas", type=positive_int, default=2, help="number of argonic serve replicas"
    )
    p.add_argument(
        "--model-repository",
        default=None,
        help="model repository (Triton layout); default: the shipped one (the checkout's "
        "models/, the installed copy, or $ARGONIC_MODEL_REPOSITORY)",
    )
    p.add_argument("--grpc-port", type=positive_int, default=8001, help="the balancer's gRPC port")
    p.add_argument("--host", default="127.0.0.1", help="address everything listens on")
    p.add_argument(
        "--replica-port",
        type=positive_int,
        default=None,
        help="gRPC port of replica 0; replica i gets +i (default: grpc-port + 1000)",
    )
    p.add_argument(
        "--metrics-port",
        type=positive_int,
        default=None,
        help="metrics port of replica 0; replica i gets +i (default: replica-port + 100)",
    )
    p.add_argument(
        "--run-dir",
        default=".argonic-cluster",
        help="state file, logs, nginx.conf and nginx temp directories",
    )
    add_config_options(p, "server.drain_timeout_s=10")
    p.add_argument("--nginx", default="nginx", help="nginx executable")
    p.add_argument(
        "--foreground",
        action="store_true",
        help="up: stay, restart replicas that exit, stop everything on Ctrl-C / SIGTERM",
    )
    p.add_argument(
        "--gpus",
        default="",
        metavar="LIST",
        help="up: comma-separated GPU ids; replica i gets CUDA_VISIBLE_DEVICES=LIST[i %% len]",
    )


def _cluster(a: argparse.Namespace) -> Summary:
    from argonic import cluster

    if a.action == "down":
        return cluster.cluster_down(a.run_dir)
    if a.action == "status":
        return cluster.cluster_status(a.run_dir)
    state = cluster.cluster_up(
        a.model_repository or shipped_repository(),
        a.replicas,
        grpc_port=a.grpc_port,
        host=a.host,
        replica_port=a.replica_port,
        metrics_port=a.metrics_port,
        run_dir=a.run_dir,
        server_settings=server_settings(a),
        nginx=a.nginx,
        foreground=a.foreground,
        gpus=[g for g in a.gpus.split(",") if g],
    )
    if not a.json:
        print(state["endpoint"])
        return None
    return state
