"""Server memory at rest and under a burst: RSS of `argonic serve` idle and while
``--outstanding`` requests of ``--batch`` patches are in flight at once.

    python benchmarks/bench_memory.py --model-repository models --outstanding 64 --batch 1693

Reports the RSS after start-up (models loaded, execution_batch_size calibrated), the peak
RSS sampled every 50 ms during the burst, the RSS once it is over, and how many requests
were answered or refused (UNAVAILABLE: queue or --max-inflight-bytes). Extra
``--set server.KEY=VALUE`` settings go to `argonic serve` (e.g. --set server.max_inflight_bytes=0).
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from pathlib import Path

import grpc
import harness
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (/proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples a process's RSS in a thread; ``peak`` and ``series`` (t, MB)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid, self.every_s = pid, every_s
        self.series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.series.append((time.monotonic() - start, rss_mb(self.pid)))
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max((mb for _, mb in self.series), default=0.0)


def request(model: str, batch: int, seed: int) -> pb.ModelInferRequest:
    x = np.random.default_rng(seed).random((batch, 48, 48, 1), dtype=np.float32)
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="main_input", datatype="FP32", shape=list(x.shape))
    msg.raw_input_contents.append(x.tobytes())
    return msg


async def burst(address: str, model: str, outstanding: int, batch: int) -> dict[str, int]:
    """``outstanding`` requests sent at once, each answered or refused (no retries)."""
    options = [("grpc.max_send_message_length", 1 << 30)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def one(i: int) -> str:
            try:
                await stub.ModelInfer(request(model, batch, i), timeout=600)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        codes = await asyncio.gather(*(one(i) for i in range(outstanding)))
    return dict(collections.Counter(codes))


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--model-repository", default="models")
    parser.add_argument("--model", default="emtrkmichelid")
    parser.add_argument("--outstanding", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1693)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="server.KEY=VALUE",
        help="a [server] setting of the served `argonic serve` (repeatable)",
    )
    a = parser.parse_args()
    flags = [f for item in a.set for f in ("--set", item)]
    with harness.served(a.model_repository, flags) as server:
        process, address = server.process, server.url
        time.sleep(2)
        idle = rss_mb(process.pid)
        with RssSampler(process.pid) as sampler:
            t0 = time.perf_counter()
            codes = asyncio.run(burst(address, a.model, a.outstanding, a.batch))
            seconds = time.perf_counter() - t0
        time.sleep(2)
        after = rss_mb(process.pid)
    result = {
        "idle_rss_mb": round(idle),
        "burst": f"{a.outstanding} x {a.batch} patches",
        "peak_rss_mb": round(sampler.peak),
        "rss_after_mb": round(after),
        "answers": codes,
        "burst_s": round(seconds, 1),
    }
    print(json.dumps(result, indent=2))
    harness.report(result, a)


if __name__ == "__main__":
    main()
