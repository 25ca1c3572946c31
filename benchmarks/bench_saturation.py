"""Saturation-aware failover: two `argonic serve`, one driven into saturation.

Server A refuses RepositoryIndex and new inference while its queue time per execution
(SuperSONIC's load metric, over ``--window`` seconds) is above ``--threshold-ms``; server B
has no threshold. ``--clients`` argonic clients (RemoteInterface, servers [A, B]: A
preferred) run ``--batch``-patch predictions throughout; after ``--warm`` seconds,
``--flood`` asynchronous senders load A alone with ``--flood-batch``-patch requests. Every
half second the servers' inference counts give the share of the clients' patches that B
answered; reported: the time from the flood's start to A's first refusal and to >= 95% of
the clients' patches on B, and whether every client patch was answered (nothing lost).

    python benchmarks/bench_saturation.py
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import harness
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from argonic.inference.remote import RemoteInterface
from argonic.repository import MODEL_NAME


def inferences(url: str) -> int:
    """The model's inference count on one server (ModelStatistics)."""
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL_NAME), timeout=10)
    return sum(m.inference_count for m in reply.model_stats)


def client_loop(
    servers: list[str], x: np.ndarray, stop: threading.Event, done: list[int], errors: list[str]
) -> None:
    """One client: predictions until ``stop``; ``done`` collects the patches answered,
    ``errors`` what failed (a lost request)."""
    settings = {
        "batch_size": len(x),
        "remote": {"servers": servers, "timeout_s": 120.0, "retries": 20, "backoff_s": 0.1},
    }
    with RemoteInterface(settings) as remote:
        while not stop.is_set():
            try:
                remote.predict(x)
            except Exception as exc:  # noqa: BLE001 - counted: a lost request
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done.append(len(x))


async def flood(url: str, x: np.ndarray, senders: int, stop: threading.Event) -> dict[str, int]:
    """``senders`` requests always in flight to one server; their statuses."""
    codes: dict[str, int] = {}
    message = pb.ModelInferRequest(model_name=MODEL_NAME)
    message.inputs.add(name="main_input", datatype="FP32", shape=list(x.shape))
    message.raw_input_contents.append(x.tobytes())
    async with grpc.aio.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def sender() -> None:
            while not stop.is_set():
                try:
                    await stub.ModelInfer(message, timeout=120)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    await asyncio.sleep(0.05)
                codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(sender() for _ in range(senders)))
    return codes


def share_after(series: list[dict], moved: float | None) -> float | None:
    """The share of the clients' patches B answered from ``moved`` on."""
    if moved is None:
        return None
    after = [r for r in series if r["t_s"] >= moved]
    total = sum(r["client_patches"] for r in after)
    return sum(r["on_b"] for r in after) / total if total else None


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--threshold-ms", type=float, default=150.0)
    p.add_argument("--window", type=float, default=3.0, help="seconds of the load metric")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--flood", type=int, default=8, help="requests in flight to server A")
    p.add_argument("--flood-batch", type=int, default=256)
    p.add_argument("--warm", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=30.0, help="of flood")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((a.batch, 48, 48, 1), dtype=np.float32)
    fx = rng.random((a.flood_batch, 48, 48, 1), dtype=np.float32)
    hot = [
        *("--set", f"server.saturation_threshold_ms={a.threshold_ms}"),
        *("--set", f"server.saturation_window_s={a.window}"),
        *("--set", "server.saturation_refuse_inference=true"),
        *("--load-model", MODEL_NAME),
    ]
    with (
        harness.served(flags=hot) as busy,
        harness.served(flags=["--load-model", MODEL_NAME]) as free,
    ):
        stop, flood_stop = threading.Event(), threading.Event()
        done: list[int] = []
        errors: list[str] = []
        clients = [
            threading.Thread(target=client_loop, args=([busy.url, free.url], x, stop, done, errors))
            for _ in range(a.clients)
        ]
        for c in clients:
            c.start()
        time.sleep(a.warm)
        flood_codes: dict[str, int] = {}
        flooder = threading.Thread(
            target=lambda: flood_codes.update(asyncio.run(flood(busy.url, fx, a.flood, flood_stop)))
        )
        t0 = time.monotonic()
        before_flood = (inferences(busy.url), inferences(free.url), sum(done))
        flooder.start()
        series = []
        last = (inferences(busy.url), inferences(free.url), sum(done))
        while time.monotonic() - t0 < a.seconds:
            time.sleep(0.5)
            now = (inferences(busy.url), inferences(free.url), sum(done))
            clients_patches = now[2] - last[2]
            on_free = now[1] - last[1]
            series.append(
                {
                    "t_s": round(time.monotonic() - t0, 2),
                    "client_patches": clients_patches,
                    "on_b": on_free,
                    "share_on_b": on_free / clients_patches if clients_patches else None,
                }
            )
            last = now
        flood_stop.set()
        flooder.join()
        stop.set()
        for c in clients:
            c.join()
        answered = sum(done)
        b_total = inferences(free.url)
    moved = next(
        (r["t_s"] for r in series if r["share_on_b"] is not None and r["share_on_b"] >= 0.95),
        None,
    )
    result = {
        "before_flood_patches_a_b": [before_flood[0], before_flood[1]],
        "threshold_ms": a.threshold_ms,
        "window_s": a.window,
        "flood_statuses": flood_codes,
        "seconds_to_95_percent_on_b": moved,
        "client_patches_answered": answered,
        "client_requests_lost": len(errors),
        "errors": errors[:5],
        "client_patches_on_b": b_total,
        "share_on_b_after_move": share_after(series, moved),
        "series": series,
    }
    print({k: v for k, v in result.items() if k != "series"})
    harness.report(result, a)


if __name__ == "__main__":
    main()
