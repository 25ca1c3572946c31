"""Per-model inference statistics, kept the way Triton keeps them (durations in ns)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tritonclient.grpc import service_pb2 as pb


@dataclass
class Duration:
    """A count and a cumulative duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        """Add ``count`` events lasting ``ns`` in total."""
        self.count += count
        self.ns += ns

    def to_proto(self) -> pb.StatisticDuration:
        """As a StatisticDuration message."""
        return pb.StatisticDuration(count=self.count, ns=self.ns)


@dataclass
class RequestTiming:
    """Where one successful request spent its time (ns); compute summed over its executions."""

    queue_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


@dataclass
class ModelStats:
    """Counters of one model version; written on the event loop, read by the metrics thread."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    pending: int = 0  # requests waiting in the queue, not yet (fully) handed to an execution
    last_inference_ms: int = 0
    batches: dict[int, tuple[Duration, Duration, Duration]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution of ``batch_size`` rows."""
        with self.lock:
            self.execution_count += 1
            stats = self.batches.setdefault(batch_size, (Duration(), Duration(), Duration()))
            for duration, ns in zip(stats, (input_ns, infer_ns, output_ns), strict=True):
                duration.add(ns)

    def record_success(self, rows: int, total_ns: int, timing: RequestTiming) -> None:
        """One request answered: ``rows`` inferences."""
        with self.lock:
            self.success.add(total_ns)
            self.queue.add(timing.queue_ns)
            self.compute_input.add(timing.input_ns)
            self.compute_infer.add(timing.infer_ns)
            self.compute_output.add(timing.output_ns)
            self.inference_count += rows
            self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, total_ns: int) -> None:
        """One request that failed (rejected, timed out, or failed in the model)."""
        with self.lock:
            self.fail.add(total_ns)

    def to_proto(self, name: str, version: str) -> pb.ModelStatistics:
        """As the ModelStatistics message of the ModelStatistics RPC."""
        with self.lock:
            return pb.ModelStatistics(
                name=name,
                version=version,
                last_inference=self.last_inference_ms,
                inference_count=self.inference_count,
                execution_count=self.execution_count,
                inference_stats=pb.InferStatistics(
                    success=self.success.to_proto(),
                    fail=self.fail.to_proto(),
                    queue=self.queue.to_proto(),
                    compute_input=self.compute_input.to_proto(),
                    compute_infer=self.compute_infer.to_proto(),
                    compute_output=self.compute_output.to_proto(),
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=size,
                        compute_input=s[0].to_proto(),
                        compute_infer=s[1].to_proto(),
                        compute_output=s[2].to_proto(),
                    )
                    for size, s in sorted(self.batches.items())
                ],
            )
