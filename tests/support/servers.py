"""Test helpers for the inference server: config templates, repositories built on the fly
with the models of support.models, and a backend the tests can hold (GateBackend)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from argonic.server import register_backend

CNN_LIKE_CONFIG = """
name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch_size}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ 1 ] }}
]
{extra}
"""

IDENTITY_CONFIG = """
name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch_size}
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [ {{ name: "output" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
{extra}
"""


def add_model(
    repo: Path,
    name: str,
    template: str,
    *,
    platform: str = "onnxruntime_onnx",
    max_batch_size: int = 4096,
    extra: str = "",
    versions: dict[int, callable] | None = None,
) -> Path:
    """Create ``repo/name`` with a config and one writer(path) per version directory."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(
        template.format(name=name, platform=platform, max_batch_size=max_batch_size, extra=extra)
    )
    for version, write in (versions or {}).items():
        write(model_dir / str(version))
    return model_dir


# --- a backend the tests can hold: every execution waits until its gate opens -------------

GATES: dict[str, threading.Event] = {}
EXECUTIONS: dict[str, list[list[float]]] = {}  # per gate: each execution's first pixel per row


class GateBackend:
    """Identity backend that blocks each execution until ``GATES[gate]`` is set.

    Each execution is recorded (first pixel of every row) so tests can see batching and order.
    """

    def __init__(self, config, model_file: Path, instance) -> None:
        self.gate = config.parameters["gate"].string_value
        GATES.setdefault(self.gate, threading.Event())
        EXECUTIONS.setdefault(self.gate, [])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        EXECUTIONS[self.gate].append(inputs["main_input"][:, 0, 0, 0].tolist())
        if not GATES[self.gate].wait(30):
            raise RuntimeError("test gate never opened")
        return {"output": np.array(inputs["main_input"])}

    def close(self) -> None:
        pass


register_backend("argonic_test_gate", GateBackend)


def marked(n: int, marker: float) -> np.ndarray:
    """``n`` patches whose first pixel is ``marker`` (to recognise a request's rows in a batch)."""
    x = np.random.default_rng(int(marker * 1000) % 2**32).random((n, 48, 48, 1), dtype=np.float32)
    x[:, 0, 0, 0] = marker
    return x


def gate_model(repo: Path, name: str, extra: str = "", max_batch_size: int = 64) -> None:
    """An identity model on the gate backend; its gate is named after the model."""
    GATES[name] = threading.Event()
    EXECUTIONS[name] = []
    add_model(
        repo,
        name,
        IDENTITY_CONFIG,
        platform="argonic_test_gate",
        max_batch_size=max_batch_size,
        extra=extra + f'\nparameters {{ key: "gate" value {{ string_value: "{name}" }} }}',
        versions={
            1: lambda d: (d.mkdir(parents=True, exist_ok=True), (d / "model").write_bytes(b"gate"))
        },
    )
