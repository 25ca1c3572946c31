"""Served throughput (argonic serve + NVIDIA perf_analyzer) vs in-process ONNX Runtime.

For each batch size: (1) ONNX Runtime in this process, one session.run after another (with
``--instances`` above 1 also that many sessions sharing the cores, in threads; the ratios
are to the better of the two);
(2) ``argonic serve`` in a child process on 127.0.0.1, measured by perf_analyzer over gRPC,
once per ``--execution-batch-sizes`` value (the server's chunk size; "max" = no split), and
per ``--shared-memory`` mode (``system``: perf_analyzer puts the tensors in /dev/shm and
sends only their descriptions, as a client on the server's host can).
Optionally (``--identity``) an identity model on the same patches measures the protocol
alone. Installing perf_analyzer: see benchmarks/BENCHMARKS.md, section "Server".

    python benchmarks/bench_server.py --model-repository models --model emtrkmichelid \\
        --perf-analyzer tools/pa/tritonclient-2.41.0.data/data/bin/perf_analyzer \\
        --batch-sizes 256 1693 --concurrency 2
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from argonic.procs import serve_command
from argonic.repository.model_config import load_config
from argonic.server.backends.onnxruntime import graph_optimization_level

PERF_ANALYZER_PATCHES = 512  # real patches in perf_analyzer's --input-data (~7 MB of JSON)


def ort_throughput(
    model_file: Path, batch: int, seconds: float, sessions: int = 1, x: np.ndarray | None = None
) -> float:
    """Patches/s of back-to-back session.run calls at one batch size (after one warm-up),
    with the session options the server gives this model (its config's graph level).
    ``sessions`` > 1: that many sessions of cores / sessions threads, each run back to back
    in its own thread (what N server instances do, without the server). Inputs: the first
    ``batch`` rows of ``x`` (repeated if fewer), else uniform noise."""
    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level(
        load_config(model_file.parent.parent)
    )
    if sessions > 1:
        options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)) // sessions)
    if x is None:
        x = np.random.default_rng(0).random((batch, 48, 48, 1), dtype=np.float32)
    x = np.ascontiguousarray(np.resize(x, (batch, 48, 48, 1)), np.float32)
    rates = [0.0] * sessions
    all_ready = threading.Barrier(sessions)

    def loop(i: int) -> None:
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})
        all_ready.wait()
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {name: x})
            runs += 1
        rates[i] = runs * batch / (time.perf_counter() - start)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(rates)


def write_identity_model(model_dir: Path) -> None:
    """An identity model on [N, 48, 48, 1] with the CNN's input name."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["N", 48, 48, 1]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["main_input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.pbtxt").write_text(
        'name: "identity"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4096\n'
        'input [ { name: "main_input" data_type: TYPE_FP32 dims: [48, 48, 1] } ]\n'
        'output [ { name: "output" data_type: TYPE_FP32 dims: [48, 48, 1] } ]\ndynamic_batching { }\n'
    )


def scratch_repository(
    source: Path,
    model: str,
    execution_batch_size: str,
    identity: bool,
    extra_parameters: list[str],
    instances: int = 1,
) -> Path:
    """A temporary repository: the model (files linked) with execution_batch_size and the
    CPU instance count set."""
    root = Path(tempfile.mkdtemp(prefix="argonic-bench-"))
    src = source / model
    dst = root / model
    dst.mkdir()
    for version in (p for p in src.iterdir() if p.is_dir()):
        (dst / version.name).mkdir()
        for f in version.iterdir():
            (dst / version.name / f.name).symlink_to(f.resolve())
    config = load_config(src)
    size = str(config.max_batch_size) if execution_batch_size == "max" else execution_batch_size
    config.parameters["execution_batch_size"].string_value = size
    for key, value in (item.split("=", 1) for item in extra_parameters):
        config.parameters[key].string_value = value
    del config.instance_group[:]
    config.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    (dst / "config.pbtxt").write_text(text_format.MessageToString(config))
    if identity:
        write_identity_model(root / "identity")
    return root


class Server:
    """A server in a child process; ``ready`` matches the line that gives its gRPC port."""

    def __init__(self, command: list[str], ready: str, stream: str = "stderr") -> None:
        pipe = {stream: subprocess.PIPE}
        self.process = subprocess.Popen(
            command,
            text=True,
            **{"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **pipe},
        )
        self.stream = getattr(self.process, stream)
        for line in self.stream:
            match = re.search(ready, line)
            if match:
                self.url = f"127.0.0.1:{match.group(1)}"
                self.match = match
                # keep reading: a full pipe would block the server's logging (and the server)
                self._drain = threading.Thread(target=self.stream.read, daemon=True)
                self._drain.start()
                return
        raise RuntimeError(f"{command[0]} exited before listening")

    @classmethod
    def argonic(cls, repository: Path) -> Server:
        """`argonic serve` on 127.0.0.1 (port chosen by the server)."""
        return cls(
            serve_command(repository, grpc_port=0, metrics_port=None, http_port=None),
            r"gRPC on 127\.0\.0\.1:(\d+)",
        )

    @classmethod
    def pytriton(cls, python: str, model_file: Path) -> Server:
        """A real Triton via PyTriton (bench_server_pytriton.py) in another virtualenv."""
        script = Path(__file__).with_name("bench_server_pytriton.py")
        return cls([python, str(script), "--model-file", str(model_file)], r"READY (\d+)", "stdout")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        self._drain.join(120)
        return self.process.wait(120)


def event_patches_sample(events_file: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` patches [n, 48, 48, 1] of hits drawn at random from an event file (the same
    number from each event): what the network meets, near ties between classes included
    (the int8 twin re-runs those, so its speed depends on the inputs)."""
    from argonic.detector.eventfile import EventFile
    from argonic.patches import sampled_patches

    rng = np.random.default_rng(seed)
    with EventFile(events_file) as f:
        x = sampled_patches(f, f.detector, n, rng)
    return x[rng.permutation(len(x))[:n]]


def patch_input_data(
    path: Path, patches: int = 16, seed: int = 0, real: np.ndarray | None = None
) -> Path:
    """A perf_analyzer ``--input-data`` file for ``main_input``: the ``real`` patches where
    given, else ``patches`` patch-like inputs (exponential charges, 80% zeros, clipped to the
    preprocessing's 15).

    perf_analyzer's default is random bytes read as float32: denormals, infinities and NaNs,
    which the CPU's arithmetic slows down on (on a Xeon with AVX-512, argonic serve ran the
    network at 2,772 patches/s on them and 6,678 on zeros). Patches never hold such values.
    """
    if real is not None:
        x = real.reshape(len(real), -1)
    else:
        rng = np.random.default_rng(seed)
        x = np.minimum(rng.exponential(2.0, (patches, 48 * 48)), 15.0)
        x[rng.random(x.shape) < 0.8] = 0.0
    data = [{"main_input": [round(float(v), 4) for v in row]} for row in x]
    path.write_text(json.dumps({"data": data}))
    return path


def perf_analyzer(
    binary: str,
    url: str,
    model: str,
    batch: int,
    concurrency: int,
    measurement_ms: int,
    stability: int = 50,
    protocol: str = "grpc",
    extra: tuple[str, ...] = (),
    real: np.ndarray | None = None,
) -> tuple[float, float]:
    """(inferences/s, p99 latency ms) perf_analyzer reports for one configuration (nan: unstable);
    ``protocol``: grpc or http (``url`` is that endpoint's host:port); ``extra``: more flags.
    Inputs: ``real`` patches or patch-like values (:func:`patch_input_data`), not
    perf_analyzer's random bytes."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as out, tempfile.TemporaryDirectory() as tmp:
        data = patch_input_data(Path(tmp) / "patches.json", real=real)
        cmd = [
            binary,
            "-m",
            model,
            "-u",
            url,
            "-i",
            protocol,
            "-b",
            str(batch),
            "--concurrency-range",
            str(concurrency),
            "--shape",
            "main_input:48,48,1",
            "-p",
            str(measurement_ms),
            "-s",
            str(stability),
            "-r",
            "8",
            "-f",
            out.name,
            "--input-data",
            str(data),
            *extra,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if "Failed to obtain stable measurement" in run.stdout + run.stderr:
            print(f"  (perf_analyzer: no stable measurement for {model} batch {batch})", flush=True)
            return float("nan"), float("nan")
        if run.returncode != 0:
            raise RuntimeError(
                f"perf_analyzer failed ({' '.join(cmd)}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
            )
        with open(out.name) as f:
            rows = list(csv.DictReader(f))
    return float(rows[0]["Inferences/Second"]), float(rows[0]["p99 latency"]) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--model", default="emtrkmichelid")
    p.add_argument("--perf-analyzer", default=shutil.which("perf_analyzer") or "perf_analyzer")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1693])
    p.add_argument(
        "--execution-batch-sizes",
        nargs="+",
        default=["256"],
        help='server chunk sizes to compare ("max": max_batch_size, i.e. no split)',
    )
    p.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config.pbtxt parameter for the served model (repeatable)",
    )
    p.add_argument(
        "--instances",
        type=int,
        nargs="+",
        default=[1],
        help="CPU instance counts to compare (instance_group count; they share the cores)",
    )
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument(
        "--rounds", type=int, default=1, help="(in-process, served) pairs per batch size"
    )
    p.add_argument("--measurement-ms", type=int, default=5000)
    p.add_argument("--ort-seconds", type=float, default=8.0)
    p.add_argument(
        "--stability-percentage",
        type=int,
        default=50,
        help="perf_analyzer -s (this shared 2-core machine is noisy)",
    )
    p.add_argument(
        "--events-file",
        type=Path,
        help="inputs: patches of hits drawn from this event file (default: patch-like noise)",
    )
    p.add_argument(
        "--shared-memory",
        nargs="+",
        choices=("none", "system"),
        default=["none"],
        help="perf_analyzer --shared-memory modes to compare: none (tensors on the gRPC socket) "
        "or system (tensors in /dev/shm: a client on the server's host)",
    )
    p.add_argument("--identity", action="store_true", help="also measure an identity model")
    p.add_argument(
        "--pytriton-python",
        help="python of a virtualenv with nvidia-pytriton: also "
        "measure a real Triton serving the same ONNX file (see bench_server_pytriton.py)",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args()

    model_file = a.model_repository / a.model / "1" / "model.onnx"
    repos, servers = [], {}
    try:  # all servers up (idle) first, then every batch size measured back to back on each
        for exec_size in a.execution_batch_sizes:
            for instances in a.instances:
                identity = a.identity and not repos
                repos.append(
                    scratch_repository(
                        a.model_repository, a.model, exec_size, identity, a.parameter, instances
                    )
                )
                name = f"argonic exec {exec_size}" + (f" x{instances}" if instances > 1 else "")
                servers[name] = Server.argonic(repos[-1])
        if a.pytriton_python:
            servers["Triton (PyTriton)"] = Server.pytriton(a.pytriton_python, model_file)
        results = measure(a, model_file, servers)
    finally:
        codes = {name: server.stop() for name, server in servers.items()}
        for repo in repos:
            shutil.rmtree(repo, ignore_errors=True)
    if any(code != 0 for name, code in codes.items() if name.startswith("argonic")):
        raise SystemExit(f"argonic serve did not exit 0 on SIGTERM: {codes}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


def measure(a: argparse.Namespace, model_file: Path, servers: dict[str, Server]) -> dict:
    """In-process ORT, then each server, per batch size (ratios within one run)."""
    results: dict = {"ort_in_process": {}, "served": {}, "identity": {}, "ratios": {}}
    real = event_patches_sample(a.events_file, 2048) if a.events_file else None
    for batch in a.batch_sizes:
        # rounds of (in-process, each server) back to back: a ratio per round, so the
        # shared machine's slow and fast spells hit both sides of each ratio alike
        for r in range(a.rounds):
            # in-process: the best of one session of every core (the local interface) and
            # as many sessions sharing the cores as the most instances served
            locals_ = {
                n: ort_throughput(model_file, batch, a.ort_seconds, n, real)
                for n in sorted({1, max(a.instances)})
            }
            local = max(locals_.values())
            results["ort_in_process"].setdefault(batch, []).append(local)
            for n, rate in locals_.items():
                results.setdefault("ort_in_process_sessions", {}).setdefault(
                    f"{n}/{batch}", []
                ).append(rate)
                label = "in-process ORT" + (f" x{n}" if n > 1 else "")
                print(f"round {r} {label:24s} batch {batch:5d}: {rate:7.0f} patches/s", flush=True)
            for (server_name, server), shm in itertools.product(servers.items(), a.shared_memory):
                rate, p99 = perf_analyzer(
                    a.perf_analyzer,
                    server.url,
                    a.model,
                    batch,
                    a.concurrency,
                    a.measurement_ms,
                    a.stability_percentage,
                    extra=() if shm == "none" else ("--shared-memory", shm),
                    real=None if real is None else real[:PERF_ANALYZER_PATCHES],
                )
                name = server_name + ("" if shm == "none" else f" shm {shm}")
                key = f"{name}/{batch}"
                results["served"].setdefault(key, []).append(rate)
                results.setdefault("p99_ms", {}).setdefault(key, []).append(p99)
                results["ratios"].setdefault(key, []).append(rate / local)
                print(
                    f"round {r} {name:24s} batch {batch:5d}: {rate:7.0f} patches/s "
                    f"({rate / local:.2f}x in-process), p99 {p99:.0f} ms",
                    flush=True,
                )
    for key, ratios in results["ratios"].items():
        print(
            f"{key:32s} served / in-process: median {statistics.median(ratios):.3f} "
            f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    if a.identity:
        url = next(iter(servers.values())).url
        for batch in (1, *a.batch_sizes):
            rate = results["identity"][batch] = perf_analyzer(
                a.perf_analyzer,
                url,
                "identity",
                batch,
                a.concurrency,
                a.measurement_ms,
                a.stability_percentage,
            )[0]
            print(
                f"{'argonic identity':24s} batch {batch:5d}: {rate:7.0f} patches/s "
                f"({rate * 48 * 48 * 4 / 1e6:.0f} MB/s each way)",
                flush=True,
            )
    return results


if __name__ == "__main__":
    main()
