"""The benchmarks' one harness: the machine, a server, a rate, a result file.

Every script in benchmarks/ parses its options with :func:`parser` (which adds
``--result``), starts servers with :func:`served` / :class:`Server` (a real `argonic serve`
child process, settings as ``--set server.KEY=VALUE`` flags; a real Triton through
PyTriton), measures served rates with :func:`perf_analyzer` (NVIDIA's) and in-process ones
with :func:`interleaved_best` (the roofline from :func:`matmul_probes`), and ends with :func:`report`, which writes its result as JSON under
``benchmarks/results/`` (or ``--result``) with the machine, its CPU flags, the date and the
commit. Nothing here imports tests/, and no test imports benchmarks/.
(bench_server_pytriton.py is the exception by necessity: it runs in PyTriton's own Python,
without argonic.)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from argonic.detector.eventfile import EventFile
from argonic.patches import event_patches
from argonic.procs import serve_command
from argonic.repository import shipped_repository
from argonic.repository.model_config import load_config
from argonic.server.backends import cpu

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())
    }


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD")
    return f"{head}+changes" if head and git("status", "--porcelain", "--", "src") else head


def machine() -> dict[str, Any]:
    """The machine a figure comes from: CPU model, cores, the relevant CPU flags, memory,
    Python, date and commit."""
    info = _cpuinfo()
    affinity = getattr(os, "sched_getaffinity", None)
    pages = (
        os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    )
    return {
        "cpu": info.get("model name", platform.processor() or platform.machine()),
        "cores": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu_flags": cpu.describe(),  # what the server reads: VNNI, AVX-512, BF16, AMX
        "memory_gib": round(pages / 2**30, 1),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "commit": _commit(),
    }


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The script's option parser (its docstring's first line), with ``--result``."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--result",
        default=None,
        metavar="JSON",
        help="result file (default: benchmarks/results/<script>.json; '-': none)",
    )
    return p


def report(result: dict[str, Any], args: argparse.Namespace | None = None) -> Path | None:
    """Write ``result`` with the machine as JSON (see ``--result``); return the file."""
    script = Path(sys.argv[0]).stem
    output = getattr(args, "result", None)
    if output == "-":
        return None
    path = Path(output) if output else RESULTS / f"{script}.json"
    options = {k: v for k, v in vars(args).items() if k != "result"} if args else {}
    record = {"benchmark": script, "machine": machine(), "options": options, **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"result: {path}", file=sys.stderr)
    return path


@contextlib.contextmanager
def served(
    repository: str | os.PathLike[str] | None = None, flags: Sequence[str] = ()
) -> Iterator[Server]:
    """A real `argonic serve` on a loopback port it picks, every model loaded; drained and
    stopped on exit. ``flags``: more `argonic serve` flags (``--set server.KEY=VALUE``)."""
    server = Server.argonic(Path(repository or shipped_repository()), flags)
    try:
        yield server
    finally:
        server.stop()


# --- rates in this process ---------------------------------------------------------------

N = 4096  # matrix size of the fp32 matmul probes
Probe = tuple[Callable[[], object], float]  # (one call, work units per call)


def interleaved_best(probes: dict[str, Probe], rounds: int, window: float) -> dict[str, float]:
    """Best rate (work units/s) of each probe over ``rounds`` rounds; every round times each
    probe once for about ``window`` seconds, so all probes see the same share of a noisy,
    shared machine's quiet moments."""
    for fn, _ in probes.values():
        fn()  # warm-up
    best = dict.fromkeys(probes, 0.0)
    for _ in range(rounds):
        for name, (fn, work) in probes.items():
            start, calls = time.perf_counter(), 0
            while True:
                fn()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= window:
                    break
            best[name] = max(best[name], calls * work / elapsed)
    return best


def matmul_probes(threads: int) -> dict[str, Probe]:
    """fp32 4096^3 matrix products (work unit: GFLOP) in numpy, torch and ONNX Runtime."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a, b = rng.random((N, N), np.float32), rng.random((N, N), np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [N, N]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [N, N])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    gflop = 2.0 * N**3 / 1e9
    return {
        "matmul numpy": (lambda: a @ b, gflop),
        "matmul torch": (lambda: ta @ tb, gflop),
        "matmul onnxruntime": (lambda: session.run(None, {"a": a, "b": b}), gflop),
    }


def held_out(path: Path, hits: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patches, true label, true michel) of the file's hits (a random subset if ``hits``)."""
    patches, labels, michels = [], [], []
    with EventFile(path) as f:
        for i in range(len(f)):
            event = f[i]
            patches.append(event_patches(event, f.detector))
            labels.append(event.hits.label)
            michels.append(event.hits.michel)
    x, label, michel = np.concatenate(patches), np.concatenate(labels), np.concatenate(michels)
    if hits and hits < len(x):
        pick = np.sort(np.random.default_rng(seed).choice(len(x), hits, replace=False))
        x, label, michel = x[pick], label[pick], michel[pick]
    return x, label, michel


# --- servers and perf_analyzer ---------------------------------------------------------

PERF_ANALYZER_PATCHES = 512  # real patches in perf_analyzer's --input-data (~7 MB of JSON)


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
    def argonic(cls, repository: Path, flags: Sequence[str] = ()) -> Server:
        """`argonic serve` on 127.0.0.1 (port chosen by the server)."""
        command = serve_command(repository, grpc_port=0, metrics_port=None, http_port=None)
        return cls([*command, *flags], r"gRPC on 127\.0\.0\.1:(\d+)")

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


def served_rates(
    binary: str,
    url: str,
    models: Sequence[str],
    batches: Sequence[int],
    concurrency: int,
    measurement_ms: int,
    real: np.ndarray,
    rounds: int = 1,
) -> dict[str, dict[str, float | None]]:
    """perf_analyzer over every model x batch, ``rounds`` times interleaved; the best
    rate of each (``"<model> batch <b>"``: patches_per_s, p99_ms)."""
    best: dict[str, dict[str, float | None]] = {}
    for _ in range(rounds):
        for model in models:
            for b in batches:
                rate_, p99 = perf_analyzer(
                    binary, url, model, b, concurrency, measurement_ms, real=real
                )
                row = best.setdefault(f"{model} batch {b}", {"patches_per_s": 0.0, "p99_ms": None})
                if rate_ > (row["patches_per_s"] or 0.0):
                    row.update(patches_per_s=rate_, p99_ms=p99)
                print(f"served {model} batch {b}: {rate_:,.0f} patches/s", flush=True)
    return best
