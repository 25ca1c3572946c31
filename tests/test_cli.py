"""The command line as a user meets it: real processes, exit codes, one-line errors, no partial files."""

import json
import os
import re
import subprocess
import sys

import pytest


def argonic(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "argonic.cli", *args],
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    r = argonic(
        "simulate",
        "--detector",
        "mini",
        "--events",
        "2",
        "--seed",
        "3",
        "-o",
        "ev.h5",
        "--json",
        cwd=d,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["events"] == 2 and len(summary["hits_per_event"]) == 2
    return d


def test_same_seed_same_file_contents(workdir):
    r = argonic(
        "simulate",
        "--detector",
        "mini",
        "--events",
        "2",
        "--seed",
        "3",
        "-o",
        "again.h5",
        cwd=workdir,
    )
    assert r.returncode == 0, r.stderr
    import h5py
    import numpy as np

    with h5py.File(workdir / "ev.h5") as a, h5py.File(workdir / "again.h5") as b:
        for key in ("frames/index", "frames/value", "hits/wire", "hits/peak_tick", "hits/label"):
            np.testing.assert_array_equal(
                a[f"events/000001/{key}"][:], b[f"events/000001/{key}"][:]
            )


def test_show_writes_a_png(workdir):
    r = argonic(
        "show", "ev.h5", "--event", "1", "--plane", "U", "-o", "d.png", "--json", cwd=workdir
    )
    assert r.returncode == 0, r.stderr
    assert (workdir / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(r.stdout)["plane"] == "U"


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--detector", "dune-fd", "-o", "x.h5"], "invalid choice: 'dune-fd'"),
        (["simulate", "-o", "nowhere/x.h5"], "folder 'nowhere' does not exist"),
        (["reco", "ev.h5", "-o", "nowhere/x.h5"], "folder 'nowhere' does not exist"),
        (["show", "ev.h5", "-o", "nowhere/x.png"], "folder 'nowhere' does not exist"),
        (["show", "ev.h5", "-o", "ev.h5/x.png"], "'ev.h5' is not a folder"),
        (["simulate", "--events", "-3", "-o", "x.h5"], "expected a number >= 0"),
        (["simulate", "--events", "0", "-o", "x.h5"], "expected a number >= 1"),
        (["show", "missing.h5", "-o", "x.png"], "no such file"),
        (["show", "ev.h5", "--event", "9", "-o", "x.png"], "event index 9 out of range"),
        (["show", "ev.h5", "--plane", "X", "-o", "x.png"], "argument --plane: invalid choice: 'X'"),
        (["reco", "junk.h5", "-o", "x.h5"], "not a readable HDF5 file"),
        (
            ["reco", "ev.h5", "-o", "x.h5", "--interface", "quantum"],
            "argument --interface: invalid choice: 'quantum'",
        ),
        (["reco", "ev.h5", "-o", "x.h5", "--config", "nope.toml"], "no such configuration file"),
        (
            ["reco", "ev.h5", "-o", "x.h5", "--set", "inference.remote.mode=fast"],
            "inference.remote.mode: Input should be 'sync' or 'async'",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(workdir, args, message):
    (workdir / "junk.h5").write_bytes(b"\x00" * 64)
    r = argonic(*args, cwd=workdir)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (workdir / "x.h5").exists() and not (workdir / "x.png").exists()
    assert not list(workdir.glob(".*partial*"))


def test_deprecated_flag_warns_through_logging_and_quiet_silences_it(workdir):
    r = argonic("reco", "ev.h5", "-o", "r.h5", "--mode", "patch", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "argonic reco: warning: --mode is deprecated: use --request-mode"
    ]
    r = argonic("-q", "reco", "ev.h5", "-o", "r.h5", "--mode", "patch", "--json", cwd=workdir)
    assert r.returncode == 0 and r.stderr == ""


def test_progress_counts_patches_inside_events_and_never_with_json(workdir):
    forced = {"ARGONIC_PROGRESS": "1", "COLUMNS": "200", "NO_COLOR": "1"}  # as on a terminal
    r = argonic("reco", "ev.h5", "-o", "p.h5", cwd=workdir, env=forced)
    assert r.returncode == 0, r.stderr
    assert re.search(r"2/2\s+events", r.stderr) and re.search(r"(\d+)/\1\s+hits", r.stderr)
    r = argonic("reco", "ev.h5", "-o", "p.h5", "--json", cwd=workdir, env=forced)
    assert r.returncode == 0 and r.stderr == ""
    r = argonic("reco", "ev.h5", "-o", "p.h5", cwd=workdir)  # not a terminal
    assert r.returncode == 0 and r.stderr == ""


def test_show_draws_predictions_beside_the_truth(workdir):
    import matplotlib.image

    r = argonic("reco", "ev.h5", "-o", "shown.h5", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    r = argonic("show", "shown.h5", "--event", "1", "-o", "pred.png", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["reco"] == "shown.h5" and summary["hits"] > 0
    assert 0.5 < summary["same_class_as_truth"] <= 1.0  # the shipped model on its own physics
    for args in (["ev.h5", "--reco", "shown.h5", "-o", "both.png"], ["ev.h5", "-o", "truth.png"]):
        r = argonic("show", *args, "--event", "1", cwd=workdir)
        assert r.returncode == 0, r.stderr
    both = matplotlib.image.imread(workdir / "both.png")
    truth = matplotlib.image.imread(workdir / "truth.png")
    assert both.shape[1] > 2 * truth.shape[1]  # three panels side by side

    (workdir / "elsewhere").mkdir()
    (workdir / "shown.h5").rename(workdir / "elsewhere" / "moved.h5")
    r = argonic("show", "moved.h5", "-o", "x.png", cwd=workdir / "elsewhere")
    assert r.returncode == 2 and "--reco" in r.stderr and len(r.stderr.splitlines()) == 1


def test_health_builds_no_settings_flags():
    """`argonic health` (the container's HEALTHCHECK, every few seconds) parses only its own
    options: the flags generated from the settings models (pydantic) are not imported."""
    code = (
        "import contextlib, sys; from argonic.cli import main\n"
        "with contextlib.suppress(SystemExit): main(['health', '127.0.0.1:1', '--timeout', '0.1'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('argonic.settings', 'pydantic'))))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr
    # and a serve command still gets every [server] key as a flag
    from argonic.cli import build_parser

    args = build_parser("serve").parse_args(["serve", "--saturation-threshold-ms", "5"])
    assert getattr(args, "server.saturation_threshold_ms") == 5.0
