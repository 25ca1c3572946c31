"""The command-line vocabulary, in-process: choices match the library, defaults in --help,
deprecated aliases, logging options."""

from __future__ import annotations

import logging
import typing

import pytest

from argonic import cli
from argonic.cli import options as cli_options
from argonic.detector.geometry import DETECTORS
from argonic.inference import INTERFACES
from argonic.settings import InferenceSettings


def test_choices_are_the_librarys_names():
    assert set(cli_options.DETECTORS) == set(DETECTORS)
    assert set(cli_options.INTERFACES) == set(INTERFACES)
    field = InferenceSettings.model_fields["interface"].annotation
    assert set(typing.get_args(field)) == set(cli_options.INTERFACES)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_shows_defaults_and_choices(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per option
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--log-level {debug,info,warning,error,critical}" in out
    if command in ("simulate", "run", "study"):
        assert "--detector {protodune-sp,mini}" in out
    if command in ("simulate", "run"):
        assert "(default: protodune-sp)" in out
    if command == "show":
        assert "--plane {U,V,W}" in out and "(default: W)" in out
    if command == "reco":
        assert "--interface {local,remote}" in out
        assert "(default: reco.h5)" in out


@pytest.mark.parametrize(
    "argv, dest, value, note",
    [
        (["reco", "ev.h5", "--mode", "plane"], "request_mode", "plane", "--mode"),
        (["reco", "ev.h5", "--request-mode", "plane"], "request_mode", "plane", None),
        (["study", "--servers", "3"], "study.servers", 3, "--servers"),
        (["study", "--server-count", "3"], "study.servers", 3, None),
        (["train", "ev.h5", "--repository", "r"], "repository", "r", "--repository"),
        (["train", "ev.h5", "--model-repository", "r"], "repository", "r", None),
    ],
)
def test_one_vocabulary_with_deprecated_aliases(argv, dest, value, note):
    a = cli.build_parser().parse_args(argv)
    assert getattr(a, dest) == value
    notes = getattr(a, "deprecations", None) or []
    new = {"--mode": "--request-mode", "--servers": "--server-count"}.get(
        note, "--model-repository"
    )
    assert notes == ([f"{note} is deprecated: use {new}"] if note else [])


def test_request_mode_flag_sets_the_request_mode_key():
    a = cli.build_parser().parse_args(["reco", "ev.h5", "--request-mode", "plane"])
    assert cli.reco_settings(a).inference.remote.request_mode == "plane"
    assert cli.reco_settings(a).inference.remote.mode == "sync"


@pytest.mark.parametrize(
    "argv, level",
    [
        (["reco", "ev.h5"], logging.WARNING),
        (["-v", "reco", "ev.h5"], logging.INFO),
        (["reco", "ev.h5", "-vv"], logging.DEBUG),
        (["reco", "ev.h5", "-q"], logging.ERROR),
        (["-q", "reco", "ev.h5", "--log-level", "debug"], logging.DEBUG),
        (["serve"], logging.INFO),
    ],
)
def test_log_level_options_on_main_parser_and_subcommand(argv, level):
    a = cli.build_parser().parse_args(argv)
    default = logging.INFO if a.command == "serve" else logging.WARNING
    assert cli_options.log_level(a, default) == level


def test_log_lines_name_the_command_and_serve_has_timestamps():
    record = logging.LogRecord("argonic.x", logging.WARNING, "f", 1, "server %s slow", ("a",), None)
    formatter = cli_options._CommandFormatter("reco", timestamps=False)
    assert formatter.format(record) == "argonic reco: warning: server a slow"
    stamped = cli_options._CommandFormatter("serve", timestamps=True).format(record)
    assert stamped.endswith("argonic serve: warning: server a slow") and stamped[:4].isdigit()
