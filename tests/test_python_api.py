"""docs/python-api.md runs as written: its python blocks, in order, in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parents[1] / "docs" / "python-api.md"


def test_python_api_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ARGONIC_PROGRESS": "0"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "remote and local scores agree" in r.stdout
    for name in ("ev.h5", "reco.h5", "reco_remote.h5", "roc.png", "predicted.png"):
        assert (tmp_path / name).is_file(), name
