"""The typed run configuration: precedence of its sources, one-line refusals, generated docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from argonic.settings import SettingsError, load_settings, settings_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_defaults_are_local_onnxruntime_and_the_triton_port() -> None:
    s = load_settings()
    assert s.inference.interface == "local" and s.inference.local.backend == "onnxruntime"
    assert s.inference.remote.servers == ["localhost:8001"]  # Triton's default gRPC port


def test_each_source_overrides_the_one_before(tmp_path, monkeypatch) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[inference]\nbatch_size = 12\ninterface = "remote"\n'
        '[inference.remote]\nservers = ["file:1"]\nmode = "async"\nretries = 5\n'
    )
    assert load_settings(toml).inference.batch_size == 12
    monkeypatch.setenv("ARGONIC_INFERENCE__BATCH_SIZE", "77")
    monkeypatch.setenv("ARGONIC_INFERENCE__REMOTE__SERVERS", "env:1,env:2")
    s = load_settings(toml)
    assert s.inference.batch_size == 77 and s.inference.remote.servers == ["env:1", "env:2"]
    assert s.inference.remote.mode == "async" and s.inference.remote.retries == 5  # file kept
    s = load_settings(toml, ["inference.batch_size=5"], {"inference.remote.servers": ["flag:1"]})
    assert s.inference.batch_size == 5 and s.inference.remote.servers == ["flag:1"]
    assert load_settings(toml, flags={"inference.batch_size": None}).inference.batch_size == 77


@pytest.mark.parametrize(
    "override, message",
    [
        ("foo.bar=1", "unknown key 'foo'"),
        ("inference.remote.foo=1", "unknown key 'inference.remote.foo'"),
        ("inference.local.threads=two", "inference.local.threads: Input should be a valid integer"),
        (
            "inference.batch_size=0",
            "inference.batch_size: Input should be greater than or equal to 1",
        ),
        ("inference.remote.servers=nohost", "'nohost' is not \"host:port\""),
        ("inference.interface=gpu", "inference.interface: Input should be 'local' or 'remote'"),
        ("inference", "not of the form section.key=value"),
    ],
)
def test_bad_keys_and_values_are_one_line_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(overrides=[override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_environment_variable_is_named(monkeypatch) -> None:
    monkeypatch.setenv("ARGONIC_INFERENCE__BATCH_SIZE", "many")
    with pytest.raises(SettingsError, match="inference.batch_size"):
        load_settings()


def test_cli_refuses_a_mistyped_key_with_exit_2(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "argonic.cli", "reco", "ev.h5", "--set", "inference.remote.foo=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "argonic reco: error: unknown key 'inference.remote.foo'"
    ], r.stderr


def test_configuration_docs_are_generated_from_the_model() -> None:
    assert DOCS.read_text() == settings_markdown(), (
        "docs/configuration.md is stale: python -m argonic.settings > docs/configuration.md"
    )
