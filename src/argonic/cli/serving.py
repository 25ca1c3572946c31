"""`argonic serve`, `argonic health` and `argonic cluster`: the server side."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from argonic import ArgonicError
from argonic._util import dump_json
from argonic.cli.options import (
    Summary,
    non_negative_int,
    positive_int,
)
from argonic.repository import shipped_repository

if TYPE_CHECKING:
    pass


# --- serve --------------------------------------------------------------------------------


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-repository",
        default=None,
        help="model repository (Triton layout); default: the shipped one (the checkout's "
        "models/, the installed copy, or $ARGONIC_MODEL_REPOSITORY)",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument(
        "--http-address",
        default=None,
        help="address the HTTP/REST endpoint listens on (Triton's flag; default: --host)",
    )
    p.add_argument(
        "--grpc-port", type=non_negative_int, default=8001, help="gRPC port (0: any free)"
    )
    p.add_argument(
        "--metrics-port",
        type=non_negative_int,
        default=8002,
        help="Prometheus /metrics port (0: any free)",
    )
    p.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    p.add_argument(
        "--http-port",
        type=non_negative_int,
        default=8000,
        help="HTTP/REST port (KServe v2 with binary tensors; 0: any free)",
    )
    for proto in ("http", "grpc"):
        p.add_argument(
            f"--allow-{proto}",
            type=_bool,
            nargs="?",
            const=True,
            default=True,
            metavar="BOOL",
            help=f"serve the {proto.upper()} endpoint (Triton's flag; default true)",
        )
    p.add_argument(
        "--load-model",
        action="append",
        default=None,
        metavar="NAME",
        help="load only this model at start-up (repeatable; default: all)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds SIGTERM waits for in-flight requests",
    )
    p.add_argument(
        "--model-control-mode",
        choices=("none", "explicit", "poll"),
        default="none",
        help="none: RepositoryModelLoad/Unload refused (Triton's default); explicit: allowed; "
        "poll: follow the repository on disk every --repository-poll-secs",
    )
    p.add_argument(
        "--repository-poll-secs",
        type=float,
        default=15.0,
        help="poll mode: seconds between scans of the model repository",
    )
    tls = p.add_argument_group("TLS and access control (Triton's flags)")
    for flag, text in (
        ("--grpc-use-ssl", "serve gRPC over TLS (needs --grpc-server-cert and --grpc-server-key)"),
        ("--grpc-use-ssl-mutual", "mutual TLS: clients need a certificate --grpc-root-cert signed"),
    ):
        tls.add_argument(flag, nargs="?", const=True, default=False, type=_bool, help=text)
    tls.add_argument("--grpc-server-cert", default="", help="PEM file of the server certificate")
    tls.add_argument("--grpc-server-key", default="", help="PEM file of the server key")
    tls.add_argument("--grpc-root-cert", default="", help="PEM file of the CA for client certs")
    tls.add_argument(
        "--grpc-restricted-protocol",
        action="append",
        default=[],
        metavar="CATEGORIES:KEY=VALUE",
        help="calls of these protocols (health, metadata, inference, shared-memory, "
        "model-config, model-repository, statistics, trace, logging; comma-separated) need "
        "the header KEY: VALUE, else UNAVAILABLE (repeatable)",
    )
    tls.add_argument(
        "--http-restricted-api",
        action="append",
        default=[],
        metavar="CATEGORIES:KEY=VALUE",
        help="the same for HTTP/REST: requests of these categories need the header KEY: VALUE, "
        "else 403 (repeatable). A server whose gRPC is secured refuses to start with an HTTP "
        "endpoint open where gRPC is not (docs/operations.md)",
    )
    limits = p.add_argument_group("memory limits")
    limits.add_argument(
        "--grpc-max-message-bytes",
        type=positive_int,
        default=64 << 20,
        help="largest gRPC message received or sent; above it RESOURCE_EXHAUSTED",
    )
    limits.add_argument(
        "--max-inflight-bytes",
        type=non_negative_int,
        default=128 << 20,
        help="bytes of request tensors admitted at once, server-wide; excess requests get "
        "UNAVAILABLE before their tensors are decoded (0: no cap)",
    )


def _bool(text: str | bool) -> bool:
    """Triton's boolean flag values: true/false, 1/0, yes/no, on/off."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _serve(a: argparse.Namespace) -> Summary:
    from pathlib import Path

    from argonic.server import serve
    from argonic.server.security import SecurityError, TlsConfig, parse_restriction

    if not (a.allow_http or a.allow_grpc):
        raise ArgonicError("--allow-http and --allow-grpc are both false: nothing to serve")
    tls = None
    if a.grpc_use_ssl or a.grpc_use_ssl_mutual:
        if not (a.grpc_server_cert and a.grpc_server_key):
            raise SecurityError("--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key")
        root = Path(a.grpc_root_cert) if a.grpc_root_cert else None
        tls = TlsConfig(
            Path(a.grpc_server_cert), Path(a.grpc_server_key), root, a.grpc_use_ssl_mutual
        )
    return serve(
        a.model_repository or shipped_repository(),
        host=a.host,
        grpc_port=a.grpc_port,
        metrics_port=None if a.no_metrics else a.metrics_port,
        models=a.load_model,
        drain_timeout_s=a.drain_timeout,
        model_control_mode=a.model_control_mode,
        repository_poll_s=a.repository_poll_secs,
        tls=tls,
        restricted=[parse_restriction(r) for r in a.grpc_restricted_protocol],
        http_restricted=[
            parse_restriction(r, "--http-restricted-api") for r in a.http_restricted_api
        ],
        http_address=a.http_address,
        max_message_bytes=a.grpc_max_message_bytes,
        max_inflight_bytes=a.max_inflight_bytes,
        http_port=a.http_port if a.allow_http else None,
        allow_grpc=a.allow_grpc,
    )


# --- health -------------------------------------------------------------------------------


def _health_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="HOST:PORT", help="gRPC address of the server")
    p.add_argument(
        "--model", default="", metavar="NAME", help="ask about this model (default: the server)"
    )
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")


def _health(a: argparse.Namespace) -> Summary | None:
    from argonic.server.health import check

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
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for each `argonic serve` (repeatable, e.g. --serve-arg=--drain-timeout=10)",
    )
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
        serve_args=a.serve_arg,
        nginx=a.nginx,
        foreground=a.foreground,
        gpus=[g for g in a.gpus.split(",") if g],
    )
    if not a.json:
        print(state["endpoint"])
        return None
    return state
