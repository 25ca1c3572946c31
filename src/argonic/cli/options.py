"""The command line's shared vocabulary: option types, choices, deprecated aliases, logging
options and a help formatter that shows defaults.

Kept apart from :mod:`argonic.cli` (which only wires commands to library functions) and
free of heavy imports, so ``argonic CMD --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The names the library accepts (tests/test_cli.py checks them against the library).
Summary = dict[str, Any]

DETECTORS = ("protodune-sp", "mini")
INTERFACES = ("local", "remote")
PLANES = ("U", "V", "W")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

log = logging.getLogger("argonic.cli")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default, unless it has none worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or "(default" in text
            or action.default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated whole numbers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return values


def output_file(text: str) -> str:
    """argparse type: a file we can create (its folder exists and is writable)."""
    folder = Path(text).parent
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{str(folder)!r} is not a folder (for {text!r})")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} does not exist (for {text!r})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} is not writable (for {text!r})")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file name")
    return text


def output_folder(text: str) -> str:
    """argparse type: a folder we can write into or create (its parent exists)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a folder")
    target = path if path.is_dir() else path.parent
    if not target.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(target)!r} does not exist (for {text!r})")
    if not os.access(target, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {str(target)!r} is not writable")
    return text


class AliasedStore(argparse.Action):
    """``store`` that notes use of a deprecated option string (logged once logging is set up)."""

    def __init__(self, *args: Any, deprecated: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deprecated = tuple(deprecated)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string in self.deprecated:
            new = next(s for s in self.option_strings if s not in self.deprecated)
            notes = list(getattr(namespace, "deprecations", None) or [])
            notes.append(f"{option_string} is deprecated: use {new}")
            namespace.deprecations = notes
        setattr(namespace, self.dest, values)


def add_aliased(
    p: argparse.ArgumentParser, name: str, *deprecated: str, **kwargs: Any
) -> argparse.Action:
    """Add option ``name`` with ``deprecated`` old spellings that still work but warn."""
    kwargs["help"] = (kwargs.get("help") or "") + f" [old name: {', '.join(deprecated)}]"
    return p.add_argument(name, *deprecated, action=AliasedStore, deprecated=deprecated, **kwargs)


def add_logging_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """-v/-q/--log-level; on subcommands (``defaults`` False) they only override the main's."""
    missing: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("logging")
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more log output (-v: info, -vv: debug)",
        **(missing or {"default": 0}),
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="errors only",
        **(missing or {"default": False}),
    )
    g.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        help="log level (overrides -v/-q; default: warning, info for serve)",
        **(missing or {"default": None}),
    )


def log_level(a: argparse.Namespace, default: int) -> int:
    """The level that -v/-q/--log-level ask for."""
    if a.log_level:
        return getattr(logging, a.log_level.upper())
    if a.quiet:
        return logging.ERROR
    if a.verbose:
        return logging.DEBUG if a.verbose > 1 else min(default, logging.INFO)
    return default


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (so log lines print above a live progress bar)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _CommandFormatter(logging.Formatter):
    """``argonic CMD: warning: message`` (the shape of the CLI's one-line errors)."""

    def __init__(self, command: str, timestamps: bool) -> None:
        stamp = "%(asctime)s " if timestamps else ""
        super().__init__(f"{stamp}argonic {command}: %(levelname)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        if record.levelno <= logging.DEBUG:
            record.msg = f"[{record.name}] {record.msg}"
        return super().format(record)


def setup_logging(command: str, level: int, timestamps: bool = False) -> None:
    """One stderr handler on the root logger for the whole process (replaces earlier ones)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_CommandFormatter(command, timestamps))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


# --- settings as flags ------------------------------------------------------------------------


def add_config_options(p: argparse.ArgumentParser, example: str) -> None:
    """``--config FILE`` and ``--set KEY=VALUE``: the settings file and its overrides."""
    p.add_argument(
        "--config", default=None, help="TOML configuration file (see docs/configuration.md)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a configuration key, e.g. {example} (repeatable)",
    )


def bool_value(text: str | bool) -> bool:
    """argparse type, Triton's boolean flag values: true/false, 1/0, yes/no, on/off."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_settings_flags(
    p: argparse.ArgumentParser | Any, table: str, skip: Sequence[str] = ()
) -> None:
    """One flag per key of a settings table (``argonic.settings``): ``--`` and the key with
    dashes, or the flag the key names (``json_schema_extra``: ``flag``, short ``aliases``,
    ``deprecated`` old spellings); its value lands in ``TABLE.KEY`` (None: not given,
    the configuration's value stands). Help and defaults come from the settings model."""
    from argonic.settings import Settings
    from argonic.settings.docs import default_text

    model = Settings.model_fields[table].annotation
    for name, info in model.model_fields.items():  # type: ignore[union-attr]
        if name in skip:
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = str(extra.get("flag", "--" + name.replace("_", "-")))
        kwargs: dict[str, Any] = {"dest": f"{table}.{name}", "default": None}
        kwargs["help"] = f"{info.description} (default: {default_text(info).strip('`')})"
        kwargs.update(_value_kwargs(info.annotation, name))
        if extra.get("deprecated"):
            add_aliased(p, flag, *extra["deprecated"], **kwargs)
        else:
            p.add_argument(*extra.get("aliases", []), flag, **kwargs)


def _value_kwargs(kind: Any, name: str) -> dict[str, Any]:
    """argparse's type / choices / nargs for a settings key's annotation."""
    import types
    import typing

    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = args[0]  # X | None
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    origin = typing.get_origin(kind)
    if kind is bool:
        return {"type": bool_value, "nargs": "?", "const": True, "metavar": "BOOL"}
    if origin is typing.Literal:
        return {"choices": typing.get_args(kind)}
    if origin is list:
        item = typing.get_args(kind)[0]
        if typing.get_origin(item) is typing.Annotated:
            item = typing.get_args(item)[0]
        if item is int:
            return {"type": int_list}
        return {"action": "append", "metavar": name.upper().removesuffix("S")}
    return {"type": kind}


def settings_flags(a: argparse.Namespace, table: str) -> dict[str, Any]:
    """The ``TABLE.KEY`` values of ``add_settings_flags`` given on the command line."""
    return {k: v for k, v in vars(a).items() if k.startswith(f"{table}.") and v is not None}
