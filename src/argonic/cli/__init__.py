"""`argonic <command>`: a thin layer; each command parses its options and calls one library function.

One module per group of commands (events, reco, serving, train, study), the shared option
vocabulary in ``options``; this module holds the command table, the parser and ``main``.

Errors a user can cause (bad files, names, indices, counts) end with one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from argonic import ArgonicError, __version__
from argonic._util import dump_json
from argonic.cli.options import (
    HelpFormatter,
    Summary,
    add_logging_options,
    log,
    log_level,
    setup_logging,
)
from argonic.cli.reco import (
    _evaluate,
    _evaluate_args,
    _reco,
    _reco_args,
    _run,
    _run_args,
    reco_settings,
)
from argonic.cli.serving import (
    _cluster,
    _cluster_args,
    _health,
    _health_args,
    _serve,
    _serve_args,
)
from argonic.cli.simulate import _show, _show_args, _simulate, _simulate_args
from argonic.cli.study import _farm, _farm_args, _study, _study_args
from argonic.cli.train import (
    _quantize,
    _quantize_args,
    _train,
    _train_args,
    _train_context,
    _train_context_args,
)

__all__ = ["COMMANDS", "build_parser", "main", "reco_settings"]


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
    "train-context": (
        "train the MichelContext stage (each hit's scores refined by its neighbours') on the "
        "shipped network's scores of simulated events",
        _train_context_args,
        _train_context,
    ),
    "quantize": (
        "write the int8 twin (calibrated on simulated patches) and the bf16 twin of the network, "
        "with their plane-mode twins, into the model repository",
        _quantize_args,
        _quantize,
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
    "farm": (
        "the farm model (discrete-event): the paper's saturation points, and the GPUs, per-site "
        "bandwidth and autoscaling time a farm of N clients needs",
        _farm_args,
        _farm,
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`argonic CMD: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the options of that command alone (the others
    keep their names and help): `argonic health`, the container's HEALTHCHECK, then never
    builds the flags generated from the settings models (pydantic, ~0.15 s)."""
    parser = _Parser(prog="argonic", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"argonic {__version__}")
    add_logging_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        if only is not None and name != only:
            continue
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
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), "")  # "": `argonic --help`
    args = build_parser(command).parse_args(argv)
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
