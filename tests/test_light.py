"""The light install: the client, the server and the reco chain import without torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import sys
from argonic.cli import build_parser, reco_settings
import argonic.inference.remote, argonic.inference.local, argonic.server
import argonic.reco.executors, argonic.reco.display, argonic.reco.evaluate, argonic.pipeline
a = build_parser().parse_args(["reco", "ev.h5", "--interface", "remote", "--server", "h:1"])
reco_settings(a)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
"""


def test_client_server_and_reco_import_without_torch():
    subprocess.run([sys.executable, "-c", CHECK], check=True, env=os.environ.copy(), timeout=120)


def test_torch_backend_names_the_missing_extra(monkeypatch):
    """Without torch the local torch backend says, in one line, which extra brings it."""
    from argonic.inference import InterfaceError
    from argonic.inference.local import TorchInterface

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(InterfaceError, match=r"argonic\[train\]"):
        TorchInterface()
