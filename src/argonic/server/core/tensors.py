"""The data plane's own request and response types (numpy, not protobuf)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SharedMemoryRef:
    """Where a tensor lies in a registered system shared memory region (see shm.py)."""

    region: str
    byte_size: int
    offset: int = 0


@dataclass
class InputTensor:
    """One input as the client sent it: raw little-endian bytes or a list of typed values."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | memoryview | None = None
    values: Sequence | None = None
    shm: SharedMemoryRef | None = None  # the data lies in shared memory (read by the data plane)


@dataclass
class InferRequest:
    """One inference request: tensors plus the protocol parameters the batcher honours."""

    model_name: str
    inputs: list[InputTensor]
    model_version: str = ""
    id: str = ""
    outputs: list[str] = field(default_factory=list)  # empty: all outputs
    priority: int = 0
    timeout_us: int = 0
    output_regions: dict[str, SharedMemoryRef] = field(default_factory=dict)


@dataclass
class OutputTensor:
    """One output tensor."""

    name: str
    datatype: str
    data: np.ndarray
    shm: SharedMemoryRef | None = None  # written to shared memory: not sent in the response


@dataclass(frozen=True)
class Timestamps:
    """When one request met Triton's trace points (epoch ns, for tracing): received by the
    model, queued, computed (input, infer, output: the summed durations of its executions
    laid end to end from the end of its queueing), answered."""

    request_start: int
    queue_start: int
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    request_end: int

    @property
    def compute_start(self) -> int:
        return self.queue_start + self.queue_ns

    @property
    def compute_end(self) -> int:
        return min(
            self.request_end, self.compute_start + self.input_ns + self.infer_ns + self.output_ns
        )

    def compute_events(self) -> list[tuple[str, int]]:
        """Triton's compute span events."""
        t = self.compute_start
        return [
            ("COMPUTE_START", t),
            ("COMPUTE_INPUT_END", t + self.input_ns),
            ("COMPUTE_OUTPUT_START", t + self.input_ns + self.infer_ns),
            ("COMPUTE_END", self.compute_end),
        ]


@dataclass
class InferResponse:
    """The answer to one InferRequest."""

    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    timestamps: Timestamps | None = None
