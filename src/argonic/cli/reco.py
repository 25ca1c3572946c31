"""`argonic reco`, `argonic evaluate` and `argonic run`: the chain, its physics, the end-to-end job."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from argonic.cli.options import (
    DETECTORS,
    INTERFACES,
    Summary,
    add_aliased,
    add_config_options,
    non_negative_int,
    output_file,
    output_folder,
    positive_int,
)

if TYPE_CHECKING:
    from argonic.settings import Settings


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
    add_config_options(p, "inference.batch_size=1693")
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
        "--batch-size", type=positive_int, default=None, help="patches per inference call"
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
        "--workers", type=positive_int, default=2, help="Dask LocalCluster worker processes"
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
    from argonic.reco.executors import run_reco
    from argonic.tracing import install_client_tracing

    install_client_tracing()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT set: spans exported

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


# --- evaluate -----------------------------------------------------------------------------


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("events_file", help="HDF5 event file from `argonic simulate`")
    p.add_argument(
        "--first-event",
        type=non_negative_int,
        default=0,
        help="first event to evaluate (e.g. the first held-out one of `argonic train`)",
    )
    p.add_argument(
        "--events", type=positive_int, default=None, help="number of events (default: the rest)"
    )
    p.add_argument("--michel-cut", type=float, default=0.6, help="cut on the michel score")
    p.add_argument("--roc", default="roc.png", help="output PNG with the ROC curves")
    add_config_options(p, "inference.local.backend=torch")
    p.add_argument("--interface", default=None, help="ModelInterface: local or remote")
    p.add_argument(
        "--server",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="inference server for --interface remote (repeatable)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=None, help="patches per inference call"
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="compare these models of the model repository on the same hits, side by side "
        "(each run in-process by the backend argonic serve loads for it)",
    )
    add_aliased(
        p,
        "--model-repository",
        "--repository",
        dest="repository",
        default=None,
        help="with --models: the model repository (default: the shipped one)",
    )


def _evaluate(a: argparse.Namespace) -> Summary:
    from argonic.reco.evaluate import compare_models, evaluate_file

    settings = reco_settings(a)
    if a.models:
        return compare_models(
            a.events_file,
            a.models,
            a.repository,
            first_event=a.first_event,
            n_events=a.events,
            michel_cut=a.michel_cut,
            show_progress=not a.json,
            reco_config=settings.reco,
        )
    return evaluate_file(
        a.events_file,
        settings.inference,
        first_event=a.first_event,
        n_events=a.events,
        michel_cut=a.michel_cut,
        roc_png=a.roc,
        show_progress=not a.json,
        reco_config=settings.reco,
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
    p.add_argument("--events", type=positive_int, default=1, help="number of events")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed")
    p.add_argument("--batch-size", type=positive_int, default=1693, help="patches per request")
    p.add_argument(
        "--compare-local",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run local inference and compare the per-hit classes",
    )


def _run(a: argparse.Namespace) -> Summary | None:
    from argonic.pipeline import run_sonic
    from argonic.reco.chain import format_table
    from argonic.tracing import install_client_tracing

    install_client_tracing()

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
