"""`argonic study`: the scaling study (its flags map onto the ``[study]`` settings keys)."""

from __future__ import annotations

import argparse

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
