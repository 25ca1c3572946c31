"""GPU check: served inferences/s of the TorchScript network on one CUDA device (or a CPU smoke).

Builds a temporary model repository from the shipped ONNX network (weights copied into the
PyTorch network, exported as TorchScript): patch models ``emtrk_fp32``, ``emtrk_fp16`` (and
on CUDA ``emtrk_fp16_graphs``, CUDA graphs on), each with a plane-mode twin
``plane_<variant>`` whose patches are cut on the device. Starts ``argonic serve`` on it
and measures, for each variant, mode and batch size, inferences/s (patches/s; plane mode:
hits/s) with several client processes (tritonclient gRPC) sending the same request back
to back. Plane requests are real: one simulated ProtoDUNE-SP plane's image with its hits
drawn (with replacement) to the batch size, encoded as argonic's client encodes them.
Before measuring, every model's heads are compared with ``emtrk_fp32``'s patch-mode heads
for the same hits (max |difference|, and the share of hits with the same class).

    python benchmarks/bench_gpu.py                 # needs CUDA; ~4 min
    python benchmarks/bench_gpu.py --cpu-smoke     # the same flow on the CPU in ~1 min

Prints one table; writes JSON to ``--json`` (default: $OUT/gpu_check.json when OUT is set).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np

from argonic import procs
from argonic.patches import PLANE_DATATYPES, cut_patches, decode_plane, encode_plane, plane_image

OUTPUTS = ("em_trk_none_netout", "michel_netout")
NAN = float("nan")

PATCH_CONFIG = """name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 4096
input [ {{ name: "main_input" data_type: TYPE_FP32 dims: [ 48, 48, 1 ] }} ]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ 1 ] }}
]
instance_group [ {{ count: {count} kind: {kind} }} ]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
parameters {{ key: "precision" value {{ string_value: "{precision}" }} }}
parameters {{ key: "cuda_graphs" value {{ string_value: "{graphs}" }} }}
{extra}
"""

PLANE_CONFIG = """name: "{name}"
backend: "argonic_plane"
max_batch_size: 0
input [
  {{ name: "plane_shape" data_type: TYPE_INT32 dims: [ 2 ] }},
  {{ name: "pixel_delta" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "pixel_value" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "hit_wire" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "hit_tick" data_type: TYPE_FP32 dims: [ -1 ] }}
]
output [
  {{ name: "em_trk_none_netout" data_type: TYPE_FP32 dims: [ -1, 3 ] }},
  {{ name: "michel_netout" data_type: TYPE_FP32 dims: [ -1, 1 ] }}
]
instance_group [ {{ count: {count} kind: {kind} }} ]
parameters {{ key: "network" value {{ string_value: "{network}" }} }}
parameters {{ key: "execution_batch_size" value {{ string_value: "{chunk}" }} }}
"""


def device_name() -> str:
    """The CUDA card's name (torch in a child process, so this one never initialises CUDA)."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    name = run.stdout.strip()
    if not name and shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        name = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout else ""
    return name


def build_repository(root: Path, variants: list[dict[str, Any]], cuda: bool) -> None:
    """The TorchScript network (shipped weights) and its configs, patch and plane mode."""
    from argonic.model.export import export_torchscript, load_network
    from argonic.repository import onnx_path

    network = load_network(onnx_path())
    first = None
    kind, count = ("KIND_GPU", 2) if cuda else ("KIND_CPU", 1)
    for v in variants:
        model_dir = root / v["model"]
        (model_dir / "1").mkdir(parents=True)
        if first is None:
            export_torchscript(network, model_dir / "1" / "model.pt")
            first = model_dir / "1"
        else:
            for f in first.iterdir():
                shutil.copy(f, model_dir / "1" / f.name)
        extra = (
            ""
            if cuda
            # the CPU smoke run: fp16 runs emulated on CPUs without AVX-512 FP16 / AMX-FP16
            else 'parameters { key: "execution_batch_size" value { string_value: "256" } }\n'
            'parameters { key: "allow_emulated" value { string_value: "true" } }'
        )
        (model_dir / "config.pbtxt").write_text(
            PATCH_CONFIG.format(
                name=v["model"],
                count=count,
                kind=kind,
                precision=v["precision"],
                graphs=str(v["graphs"]).lower(),
                extra=extra,
            )
        )
        (root / v["plane"]).mkdir()
        (root / v["plane"] / "config.pbtxt").write_text(
            PLANE_CONFIG.format(
                name=v["plane"],
                count=count,
                kind=kind,
                network=v["model"],
                chunk=2048 if cuda else 256,
            )
        )


def simulated_plane(detector_name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, hit wires, hit peak ticks) of the plane with the most hits of a simulated event."""
    from argonic.detector.geometry import get_detector
    from argonic.reco.simulation import simulate_event

    detector = get_detector(detector_name)
    event = simulate_event(detector, np.random.default_rng(seed), 1, 0, 0)
    hits = event.hits
    key = hits.tpc.astype(np.int64) * 8 + hits.plane
    values, counts = np.unique(key, return_counts=True)
    tpc, plane = divmod(int(values[np.argmax(counts)]), 8)
    idx = np.flatnonzero(key == values[np.argmax(counts)])
    frame = next(f for f in event.frames if (f.tpc, f.plane) == (tpc, plane))
    image = plane_image(frame, detector.planes[plane].calib_c)
    return image, hits.wire[idx], hits.peak_tick[idx]


def requests_for(
    plane: tuple[np.ndarray, np.ndarray, np.ndarray], batch: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(patch-mode inputs, plane-mode inputs) for the same ``batch`` hits of one plane."""
    image, wire, tick = plane
    sel = np.random.default_rng(seed).choice(len(wire), batch, replace=batch > len(wire))
    tensors = encode_plane(image, wire[sel], tick[sel])
    decoded, w, t = decode_plane(tensors)
    patches = cut_patches(decoded, w, t)[..., None]
    return {"main_input": patches}, tensors


def _infer_inputs(tensors: dict[str, np.ndarray]) -> list[Any]:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), PLANE_DATATYPES.get(name, "FP32"))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def client_worker(url: str, jobs: Any, results: Any, barrier: Any) -> None:
    """One client process: for each job, warm up, wait for the others, send back to back."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    while True:
        job = jobs.get()
        if job is None:
            return
        model, tensors, seconds, warmup = job
        inputs = _infer_inputs(tensors)
        try:
            for _ in range(warmup):
                client.infer(model, inputs)
            barrier.wait(timeout=600)
            latencies, start = [], time.perf_counter()
            while not latencies or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                client.infer(model, inputs)
                latencies.append(time.perf_counter() - t0)
            results.put((len(latencies), time.perf_counter() - start, latencies, ""))
        except Exception as exc:  # reported by the parent with the job
            barrier.abort()
            results.put((0, 0.0, [], f"{type(exc).__name__}: {exc}"))


class Clients:
    """A pool of client processes (spawned: no torch/CUDA state inherited)."""

    def __init__(self, url: str, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.jobs = [ctx.Queue() for _ in range(n)]
        self.results = ctx.Queue()
        self.barrier = ctx.Barrier(n)
        self.procs = [
            ctx.Process(
                target=client_worker, args=(url, q, self.results, self.barrier), daemon=True
            )
            for q in self.jobs
        ]
        for p in self.procs:
            p.start()

    def measure(
        self, model: str, tensors: dict[str, np.ndarray], rows: int, seconds: float, warmup: int
    ) -> dict[str, float]:
        """inferences/s (requests x rows over the window) and latency percentiles of one job."""
        self.barrier.reset()
        for q in self.jobs:
            q.put((model, tensors, seconds, warmup))
        answers = [self.results.get(timeout=seconds + 120) for _ in self.jobs]
        errors = [a[3] for a in answers if a[3]]
        if errors:
            raise RuntimeError(f"{model}: {errors[0]}")
        requests = sum(a[0] for a in answers)
        window = max(a[1] for a in answers)
        latencies = np.concatenate([a[2] for a in answers]) * 1e3
        return {
            "inferences_per_s": requests * rows / window,
            "requests": requests,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
        }

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)
        for p in self.procs:
            p.join(30)


def heads(client: Any, model: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 4] heads of one request."""
    result = client.infer(model, _infer_inputs(tensors))
    return np.concatenate([result.as_numpy(name) for name in OUTPUTS], axis=1)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """max |difference| and the share of hits whose class (argmax of 3, Michel > 0.5) agrees."""
    same = (reference[:, :3].argmax(1) == other[:, :3].argmax(1)) & (
        (reference[:, 3] > 0.5) == (other[:, 3] > 0.5)
    )
    return {
        "max_abs_diff": float(np.abs(reference - other).max()),
        "same_class": float(same.mean()),
    }


def wait_ready(url: str, models: list[str], server: Any, log: Path, timeout_s: float) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"argonic serve exited:\n{procs.log_tail(log, 40)}")
        try:
            if all(client.is_model_ready(m) for m in models):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"argonic serve not ready in {timeout_s:.0f} s:\n{procs.log_tail(log, 40)}")


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--cpu-smoke", action="store_true", help="the same flow on the CPU, tiny times")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default 256 1693 (smoke: 32 100)")
    p.add_argument("--seconds", type=float, help="measurement window (default 6; smoke 0.5)")
    p.add_argument("--clients", type=int, help="client processes (default 4; smoke 2)")
    p.add_argument("--detector", help="simulated detector (default protodune-sp; smoke mini)")
    a = p.parse_args()
    smoke = a.cpu_smoke
    batches = a.batch_sizes or ([32, 100] if smoke else [256, 1693])
    seconds = a.seconds or (0.5 if smoke else 6.0)
    n_clients = a.clients or (2 if smoke else 4)
    detector = a.detector or ("mini" if smoke else "protodune-sp")
    json_path = a.result or (  # the device machine returns what lies in $OUT
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    )
    started = time.monotonic()

    name = device_name()
    cuda = bool(name) and not smoke
    if not cuda and not smoke:
        sys.exit("bench_gpu: no CUDA device (torch.cuda.is_available() is False); use --cpu-smoke")
    print(f"device: {name or 'none'}{' (CPU smoke run)' if smoke else ''}", flush=True)
    variants = [
        {"model": "emtrk_fp32", "plane": "plane_fp32", "precision": "fp32", "graphs": False},
        {"model": "emtrk_fp16", "plane": "plane_fp16", "precision": "fp16", "graphs": False},
    ]
    if cuda:
        variants.append(
            {
                "model": "emtrk_fp16_graphs",
                "plane": "plane_fp16_graphs",
                "precision": "fp16",
                "graphs": True,
            }
        )
    root = Path(tempfile.mkdtemp(prefix="argonic-gpu-"))
    log = root / "serve.log"
    server = clients = None
    rows: list[dict[str, Any]] = []
    checks: dict[str, dict[str, float]] = {}
    try:
        build_repository(root / "repo", variants, cuda)
        plane = simulated_plane(detector, seed=7)
        print(
            f"repository {root / 'repo'}; plane: {plane[0].shape[0]} wires x "
            f"{plane[0].shape[1]} bins, {len(plane[1])} hits ({detector})",
            flush=True,
        )
        port = procs.free_port()
        url = f"127.0.0.1:{port}"
        server = procs.start(
            procs.serve_command(root / "repo", grpc_port=port, metrics_port=None, http_port=None),
            log=log,
        )
        models = [m for v in variants for m in (v["model"], v["plane"])]
        wait_ready(url, models, server, log, timeout_s=300)
        print(f"argonic serve ready in {time.monotonic() - started:.0f} s", flush=True)

        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url)
        requests = {b: requests_for(plane, b) for b in batches}
        patch_in, plane_in = requests[batches[-1]]
        reference = heads(client, "emtrk_fp32", patch_in)
        for v in variants:
            for model, tensors in ((v["model"], patch_in), (v["plane"], plane_in)):
                try:
                    checks[model] = agreement(reference, heads(client, model, tensors))
                except Exception as exc:  # keep measuring the other models
                    checks[model] = {"max_abs_diff": NAN, "same_class": NAN, "error": str(exc)}
                    print(f"  {model}: FAILED {exc}", flush=True)
        clients = Clients(url, n_clients)
        for v in variants:
            for mode in ("patch", "plane"):
                for b in batches:
                    patch_in, plane_in = requests[b]
                    model = v["model"] if mode == "patch" else v["plane"]
                    tensors = patch_in if mode == "patch" else plane_in
                    try:
                        result = clients.measure(
                            model, tensors, b, seconds, warmup=1 if smoke else 3
                        )
                    except Exception as exc:  # keep measuring the other models
                        result = {"inferences_per_s": NAN, "p50_ms": NAN, "p99_ms": NAN}
                        result["error"] = str(exc)
                        print(f"  {model} batch {b}: FAILED {exc}", flush=True)
                    row = {
                        "model": model,
                        "mode": mode,
                        "precision": v["precision"],
                        "cuda_graphs": v["graphs"],
                        "batch": b,
                        "clients": n_clients,
                        **result,
                    }
                    rows.append(row)
                    print(
                        f"  {model:<18} batch {b:>5}: {row['inferences_per_s']:>10.0f} inf/s",
                        flush=True,
                    )
    finally:
        if clients is not None:
            clients.close()
        if server is not None:
            procs.stop(procs.Child.of(server), 30)
    elapsed = time.monotonic() - started
    print()
    print(
        f"{name or 'CPU'}: argonic serve, TorchScript network, {n_clients} client processes (gRPC)"
    )
    header = f"{'model':<18} {'mode':<5} {'prec':<4} {'graphs':<6} {'batch':>5} {'inf/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max|d| vs fp32':>14} {'same class':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        c = checks[r["model"]]
        print(
            f"{r['model']:<18} {r['mode']:<5} {r['precision']:<4} {str(r['cuda_graphs']).lower():<6} "
            f"{r['batch']:>5} {r['inferences_per_s']:>10.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{c['max_abs_diff']:>14.2e} {c['same_class']:>10.4f}"
        )
    print(f"total {elapsed:.0f} s")
    summary = {
        "device": name or "cpu",
        "cpu_smoke": smoke,
        "detector": detector,
        "seconds_per_point": seconds,
        "clients": n_clients,
        "rows": rows,
        "agreement_vs_emtrk_fp32_patch": checks,
        "total_s": elapsed,
    }
    a.result = str(json_path) if json_path is not None else "-"
    harness.report(summary, a)
    shutil.rmtree(root, ignore_errors=True)
    failures = [f"{r['model']} batch {r['batch']}: {r['error']}" for r in rows if "error" in r]
    failures += [f"{m}: {c['error']}" for m, c in checks.items() if "error" in c]
    # fp32 plane mode: the same patches through the same network (batch composition aside)
    failures += [
        f"{m}: heads differ from emtrk_fp32 patch mode by {c['max_abs_diff']:.2e}"
        for m, c in checks.items()
        if m.endswith("fp32") and not c["max_abs_diff"] <= 1e-4
    ]
    if failures:
        sys.exit("bench_gpu: FAILED\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
