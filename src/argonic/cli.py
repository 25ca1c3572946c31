"""`argonic <command>`: a thin layer; each command parses its options and calls one library function.

Errors a user can cause (bad files, names, indices, counts) end with one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from argonic import ArgonicError, __version__
from argonic._util import dump_json
from argonic.cli_options import (
    DETECTORS,
    INTERFACES,
    PLANES,
    HelpFormatter,
    add_aliased,
    add_logging_options,
    int_list,
    log,
    log_level,
    non_negative_int,
    output_file,
    output_folder,
    positive_int,
    setup_logging,
)

if TYPE_CHECKING:
    from argonic.settings import Settings

Summary = dict[str, Any]


# short names for the option types (argonic.cli_options holds the shared vocabulary)
_non_negative_int = non_negative_int
_positive_int = positive_int
_int_list = int_list


# --- simulate -----------------------------------------------------------------------------


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=DETECTORS, default="protodune-sp", help="detector")
    p.add_argument("--events", type=_positive_int, default=1, help="number of events")
    p.add_argument("--seed", type=_non_negative_int, default=1, help="random seed")
    p.add_argument("--run", type=_non_negative_int, default=1, help="run number stored in the file")
    p.add_argument(
        "-o", "--output", type=output_file, default="events.h5", help="output HDF5 event file"
    )


def _simulate(a: argparse.Namespace) -> Summary:
    from argonic.reco.events import simulate_file

    return simulate_file(
        a.output,
        detector=a.detector,
        n_events=a.events,
        seed=a.seed,
        run=a.run,
        show_progress=not a.json,
    )


# --- show ---------------------------------------------------------------------------------


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events_file",
        help="HDF5 event file from `argonic simulate`, or a reco file from `argonic reco` "
        "(then its event file is found and the predictions drawn beside the truth)",
    )
    p.add_argument(
        "--reco",
        default=None,
        metavar="RECO.h5",
        help="reco file of these events: draw the predicted class and the Michel score too",
    )
    p.add_argument("--event", type=_non_negative_int, default=0, help="event index in the file")
    p.add_argument("--plane", type=str.upper, choices=PLANES, default="W", help="plane to draw")
    p.add_argument("--tpc", type=int, default=None, help="TPC to draw (default: the busiest)")
    p.add_argument(
        "--hits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="overlay hits coloured by truth label",
    )
    p.add_argument(
        "--michel-cut", type=float, default=0.5, help="with a reco file: Michel score cut"
    )
    p.add_argument("-o", "--output", type=output_file, default="display.png", help="output PNG")


def _show(a: argparse.Namespace) -> Summary:
    from argonic.reco.display import draw_event

    return draw_event(
        a.events_file,
        a.output,
        event=a.event,
        plane=a.plane,
        tpc=a.tpc,
        show_hits=a.hits,
        reco=a.reco,
        michel_cut=a.michel_cut,
    )


# --- reco ---------------------------------------------------------------------------------


def _reco_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("events_file", help="HDF5 event file from `argonic simulate`")
    p.add_argument(
        "-o",
        "--output",
        type=output_file,
        default="reco.h5",
        help="output HDF5 file with per-hit scores",
    )
    p.add_argument(
        "--config", default=None, help="TOML configuration file (see docs/configuration.md)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration key, e.g. inference.batch_size=1693 (repeatable)",
    )
    p.add_argument(
        "--interface",
        choices=INTERFACES,
        default=None,
        help="ModelInterface (default: the configuration's, local)",
    )
    p.add_argument(
        "--server",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="inference server for --interface remote (repeatable: failover order)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=None, help="patches per inference call"
    )
    add_aliased(
        p,
        "--request-mode",
        "--mode",
        dest="request_mode",
        choices=("patch", "plane"),
        default=None,
        help="remote requests: 48x48 patches, or each (TPC, plane) image + hits (the "
        "server cuts the patches; far fewer bytes: BENCHMARKS.md) [inference.remote] request_mode",
    )
    p.add_argument(
        "--transport",
        choices=("fp32", "fp16"),
        default=None,
        help="remote patch-mode tensor precision ([inference.remote] transport)",
    )
    p.add_argument(
        "--tensor-compression",
        choices=("none", "zstd", "lz4"),
        default=None,
        help="lossless compression of request tensors ([inference.remote] tensor_compression)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="run events in this process, or fan them out over Dask workers",
    )
    p.add_argument(
        "--workers", type=_positive_int, default=2, help="Dask LocalCluster worker processes"
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="an existing Dask scheduler (e.g. from dask-jobqueue) instead of a LocalCluster",
    )


def reco_settings(a: argparse.Namespace) -> Settings:
    """The settings of a reco-like command: file, environment, --set, then the dedicated flags."""
    from argonic.settings import load_settings

    servers = [s for item in a.server for s in item.split(",") if s] if a.server else None
    flags = {
        "inference.interface": a.interface,
        "inference.remote.servers": servers,
        "inference.batch_size": a.batch_size,
    }
    for option, key in (
        ("request_mode", "request_mode"),
        ("transport", "transport"),
        ("tensor_compression", "tensor_compression"),
    ):
        flags[f"inference.remote.{key}"] = getattr(a, option, None)
    return load_settings(a.config, a.set, flags)


def _reco(a: argparse.Namespace) -> Summary:
    from argonic.reco.chain import format_table
    from argonic.reco.runner import run_reco

    summary = run_reco(
        a.events_file,
        a.output,
        reco_settings(a),
        show_progress=not a.json,
        executor=a.executor,
        workers=a.workers,
        scheduler=a.scheduler,
    )
    if not a.json:
        print(format_table(summary))
    return summary


# --- serve --------------------------------------------------------------------------------


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-repository", default="models", help="model repository (Triton layout)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument(
        "--grpc-port", type=_non_negative_int, default=8001, help="gRPC port (0: any free)"
    )
    p.add_argument(
        "--metrics-port",
        type=_non_negative_int,
        default=8002,
        help="Prometheus /metrics port (0: any free)",
    )
    p.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    p.add_argument(
        "--http-port",
        type=_non_negative_int,
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
    limits = p.add_argument_group("memory limits")
    limits.add_argument(
        "--grpc-max-message-bytes",
        type=_positive_int,
        default=64 << 20,
        help="largest gRPC message received or sent; above it RESOURCE_EXHAUSTED",
    )
    limits.add_argument(
        "--max-inflight-bytes",
        type=_non_negative_int,
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
        a.model_repository,
        host=a.host,
        grpc_port=a.grpc_port,
        metrics_port=None if a.no_metrics else a.metrics_port,
        models=a.load_model,
        drain_timeout_s=a.drain_timeout,
        model_control_mode=a.model_control_mode,
        repository_poll_s=a.repository_poll_secs,
        tls=tls,
        restricted=[parse_restriction(r) for r in a.grpc_restricted_protocol],
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
        "--replicas", type=_positive_int, default=2, help="number of argonic serve replicas"
    )
    p.add_argument("--model-repository", default="models", help="model repository (Triton layout)")
    p.add_argument("--grpc-port", type=_positive_int, default=8001, help="the balancer's gRPC port")
    p.add_argument("--host", default="127.0.0.1", help="address everything listens on")
    p.add_argument(
        "--replica-port",
        type=_positive_int,
        default=None,
        help="gRPC port of replica 0; replica i gets +i (default: grpc-port + 1000)",
    )
    p.add_argument(
        "--metrics-port",
        type=_positive_int,
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
        a.model_repository,
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


# --- train --------------------------------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events_file", help="HDF5 event file from `argonic simulate` (its last events are held out)"
    )
    p.add_argument(
        "--holdout",
        type=_non_negative_int,
        default=None,
        help="events at the end of the file kept out of training (default: 20%%)",
    )
    p.add_argument("--epochs", type=_positive_int, default=4, help="passes over the training set")
    p.add_argument(
        "--batch-size", type=_positive_int, default=256, help="patches per training step"
    )
    p.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam (converges faster) or sgd (the original: Nesterov momentum 0.9)",
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: adam 0.001, sgd 0.01)"
    )
    p.add_argument("--seed", type=_non_negative_int, default=1, help="random seed")
    p.add_argument(
        "--threads", type=_non_negative_int, default=2, help="torch threads (0: torch's default)"
    )
    p.add_argument(
        "--hit-fraction",
        type=float,
        default=0.1,
        help="probability to train on an ordinary hit (keeps the natural track:em mix)",
    )
    p.add_argument(
        "--michel-keep", type=float, default=1.0, help="probability to train on a Michel hit"
    )
    p.add_argument(
        "--none-keep", type=float, default=1.0, help="probability to train on a none (noise) hit"
    )
    p.add_argument(
        "--max-patches",
        type=_positive_int,
        default=None,
        help="cap on training patches (4.6 kB each in memory)",
    )
    p.add_argument(
        "--validation-file",
        default=None,
        help="event file validated on after every epoch (default: the held-out events)",
    )
    p.add_argument(
        "--recipe",
        choices=("michel", "original"),
        default="michel",
        help="michel: cosine lr, flips, balanced BCE; original: SGD, 0.1 CE + MSE, no flips",
    )
    p.add_argument(
        "--michel-loss", choices=("bce", "focal", "mse"), default=None, help="michel-head loss"
    )
    p.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast (CPU)")
    p.add_argument(
        "--init", default=None, help="start from these weights (model.onnx or checkpoint)"
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint file: resumed if it exists, kept up to date"
    )
    p.add_argument(
        "--dataset-cache",
        default=None,
        help="HDF5 cache of the training patches: read if it exists, else written",
    )
    add_aliased(
        p,
        "--model-repository",
        "--repository",
        dest="repository",
        default=None,
        help="model repository to export into (default: the shipped one, models/)",
    )
    p.add_argument("--no-export", action="store_true", help="do not export the trained network")


def _train(a: argparse.Namespace) -> Summary:
    from argonic.model.train import TrainConfig, train_file
    from argonic.repository import shipped_repository

    options = dict(
        epochs=a.epochs,
        batch_size=a.batch_size,
        learning_rate=a.lr,
        seed=a.seed,
        threads=a.threads or None,
        bfloat16=a.bf16,
    )
    if a.michel_loss:
        options["michel_loss"] = a.michel_loss
    if a.recipe == "original":
        config = TrainConfig.original(**options)
    else:
        config = TrainConfig(optimizer=a.optimizer, **options)
    repository = None if a.no_export else (a.repository or shipped_repository())
    return train_file(
        a.events_file,
        config,
        holdout=a.holdout,
        hit_fraction=a.hit_fraction,
        michel_keep=a.michel_keep,
        none_keep=a.none_keep,
        max_patches=a.max_patches,
        validation_file=a.validation_file,
        init=a.init,
        checkpoint=a.checkpoint,
        dataset_cache=a.dataset_cache,
        repository=repository,
        show_progress=not a.json,
    )


# --- evaluate -----------------------------------------------------------------------------


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("events_file", help="HDF5 event file from `argonic simulate`")
    p.add_argument(
        "--first-event",
        type=_non_negative_int,
        default=0,
        help="first event to evaluate (e.g. the first held-out one of `argonic train`)",
    )
    p.add_argument(
        "--events", type=_positive_int, default=None, help="number of events (default: the rest)"
    )
    p.add_argument("--michel-cut", type=float, default=0.6, help="cut on the michel score")
    p.add_argument("--roc", default="roc.png", help="output PNG with the ROC curves")
    p.add_argument(
        "--config", default=None, help="TOML configuration file (its [inference] table is used)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration key, e.g. inference.local.backend=torch",
    )
    p.add_argument("--interface", default=None, help="ModelInterface: local or remote")
    p.add_argument(
        "--server",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="inference server for --interface remote (repeatable)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=None, help="patches per inference call"
    )


def _evaluate(a: argparse.Namespace) -> Summary:
    from argonic.reco.evaluate import evaluate_file

    return evaluate_file(
        a.events_file,
        reco_settings(a).inference,
        first_event=a.first_event,
        n_events=a.events,
        michel_cut=a.michel_cut,
        roc_png=a.roc,
        show_progress=not a.json,
    )


# --- run ----------------------------------------------------------------------------------


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir",
        type=output_folder,
        default="argonic-run",
        help="folder for the event and reco files",
    )
    p.add_argument("--detector", choices=DETECTORS, default="protodune-sp", help="detector")
    p.add_argument("--events", type=_positive_int, default=1, help="number of events")
    p.add_argument("--seed", type=_non_negative_int, default=1, help="random seed")
    p.add_argument("--batch-size", type=_positive_int, default=1693, help="patches per request")
    p.add_argument(
        "--compare-local",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run local inference and compare the per-hit classes",
    )


def _run(a: argparse.Namespace) -> Summary | None:
    from argonic.pipeline import run_sonic
    from argonic.reco.chain import format_table

    s = run_sonic(
        a.workdir,
        detector=a.detector,
        n_events=a.events,
        seed=a.seed,
        batch_size=a.batch_size,
        compare_local=a.compare_local,
        show_progress=not a.json,
    )
    if a.json:
        return s
    sim = s["simulation"]
    print(
        f"simulated {sim['events']} {sim['detector']} event(s): {sim['hits_mean']:.0f} hits per event"
    )
    print(f"\nremote inference through argonic serve at {s['server']} (batch {a.batch_size}):")
    print(format_table(s["remote"]))
    if "local" in s:
        print("\nlocal inference (ONNX Runtime in-process):")
        print(format_table(s["local"]))
        t, agree = s["emtrackmichelid_s_per_event"], s["agreement"]
        print(
            f"\nEmTrackMichelId s/event: local {t['local']:.2f}, remote {t['remote']:.2f} "
            f"(remote/local {t['remote'] / t['local']:.2f})"
        )
        print(
            f"same class for {agree['hits'] - agree['hits_with_different_class']} of {agree['hits']} hits; "
            f"largest score difference {agree['max_abs_score_difference']:.2g}"
        )
    print(f"\nfiles in {s['workdir']}/")
    return None


# --- study --------------------------------------------------------------------------------


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT",
        help="inference server to study (default: start a local argonic serve with the shipped model)",
    )
    p.add_argument(
        "--metrics-url",
        default=None,
        help="the server's Prometheus /metrics URL "
        "(default: http://HOST:8002/metrics, or the local server's)",
    )
    add_aliased(
        p,
        "--server-count",
        "--servers",
        dest="servers",
        type=_positive_int,
        default=1,
        help="servers behind --server (the model's clients per server = N / server count)",
    )
    p.add_argument(
        "--clients",
        type=_int_list,
        default=[1, 2, 4, 8],
        help="simultaneous client counts, e.g. 1,2,4,8",
    )
    p.add_argument("--events", type=_positive_int, default=4, help="events per client (K)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=1693, help="patches per ModelInfer request"
    )
    p.add_argument(
        "--pool",
        type=_positive_int,
        default=None,
        help="events to simulate (default --events: every client runs each event once, in its own "
        "order, so every N sees the same work)",
    )
    p.add_argument(
        "--events-file", default=None, help="event file (default: simulate --pool events)"
    )
    p.add_argument("--detector", choices=DETECTORS, default="mini", help="detector to simulate")
    p.add_argument("--seed", type=_non_negative_int, default=1, help="simulation seed")
    p.add_argument(
        "--client-cpu",
        choices=("emulated", "real"),
        default="emulated",
        help="emulated: the clients' non-ML CPU work is a sleep of its measured duration, inference "
        "requests are real; real: the clients run the whole chain (needs a core per client)",
    )
    p.add_argument(
        "--cpu-scale",
        type=float,
        default=1.0,
        help="emulated: multiply the measured non-ML CPU durations (labelled in every output)",
    )
    p.add_argument(
        "--max-patches",
        type=_positive_int,
        default=None,
        help="emulated: send at most this many patches per event (a reduced event)",
    )
    p.add_argument(
        "--rtt-ms", type=float, default=0.0, help="emulated network round trip (TCP proxy), ms"
    )
    p.add_argument(
        "--link-gbps", type=float, default=None, help="emulated link rate per direction, Gbit/s"
    )
    p.add_argument("--shared-link", action="store_true", help="all clients share one emulated link")
    p.add_argument("--model-repository", default=None, help="the local server's model repository")
    p.add_argument(
        "--dynamic-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="local server: --no-dynamic-batching serves a copy without the dynamic_batching block",
    )
    p.add_argument(
        "--scrape-interval", type=float, default=0.5, help="seconds between /metrics scrapes"
    )
    p.add_argument(
        "--farm",
        type=_int_list,
        default=[400, 2000],
        help="farm sizes (clients) for the sizing report",
    )
    p.add_argument(
        "--farm-servers",
        type=_int_list,
        default=[1, 2, 4, 8, 16, 32],
        help="server counts for the sizing report",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--no-local-baseline", action="store_true", help="skip the local inference measurement"
    )
    p.add_argument("-o", "--output", type=output_folder, default="study", help="output folder")


def _study(a: argparse.Namespace) -> Summary | None:
    from argonic.study.runner import StudyConfig, format_summary, run_study

    cfg = StudyConfig(
        output=a.output,
        clients=a.clients,
        events=a.events,
        pool=a.pool,
        batch_size=a.batch_size,
        server=a.server,
        metrics_url=a.metrics_url,
        servers=a.servers,
        events_file=a.events_file,
        detector=a.detector,
        seed=a.seed,
        client_cpu=a.client_cpu,
        cpu_scale=a.cpu_scale,
        max_patches=a.max_patches,
        rtt_ms=a.rtt_ms,
        link_gbps=a.link_gbps,
        shared_link=a.shared_link,
        model_repository=a.model_repository,
        dynamic_batching=a.dynamic_batching,
        scrape_interval_s=a.scrape_interval,
        farms=a.farm,
        farm_servers=a.farm_servers,
        plots=not a.no_plots,
        local_baseline=not a.no_local_baseline,
        show_progress=not a.json,
    )
    s = run_study(cfg)
    if a.json:
        return s
    print(format_summary(s))
    return None


COMMANDS: dict[
    str,
    tuple[
        str,
        Callable[[argparse.ArgumentParser], None],
        Callable[[argparse.Namespace], Summary | None],
    ],
] = {
    "run": (
        "the end-to-end SONIC job: simulate, start a local server, reconstruct through it, summarise",
        _run_args,
        _run,
    ),
    "simulate": (
        "simulate ProtoDUNE-SP-like events, find hits, write an HDF5 event file",
        _simulate_args,
        _simulate,
    ),
    "show": (
        "draw one plane of one event (wire vs tick) with its hits; with a reco file, the "
        "predicted class and the Michel score beside the truth",
        _show_args,
        _show,
    ),
    "reco": (
        "run hit finding and EmTrackMichelId (local or remote inference) over an event file",
        _reco_args,
        _reco,
    ),
    "cluster": (
        "run N argonic serve replicas behind an nginx gRPC load balancer (up, down, status)",
        _cluster_args,
        _cluster,
    ),
    "serve": (
        "serve a model repository over the KServe v2 / Triton gRPC protocol",
        _serve_args,
        _serve,
    ),
    "health": (
        "ask a server's grpc.health.v1 service whether it (or one model) is SERVING: exit 0 "
        "if so, 1 if not",
        _health_args,
        _health,
    ),
    "train": (
        "train the EmTrackMichelId network on simulated events, export it to the model repository",
        _train_args,
        _train,
    ),
    "evaluate": (
        "per-hit confusion matrix, track/em accuracy, Michel efficiency/purity, ROC curves",
        _evaluate_args,
        _evaluate,
    ),
    "study": (
        "the scaling study: N simultaneous clients against one server, the latency-model fit, plots",
        _study_args,
        _study,
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`argonic CMD: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="argonic", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"argonic {__version__}")
    add_logging_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        p.add_argument(
            "--json", action="store_true", help="print a machine-readable summary on stdout"
        )
        add_args(p)
        add_logging_options(p, defaults=False)
    return parser


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list) and len(value) > 12:
        return f"[{len(value)} values]"
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def _print_summary(summary: Summary) -> None:
    """Human-readable summary: one line per key; nested tables are left to --json."""
    for key, value in summary.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            continue
        print(f"{key}: {_format_value(value)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    serving = args.command == "serve"
    default = logging.INFO if serving else logging.WARNING
    setup_logging(args.command, log_level(args, default), timestamps=serving)
    for note in getattr(args, "deprecations", None) or []:
        log.warning(note)
    _, _, run = COMMANDS[args.command]
    try:
        summary = run(args)
    except ArgonicError as exc:
        print(f"argonic {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print(
            f"argonic {args.command}: error: this needs PyTorch, which the light install "
            "leaves out: pip install 'argonic[train]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"argonic {args.command}: interrupted", file=sys.stderr)
        return 130
    if summary is not None:
        if args.json:
            print(dump_json(summary))
        else:
            _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
