"""`argonic study`: the scaling study (its flags map onto the ``[study]`` settings keys)."""

from __future__ import annotations

import argparse
from pathlib import Path

from argonic.cli.options import (
    Summary,
    add_config_options,
    add_settings_flags,
    output_folder,
    settings_flags,
)


def _study_args(p: argparse.ArgumentParser) -> None:
    add_config_options(p, "study.rtt_ms=12")
    add_settings_flags(p, "study", skip=("show_progress",))
    for key, text in (
        ("plots", "skip the PNG figures"),
        ("local_baseline", "skip the local inference measurement"),
        ("dynamic_batching", "local server: serve a copy without the dynamic_batching block"),
    ):
        p.add_argument(
            f"--no-{key.replace('_', '-')}",
            dest=f"study.{key}",
            action="store_const",
            const=False,
            help=f"{text} (the same as --{key.replace('_', '-')} false)",
        )


def _study(a: argparse.Namespace) -> Summary | None:
    from argonic.settings import load_settings
    from argonic.study.driver import format_summary, run_study

    flags = settings_flags(a, "study")
    if "study.output" in flags:
        flags["study.output"] = output_folder(flags["study.output"])
    flags["study.show_progress"] = not a.json
    s = run_study(load_settings(a.config, a.set, flags).study)
    if a.json:
        return s
    print(format_summary(s))
    return None


def _farm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=2000, help="client jobs to size for")
    p.add_argument(
        "--paper-clients",
        type=int,
        nargs="+",
        default=[1, 50, 100, 150, 200, 250, 300, 350, 400],
        help="client counts of the paper's curves (4 T4s)",
    )
    p.add_argument("--sites", type=int, default=10, help="sites the clients are spread over")
    p.add_argument(
        "--site-gbps",
        type=float,
        nargs="+",
        default=[0.0, 10.0, 1.0],
        help="per-site uplink caps to compare, Gbit/s (0: no cap)",
    )
    p.add_argument("--threshold-ms", type=float, default=100.0, help="KEDA threshold")
    p.add_argument("--poll-s", type=float, default=15.0, help="KEDA polling interval")
    p.add_argument(
        "--startup-s", type=float, default=60.0, help="from scale-out decision to a serving GPU"
    )
    p.add_argument(
        "--max-gpus",
        type=int,
        default=None,
        help="the autoscaler's maxReplicas (default: twice the GPUs patch mode needs)",
    )
    p.add_argument(
        "--start-fraction",
        type=float,
        default=0.5,
        help="the autoscaling run starts with this fraction of the GPUs patch mode needs",
    )
    p.add_argument(
        "-o", "--output", type=output_folder, default="farm", help="folder for farm.json and PNGs"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")


def _farm(a: argparse.Namespace) -> Summary | None:
    import json

    from argonic._util import json_default
    from argonic.study.farm import Autoscaler
    from argonic.study.farm_report import farm_report, format_report, plot_report

    out = Path(a.output)
    report = farm_report(
        a.clients,
        paper_clients=tuple(a.paper_clients),
        sites=a.sites,
        site_limits=tuple(g or None for g in a.site_gbps),
        autoscaler=Autoscaler(
            a.threshold_ms, poll_s=a.poll_s, startup_s=a.startup_s, max_servers=a.max_gpus
        ),
        start_fraction=a.start_fraction,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "farm.json").write_text(json.dumps(report, indent=1, default=json_default))
    if not a.no_plots:
        report["figures"] = [str(p) for p in plot_report(report, out)]
    if a.json:
        return report
    print(format_report(report))
    return None
