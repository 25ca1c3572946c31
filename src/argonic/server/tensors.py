"""The data plane's own request and response types (numpy, not protobuf)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class InputTensor:
    """One input as the client sent it: raw little-endian bytes or a list of typed values."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | memoryview | None = None
    values: Sequence | None = None


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


@dataclass
class OutputTensor:
    """One output tensor."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass
class InferResponse:
    """The answer to one InferRequest."""

    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
