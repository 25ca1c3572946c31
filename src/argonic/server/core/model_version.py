"""One loaded model version: validates requests against its config and feeds the batcher."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from argonic.repository.model_config import (
    datatype_name,
    int_parameter,
    numpy_dtype,
    parameter,
    platform_of,
)
from argonic.server.core.batcher import BatchPolicy, DynamicBatcher, QueuePolicy
from argonic.server.core.stats import ModelStats
from argonic.server.core.tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    OutputTensor,
    Timestamps,
)
from argonic.server.errors import InvalidArgument, ServerError


def batch_policy(
    config: mc.ModelConfig, on_gpu: bool, execution_batch_size: int | None = None
) -> BatchPolicy:
    """The batcher settings a config asks for (see config.py for execution_batch_size);
    ``execution_batch_size`` is the calibrated size when the config says "auto"."""
    batched = config.max_batch_size > 0
    default_exec = config.max_batch_size if on_gpu else min(256, config.max_batch_size)
    if not batched:
        exec_size = 1
    elif execution_batch_size is not None:
        exec_size = execution_batch_size
    elif parameter(config, "execution_batch_size") == "auto":
        exec_size = default_exec
    else:
        exec_size = int_parameter(config, "execution_batch_size", default_exec)
    if batched and not exec_size >= 1:
        raise InvalidArgument(f"model '{config.name}': execution_batch_size must be >= 1")
    exec_size = min(exec_size, config.max_batch_size) if batched else 1
    if not config.HasField("dynamic_batching"):
        return BatchPolicy(exec_size, batched=batched)
    db = config.dynamic_batching
    levels = max(1, db.priority_levels)
    default_level = db.default_priority_level or (levels + 1) // 2 if db.priority_levels else 1
    if not 1 <= default_level <= levels:
        raise InvalidArgument(
            f"model '{config.name}': default_priority_level {default_level} is outside 1..{levels}"
        )
    policies = []
    for level in range(1, levels + 1):
        qp = db.priority_queue_policy.get(level, db.default_queue_policy)
        policies.append(
            QueuePolicy(
                qp.max_queue_size,
                qp.default_timeout_microseconds,
                qp.allow_timeout_override,
                qp.timeout_action == mc.ModelQueuePolicy.DELAY,
            )
        )
    return BatchPolicy(
        exec_size,
        batched=batched,
        dynamic=batched,
        preferred_batch_sizes=tuple(p for p in db.preferred_batch_size if p <= exec_size),
        max_queue_delay_us=db.max_queue_delay_microseconds,
        priority_levels=levels,
        default_priority_level=default_level,
        queue_policies=tuple(policies),
    )


def _fp16_spec(spec: mc.ModelInput) -> mc.ModelInput:
    """The same input declared FP16 (the FP16 transport of an FP32 input, see argonic.transport)."""
    half = mc.ModelInput()
    half.CopyFrom(spec)
    half.data_type = mc.TYPE_FP16
    return half


@dataclass
class ModelVersion:
    """A model version ready to serve: config, checksum, statistics and its batcher."""

    config: mc.ModelConfig
    version: int
    sha256: str
    stats: ModelStats
    batcher: DynamicBatcher

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def platform(self) -> str:
        return platform_of(self.config)

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, queue, wait for the result; count success or failure."""
        start = time.monotonic_ns()
        received = time.time_ns()
        try:
            inputs, rows = self.validate(request)
            queued = time.time_ns()
            outputs, timing = await self.batcher.submit(
                inputs, rows, request.priority, request.timeout_us
            )
        except (ServerError, asyncio.CancelledError):
            self.stats.record_failure(time.monotonic_ns() - start)
            raise
        self.stats.record_success(rows, time.monotonic_ns() - start, timing)
        wanted = request.outputs or [o.name for o in self.config.output]
        types = {o.name: datatype_name(o.data_type) for o in self.config.output}
        t = timing
        return InferResponse(
            self.name,
            str(self.version),
            request.id,
            [OutputTensor(n, types[n], outputs[n]) for n in wanted],
            Timestamps(
                received, queued, t.queue_ns, t.input_ns, t.infer_ns, t.output_ns, time.time_ns()
            ),
        )

    def validate(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """Check names, dtypes, shapes and byte sizes; return numpy inputs and the batch size."""
        config, name = self.config, self.name
        expected = {t.name: t for t in config.input}
        given = [t.name for t in request.inputs]
        if len(set(given)) != len(given):
            raise InvalidArgument(f"duplicate input names in request for model '{name}': {given}")
        missing = [n for n, t in expected.items() if n not in given and not t.optional]
        unknown = [n for n in given if n not in expected]
        if unknown:
            raise InvalidArgument(f"unexpected inference input '{unknown[0]}' for model '{name}'")
        if missing:
            raise InvalidArgument(
                f"expected {len(expected)} inputs but got {len(given)} inputs for "
                f"model '{name}'. Got input(s) {given}, but missing required "
                f"input(s) {missing}. Please provide all required input(s)."
            )
        outputs = {o.name for o in config.output}
        for out in request.outputs:
            if out not in outputs:
                raise InvalidArgument(f"unexpected inference output '{out}' for model '{name}'")
        arrays = {t.name: self._to_array(t, expected[t.name]) for t in request.inputs}
        if config.max_batch_size == 0:
            return arrays, 1
        batches = {a.shape[0] for a in arrays.values()}
        if len(batches) != 1:
            raise InvalidArgument(
                f"inputs for model '{name}' have different batch sizes {sorted(batches)}"
            )
        rows = batches.pop()
        if rows < 1:
            raise InvalidArgument(f"inference request batch-size must be >= 1 for '{name}'")
        if rows > config.max_batch_size:
            raise InvalidArgument(
                f"inference request batch-size must be <= {config.max_batch_size} for '{name}'"
            )
        return arrays, rows

    def _to_array(self, tensor: InputTensor, spec: mc.ModelInput) -> np.ndarray:
        name = self.name
        want_type = datatype_name(spec.data_type)
        if (
            tensor.datatype == "FP16" and want_type == "FP32"
        ):  # fp16 transport: cast back on arrival
            return self._to_array(
                InputTensor(tensor.name, "FP16", tensor.shape, tensor.raw, tensor.values),
                _fp16_spec(spec),
            ).astype(np.float32)
        if tensor.datatype != want_type:
            raise InvalidArgument(
                f"unexpected datatype {tensor.datatype} for inference input "
                f"'{tensor.name}', expecting {want_type} for model '{name}'"
            )
        dims = ([-1] if self.config.max_batch_size > 0 else []) + list(spec.dims)
        shape = list(tensor.shape)
        if len(shape) != len(dims) or any(
            s < 0 or (d != -1 and d != s) for s, d in zip(shape, dims, strict=True)
        ):
            raise InvalidArgument(
                f"unexpected shape for input '{tensor.name}' for model '{name}'. "
                f"Expected {dims}, got {shape}"
            )
        dtype = numpy_dtype(spec.data_type).newbyteorder("<")
        count = math.prod(shape)
        if tensor.raw is not None:
            if len(tensor.raw) != count * dtype.itemsize:
                raise InvalidArgument(
                    f"unexpected total byte size {len(tensor.raw)} for input "
                    f"'{tensor.name}', expecting {count * dtype.itemsize}"
                )
            return np.frombuffer(tensor.raw, dtype).reshape(shape)
        values = np.asarray(tensor.values if tensor.values is not None else [], dtype=dtype)
        if values.size != count:
            raise InvalidArgument(
                f"unexpected number of values {values.size} for input "
                f"'{tensor.name}', expecting {count}"
            )
        return values.reshape(shape)
