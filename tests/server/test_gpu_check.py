"""benchmarks/gpu_check.sh --cpu-smoke: the GPU check's whole flow (TorchScript repository
from the shipped network, argonic serve, patch and plane mode, client processes, JSON) on
the CPU, so the script is known to run before a GPU machine is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_end_to_end(tmp_path: Path) -> None:
    import torch  # noqa: F401 - the test extra has it: a broken install fails here

    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [
            "bash",
            "benchmarks/gpu_check.sh",
            "--cpu-smoke",
            "--seconds",
            "0.2",
            "--batch-sizes",
            "9",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["cpu_smoke"] and summary["clients"] == 2
    measured = {(r["model"], r["mode"], r["batch"]) for r in summary["rows"]}
    assert measured == {
        (m, mode, 9)
        for m, mode in [
            ("emtrk_fp32", "patch"),
            ("plane_fp32", "plane"),
            ("emtrk_fp16", "patch"),
            ("plane_fp16", "plane"),
        ]
    }
    assert all(r["inferences_per_s"] > 0 and r["requests"] >= 2 for r in summary["rows"])
    agreement = summary["agreement_vs_emtrk_fp32_patch"]
    assert agreement["plane_fp32"]["max_abs_diff"] <= 1e-5  # same patches, same network
    assert 0 < agreement["plane_fp16"]["max_abs_diff"] < 0.05
    assert "plane_fp16" in run.stdout and "inf/s" in run.stdout
