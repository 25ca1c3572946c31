"""Dynamic batching, queue policies, splitting, cancellation and draining, via real clients.

A "gate" backend (tests/support/servers.py) holds each execution until the test opens it,
so queue states are reached by construction rather than by timing.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from support.models import identity_onnx, tiny_onnx
from support.servers import (
    CNN_LIKE_CONFIG,
    EXECUTIONS,
    GATES,
    IDENTITY_CONFIG,
    add_model,
    gate_model,
    marked,
)
from tritonclient.utils import InferenceServerException

from argonic.server import register_backend, running_server

QUEUE = "dynamic_batching {{ default_queue_policy {{ {} }} }}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batching")
    gate_model(root, "merge", "dynamic_batching { }")
    gate_model(root, "unbatched")
    gate_model(root, "qfull", QUEUE.format("max_queue_size: 2"))
    gate_model(root, "expire", QUEUE.format("default_timeout_microseconds: 100000"))
    gate_model(root, "override", QUEUE.format("allow_timeout_override: true"))
    gate_model(
        root, "delay", QUEUE.format("default_timeout_microseconds: 20000 timeout_action: DELAY")
    )
    gate_model(
        root,
        "priority",
        "dynamic_batching { priority_levels: 2 default_priority_level: 2 }\n"
        'parameters { key: "execution_batch_size" value { string_value: "1" } }',
    )
    gate_model(root, "mixed", "dynamic_batching { }")
    gate_model(root, "cancel", "dynamic_batching { }")
    add_model(
        root,
        "cnn",
        CNN_LIKE_CONFIG,
        max_batch_size=2048,
        extra="dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        'parameters { key: "execution_batch_size" value { string_value: "96" } }',
        versions={1: lambda d: tiny_onnx(d / "model.onnx", 5)},
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path):
    with running_server(repo) as handle:
        yield handle


def pending(server, model: str) -> int:
    """Requests waiting in the model's queue (Triton's nv_inference_pending_request_count)."""
    return server.server.dataplane.model(model).stats.pending


def infer_input(x: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


async def wait_until(predicate, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


async def infer(client: aioclient.InferenceServerClient, model: str, x: np.ndarray, **kwargs):
    """The output, or the InferenceServerException the server answered with."""
    try:
        result = await client.infer(model, [infer_input(x)], **kwargs)
    except InferenceServerException as exc:
        return exc
    return result.as_numpy("output")


def run_with_client(server, body):
    async def main():
        async with aioclient.InferenceServerClient(server.url) as client:
            return await body(client)

    return asyncio.run(main())


async def hold_instance(client, server, model: str):
    """Start one request and wait until it blocks the (only) instance at the gate."""
    first = asyncio.create_task(infer(client, model, marked(1, 0.5)))
    await wait_until(lambda: len(EXECUTIONS[model]) == 1, f"{model} started its first execution")
    return first


def queued_behind_one(server, model: str, xs: list) -> list:
    """The results of a first request (holding the instance) and of ``xs``, sent while it
    runs and released together once all of them are queued."""

    async def body(client):
        first = await hold_instance(client, server, model)
        tasks = [asyncio.create_task(infer(client, model, x)) for x in xs]
        await wait_until(lambda: pending(server, model) == len(xs), f"{len(xs)} requests queued")
        GATES[model].set()
        return await asyncio.gather(first, *tasks)

    return run_with_client(server, body)


def test_concurrent_requests_are_merged_into_one_execution(server) -> None:
    xs = [marked(2, 1 + i) for i in range(5)]

    results = queued_behind_one(server, "merge", xs)
    for x, out in zip(xs, results[1:], strict=True):
        np.testing.assert_array_equal(out, x)
    assert [sorted(e) for e in EXECUTIONS["merge"]] == [[0.5], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]
    stats = (
        grpcclient.InferenceServerClient(server.url)
        .get_inference_statistics("merge")
        .model_stats[0]
    )
    assert stats.execution_count == 2 < stats.inference_stats.success.count == 6
    assert stats.inference_count == 11


def test_without_dynamic_batching_requests_run_alone(server) -> None:
    xs = [marked(2, 1 + i) for i in range(3)]

    results = queued_behind_one(server, "unbatched", xs)
    assert all(np.array_equal(out, x) for x, out in zip(xs, results[1:], strict=True))
    assert len(EXECUTIONS["unbatched"]) == 4


def test_queue_full_is_unavailable(server) -> None:
    async def body(client):
        first = await hold_instance(client, server, "qfull")
        queued = [asyncio.create_task(infer(client, "qfull", marked(1, m))) for m in (1, 2)]
        await wait_until(lambda: pending(server, "qfull") == 2, "2 requests queued")
        rejected = await infer(client, "qfull", marked(1, 3))
        GATES["qfull"].set()
        return rejected, await asyncio.gather(first, *queued)

    rejected, answered = run_with_client(server, body)
    assert (
        rejected.status() == "StatusCode.UNAVAILABLE"
        and "Exceeds maximum queue size" in rejected.message()
    )
    assert all(isinstance(a, np.ndarray) for a in answered)


def test_queue_timeout_rejects_waiting_requests(server) -> None:
    async def body(client):
        first = await hold_instance(client, server, "expire")
        expired = await infer(client, "expire", marked(1, 1))  # waits behind the gate > 100 ms
        GATES["expire"].set()
        return expired, await first

    expired, first = run_with_client(server, body)
    assert (
        expired.status() == "StatusCode.UNAVAILABLE"
        and "Request timeout expired" in expired.message()
    )
    assert isinstance(first, np.ndarray)
    assert EXECUTIONS["expire"] == [[0.5]]  # the expired request never ran


def test_timeout_action_delay_runs_expired_requests_last(server) -> None:
    async def body(client):
        first = await hold_instance(client, server, "delay")
        late = asyncio.create_task(infer(client, "delay", marked(1, 1)))
        delayed = server.server.dataplane.model("delay").batcher._queues[-1]
        await wait_until(lambda: len(delayed) == 1, "request moved to the delayed queue")
        fresh = asyncio.create_task(infer(client, "delay", marked(1, 2)))
        await wait_until(lambda: pending(server, "delay") == 2, "fresh request queued")
        GATES["delay"].set()
        return await asyncio.gather(first, late, fresh)

    assert all(isinstance(r, np.ndarray) for r in run_with_client(server, body))
    assert EXECUTIONS["delay"] == [[0.5], [2.0, 1.0]]


def test_request_timeout_override(server) -> None:
    async def body(client):
        first = await hold_instance(client, server, "override")
        timed = await infer(client, "override", marked(1, 1), timeout=50_000)  # microseconds
        patient = asyncio.create_task(infer(client, "override", marked(1, 2)))
        await wait_until(lambda: pending(server, "override") == 1, "patient request queued")
        GATES["override"].set()
        return timed, await first, await patient

    timed, first, patient = run_with_client(server, body)
    assert (
        timed.status() == "StatusCode.UNAVAILABLE" and "Request timeout expired" in timed.message()
    )
    assert isinstance(first, np.ndarray) and isinstance(patient, np.ndarray)


def test_higher_priority_runs_first(server) -> None:
    async def body(client):
        first = await hold_instance(client, server, "priority")
        low = asyncio.create_task(infer(client, "priority", marked(1, 2)))  # default level 2
        await wait_until(lambda: pending(server, "priority") == 1, "low-priority request queued")
        high = asyncio.create_task(infer(client, "priority", marked(1, 1), priority=1))
        await wait_until(lambda: pending(server, "priority") == 2, "high-priority request queued")
        # out of range: the default level, as Triton does
        other = asyncio.create_task(infer(client, "priority", marked(1, 3), priority=5))
        await wait_until(lambda: pending(server, "priority") == 3, "out-of-range request queued")
        GATES["priority"].set()
        return await asyncio.gather(first, low, high, other)

    results = run_with_client(server, body)
    assert all(isinstance(r, np.ndarray) for r in results)
    assert EXECUTIONS["priority"] == [[0.5], [1.0], [2.0], [3.0]]


def test_bad_requests_do_not_disturb_the_batch(server) -> None:
    good = [marked(3, 1), marked(2, 2)]

    async def body(client):
        first = await hold_instance(client, server, "mixed")
        tasks = [asyncio.create_task(infer(client, "mixed", x)) for x in good]
        wrong_shape = asyncio.create_task(
            infer(client, "mixed", np.zeros((2, 48, 47, 1), np.float32))
        )
        wrong_dtype = client.infer(
            "mixed",
            [
                grpcclient.InferInput("main_input", [1, 48, 48, 1], "FP64").set_data_from_numpy(
                    np.zeros((1, 48, 48, 1))
                )
            ],
        )
        too_big = asyncio.create_task(infer(client, "mixed", marked(65, 9)))
        await wait_until(lambda: pending(server, "mixed") == 2, "good requests queued")
        errors = [await wrong_shape, await too_big]
        try:
            await wrong_dtype
        except InferenceServerException as exc:
            errors.append(exc)
        GATES["mixed"].set()
        return errors, await asyncio.gather(first, *tasks)

    errors, results = run_with_client(server, body)
    assert [e.status() for e in errors] == ["StatusCode.INVALID_ARGUMENT"] * 3
    for x, out in zip(good, results[1:], strict=True):
        np.testing.assert_array_equal(out, x)
    assert [sorted(e) for e in EXECUTIONS["mixed"]] == [[0.5], [1, 1, 1, 2, 2]]


def test_cancelled_request_is_dropped_from_the_queue(server) -> None:
    async def body(client):
        first = await hold_instance(client, server, "cancel")
        gone = await infer(client, "cancel", marked(2, 1), client_timeout=0.2)  # client gives up
        await wait_until(lambda: pending(server, "cancel") == 0, "cancelled request left the queue")
        kept = asyncio.create_task(infer(client, "cancel", marked(1, 2)))
        await wait_until(lambda: pending(server, "cancel") == 1, "next request queued")
        GATES["cancel"].set()
        return gone, await first, await kept

    gone, first, kept = run_with_client(server, body)
    assert gone.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert isinstance(first, np.ndarray) and isinstance(kept, np.ndarray)
    assert EXECUTIONS["cancel"] == [[0.5], [2.0]]


def test_split_and_merged_requests_match_onnxruntime(server, repo: Path) -> None:
    """Many concurrent requests of odd sizes through 96-row executions: every row answered once."""
    rng = np.random.default_rng(3)
    sizes = [1, 250, 7, 96, 97, 500, 3, 1693]
    xs = [rng.random((n, 48, 48, 1), dtype=np.float32) for n in sizes]

    async def body(client):
        return await asyncio.gather(*(client.infer("cnn", [infer_input(x)]) for x in xs))

    results = run_with_client(server, body)
    session = ort.InferenceSession(str(repo / "cnn" / "1" / "model.onnx"))
    for x, result in zip(xs, results, strict=True):
        softmax, michel = session.run(None, {"main_input": x})
        np.testing.assert_allclose(
            result.as_numpy("em_trk_none_netout"), softmax, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(result.as_numpy("michel_netout"), michel, rtol=1e-5, atol=1e-6)
    stats = (
        grpcclient.InferenceServerClient(server.url).get_inference_statistics("cnn").model_stats[0]
    )
    assert stats.inference_count == sum(sizes)
    assert all(b.batch_size <= 96 for b in stats.batch_stats)
    assert sum(b.batch_size * b.compute_infer.count for b in stats.batch_stats) == sum(sizes)


def test_stream_infer(server) -> None:
    x = marked(2, 4)
    GATES["merge"].set()
    answers: list = []
    client = grpcclient.InferenceServerClient(server.url)
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    client.async_stream_infer("merge", [infer_input(x)], request_id="a")
    client.async_stream_infer("nope", [infer_input(x)], request_id="b")
    client.stop_stream()
    assert len(answers) == 2
    np.testing.assert_array_equal(answers[0][0].as_numpy("output"), x)
    assert "unknown model" in str(answers[1][1])


# --- shutdown -----------------------------------------------------------------------------


def test_drain_finishes_in_flight_and_refuses_new(tmp_path: Path) -> None:
    gate_model(tmp_path, "drain", "dynamic_batching { }")
    with running_server(tmp_path, allow_metrics=False) as handle:

        async def body(client):
            first = await hold_instance(client, handle, "drain")
            stopped = handle.begin_stop()
            await wait_until(lambda: handle.server.dataplane.draining, "draining began")
            refused = await infer(client, "drain", marked(1, 1))
            ready = await client.is_server_ready()
            GATES["drain"].set()
            return await first, refused, ready, await asyncio.wrap_future(stopped)

        first, refused, ready, summary = run_with_client(handle, body)
    assert isinstance(first, np.ndarray) and first[0, 0, 0, 0] == 0.5
    assert refused.status() == "StatusCode.UNAVAILABLE" and not ready
    assert summary["drained"] and summary["requests_succeeded"] == 1


def test_cli_serve_logs_models_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    add_model(
        tmp_path,
        "identity",
        IDENTITY_CONFIG,
        versions={
            1: lambda d: identity_onnx(d / "model.onnx"),
            2: lambda d: identity_onnx(d / "model.onnx"),
        },
        extra="version_policy { all { } }",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "argonic.cli",
            "serve",
            "--model-repository",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--http-port",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        log = []
        for line in process.stderr:
            log.append(line)
            match = re.search(r"gRPC on 127\.0\.0\.1:(\d+)", line)
            if match:
                break
        assert match, "".join(log)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{match.group(1)}")
        x = marked(3, 1)
        np.testing.assert_array_equal(
            client.infer("identity", [infer_input(x)], model_version="1").as_numpy("output"), x
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    text = "".join(log)
    assert (
        "loaded model 'identity' version 1" in text and "loaded model 'identity' version 2" in text
    )
    assert '"requests_succeeded": 1' in out and '"drained": true' in out


class ShortBackend:
    """An identity backend that loses the last row of every execution (a broken model)."""

    def __init__(self, config, model_file: Path, instance) -> None:
        pass

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": np.array(inputs["main_input"][:-1])}

    def close(self) -> None:
        pass


register_backend("argonic_test_short", ShortBackend)


def test_a_backend_returning_the_wrong_number_of_rows_fails_cleanly(tmp_path: Path) -> None:
    """Every request of the execution gets INTERNAL naming the output and both sizes (no
    row is handed to the wrong request), and the server goes on serving other models."""
    add_model(
        tmp_path,
        "short",
        IDENTITY_CONFIG,
        platform="argonic_test_short",
        extra="dynamic_batching { }",
        versions={1: lambda d: (d.mkdir(parents=True), (d / "model").write_bytes(b"-"))},
    )
    add_model(
        tmp_path,
        "identity",
        IDENTITY_CONFIG,
        versions={1: lambda d: identity_onnx(d / "model.onnx")},
    )
    x = np.random.default_rng(5).random((3, 48, 48, 1), dtype=np.float32)
    with running_server(tmp_path, allow_metrics=False) as handle:
        client = grpcclient.InferenceServerClient(handle.url)
        with pytest.raises(InferenceServerException) as info:
            client.infer("short", [infer_input(x)])
        assert info.value.status() == "StatusCode.INTERNAL"
        assert info.value.message() == (
            "model output 'output' has shape [2, 48, 48, 1], expected batch size 3"
        )
        np.testing.assert_array_equal(
            client.infer("identity", [infer_input(x)]).as_numpy("output"), x
        )
        stats = client.get_inference_statistics("short").model_stats[0].inference_stats
        assert stats.fail.count == 1 and stats.success.count == 0
