"""`argonic <command>`: a thin layer; each command parses its options and calls one library function.

Errors a user can cause (bad files, names, indices, counts) end with one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from argonic import ArgonicError, __version__
from argonic._util import dump_json

Summary = dict[str, Any]


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


# --- simulate -----------------------------------------------------------------------------

def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", default="protodune-sp", help="detector name (protodune-sp, mini)")
    p.add_argument("--events", type=_positive_int, default=1, help="number of events")
    p.add_argument("--seed", type=_non_negative_int, default=1, help="random seed")
    p.add_argument("--run", type=_non_negative_int, default=1, help="run number stored in the file")
    p.add_argument("-o", "--output", default="events.h5", help="output HDF5 event file")


def _simulate(a: argparse.Namespace) -> Summary:
    from argonic.detector.simulate import simulate_file

    return simulate_file(a.output, detector=a.detector, n_events=a.events, seed=a.seed,
                         run=a.run, show_progress=not a.json)


# --- show ---------------------------------------------------------------------------------

def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("events_file", help="HDF5 event file from `argonic simulate`")
    p.add_argument("--event", type=_non_negative_int, default=0, help="event index in the file")
    p.add_argument("--plane", default="W", help="plane to draw (U, V, W)")
    p.add_argument("--tpc", type=int, default=None, help="TPC to draw (default: the busiest)")
    p.add_argument("--hits", action=argparse.BooleanOptionalAction, default=True,
                   help="overlay hits coloured by truth label")
    p.add_argument("-o", "--output", default="display.png", help="output PNG")


def _show(a: argparse.Namespace) -> Summary:
    from argonic.reco.display import draw_event

    return draw_event(a.events_file, a.output, event=a.event, plane=a.plane, tpc=a.tpc,
                      show_hits=a.hits)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], Summary]]] = {
    "simulate": ("simulate ProtoDUNE-SP-like events, find hits, write an HDF5 event file",
                 _simulate_args, _simulate),
    "show": ("draw one plane of one event (wire vs tick) with its hits", _show_args, _show),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argonic", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"argonic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        add_args(p)
    return parser


def _print_summary(summary: Summary) -> None:
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, _, run = COMMANDS[args.command]
    try:
        summary = run(args)
    except ArgonicError as exc:
        print(f"argonic {args.command}: error: {exc}", file=sys.stderr)
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
