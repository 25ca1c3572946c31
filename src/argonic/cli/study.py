"""`argonic study`: the scaling study."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from argonic.cli.options import (
    DETECTORS,
    Summary,
    add_aliased,
    int_list,
    non_negative_int,
    output_folder,
    positive_int,
)

if TYPE_CHECKING:
    pass


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
        type=positive_int,
        default=1,
        help="servers behind --server (the model's clients per server = N / server count)",
    )
    p.add_argument(
        "--clients",
        type=int_list,
        default=[1, 2, 4, 8],
        help="simultaneous client counts, e.g. 1,2,4,8",
    )
    p.add_argument("--events", type=positive_int, default=4, help="events per client (K)")
    p.add_argument(
        "--batch-size", type=positive_int, default=1693, help="patches per ModelInfer request"
    )
    p.add_argument(
        "--pool",
        type=positive_int,
        default=None,
        help="events to simulate (default --events: every client runs each event once, in its own "
        "order, so every N sees the same work)",
    )
    p.add_argument(
        "--events-file", default=None, help="event file (default: simulate --pool events)"
    )
    p.add_argument("--detector", choices=DETECTORS, default="mini", help="detector to simulate")
    p.add_argument("--seed", type=non_negative_int, default=1, help="simulation seed")
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
        type=positive_int,
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
        type=int_list,
        default=[400, 2000],
        help="farm sizes (clients) for the sizing report",
    )
    p.add_argument(
        "--farm-servers",
        type=int_list,
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
