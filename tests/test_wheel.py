"""The wheel carries the model repository: built from this tree, installed into a fresh
environment (no editable install, no source checkout on the path), it finds its model."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_carries_the_model_and_an_installed_copy_finds_it(tmp_path):
    pip = [sys.executable, "-m", "pip"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        env=env,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("argonic-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(
        n for n in names if n.endswith(".data/data/share/argonic/models/emtrkmichelid/1/model.onnx")
    )
    for f in ("config.pbtxt", "1/model.onnx.sha256"):
        assert data.replace("1/model.onnx", f) in names
    # every model of the source repository (the twins too) travels
    prefix = data.removesuffix("emtrkmichelid/1/model.onnx")
    shipped = {
        str(p.relative_to(ROOT / "models"))
        for p in (ROOT / "models").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {n.removeprefix(prefix) for n in names if n.startswith(prefix)} == shipped
    assert "argonic/reco/michel_context.npz" in names  # the MichelContext stage's weights
    assert "argonic/detector/field_response.npz" in names  # read at start-up, not solved

    # a fresh environment: the wheel installed into it, the dependencies borrowed from ours
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        # --ignore-installed: without it pip uninstalls the running environment's argonic
        [
            *pip,
            "install",
            "-q",
            "--no-deps",
            "--ignore-installed",
            "--prefix",
            str(venv),
            str(wheel),
        ],
        check=True,
        env=env,
        timeout=600,
    )
    check = (
        "import argonic, sys; from argonic.repository import shipped_repository, verify_checksum, onnx_path;"
        "print(argonic.__file__); print(shipped_repository()); verify_checksum(onnx_path())"
    )
    out = subprocess.run(
        [python, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    package, repository = out.stdout.split()
    assert Path(package).is_relative_to(venv) and Path(repository) == venv / "share/argonic/models"

    run = [python, "-m", "argonic.cli"]
    for args in (
        ["simulate", "--detector", "mini", "-o", "ev.h5", "--json"],
        ["reco", "ev.h5", "--interface", "local", "-o", "reco.h5", "--json"],
    ):
        r = subprocess.run([*run, *args], env=env, cwd=tmp_path, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr
