"""Bytes per event: what EmTrackMichelId sends and receives per full event, per transport.

Runs the EmTrackMichelId module on simulated ProtoDUNE-SP events against an
``argonic serve`` process (shipped models/) through a NetemProxy (loopback; once without a
rate limit, once as a 1 Gbps link), for each request mode / transport:

- bytes: request + reply message sizes (the client's stats) and the TCP bytes the proxy
  carried (gRPC framing and, with gzip, the compressed sizes);
- EmTrackMichelId wall time per event, direct and behind the 1 Gbps link;
- classes vs patch fp32 (hits with a different class, largest score difference);
- the server's CPU cost of building patches in plane mode (decode + cut, timed here with
  the code the server runs) and the server's memory with and without the plane model.

    python benchmarks/bench_bytes.py [--events-file ev.h5] [--events 1] [--json out.json]
    python benchmarks/bench_bytes.py --network linear ...   # isolate the link's cost

``--network linear`` serves, in a temporary repository, a stand-in network with the same
inputs and outputs (one linear layer per head: ~1 ms per 1,000 patches) next to the
shipped plane-model config: the module time is then mostly transport, so the emulated
link's cost shows above this shared machine's noise.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import harness
import numpy as np

from argonic.detector.eventfile import EventFile
from argonic.inference.remote import RemoteInterface
from argonic.patches import cut_patches, decode_plane, encode_plane, plane_image
from argonic.reco.chain import reconstruct_hits
from argonic.reco.module import EmTrackMichelId
from argonic.reco.simulation import simulate_file
from argonic.study.netem import NetemProxy

CONFIGS = {
    "patch fp32": {},
    "patch fp16": {"transport": "fp16"},
    "patch gzip (gRPC)": {"compression": "gzip"},
    "patch lz4": {"tensor_compression": "lz4"},
    "patch zstd": {"tensor_compression": "zstd"},
    "patch fp16 + zstd": {"transport": "fp16", "tensor_compression": "zstd"},
    "plane": {"request_mode": "plane"},
    "plane zstd": {"request_mode": "plane", "tensor_compression": "zstd"},
}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def linear_repository(root: Path) -> Path:
    """A repository with a linear stand-in "emtrkmichelid" and the shipped plane-model config."""
    import shutil

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from argonic.repository import shipped_repository

    rng = np.random.default_rng(0)
    weights = {
        "w3": rng.normal(0, 0.05, (2304, 3)),
        "b3": rng.normal(0, 0.1, 3),
        "w1": rng.normal(0, 0.05, (2304, 1)),
        "b1": rng.normal(0, 0.1, 1),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 2304], np.int64), "flat"))
    nodes = [
        helper.make_node("Reshape", ["main_input", "flat"], ["x"]),
        helper.make_node("MatMul", ["x", "w3"], ["l3"]),
        helper.make_node("Add", ["l3", "b3"], ["z3"]),
        helper.make_node("Softmax", ["z3"], ["em_trk_none_netout"], axis=-1),
        helper.make_node("MatMul", ["x", "w1"], ["l1"]),
        helper.make_node("Add", ["l1", "b1"], ["z1"]),
        helper.make_node("Sigmoid", ["z1"], ["michel_netout"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("main_input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [
            helper.make_tensor_value_info("em_trk_none_netout", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("michel_netout", TensorProto.FLOAT, ["N", 1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    shipped = shipped_repository()
    for name in ("emtrkmichelid", "emtrkmichelid_plane"):
        (root / name).mkdir(parents=True)
        shutil.copy(shipped / name / "config.pbtxt", root / name / "config.pbtxt")
    (root / "emtrkmichelid" / "1").mkdir()
    onnx.save(model, str(root / "emtrkmichelid" / "1" / "model.onnx"))
    return root


def run_config(
    events, hits, address: str, overrides: dict, link_gbps: float | None, repository: str
) -> dict:
    """EmTrackMichelId over every event through a proxy; bytes and time per event."""
    scores = []
    with (
        NetemProxy(address, link_gbps=link_gbps) as proxy,
        RemoteInterface(
            {
                "batch_size": 1693,
                "remote": {
                    "servers": [proxy.address],
                    "server_stats": "off",
                    "model_repository": repository,
                    **overrides,
                },
            }
        ) as remote,
    ):
        remote.connect()
        up0, down0 = proxy.stats.bytes_up, proxy.stats.bytes_down
        module = EmTrackMichelId(remote, events.detector)
        t0 = time.perf_counter()
        for i, h in enumerate(hits):
            scores.append(module.produce(events[i], h))
        wall = time.perf_counter() - t0
        total = remote.stats()["total"]
        n = len(hits)
        return {
            "scores": scores,
            "module_s": wall / n,
            "patches_s": module.seconds_patches / n,
            "sent_bytes": total["bytes_sent"] / n,
            "received_bytes": total["bytes_received"] / n,
            "tcp_up_bytes": (proxy.stats.bytes_up - up0) / n,
            "tcp_down_bytes": (proxy.stats.bytes_down - down0) / n,
            "requests": total["requests"] / n,
            "serialise_s": total["serialise_s"] / n,
        }


def server_patch_cost(events, hits) -> dict:
    """Per event: client-side plane encoding, and the server's decode + cut (plane mode)."""
    encode = decode = cut = 0.0
    for i, h in enumerate(hits):
        event = events[i]
        frames = {(f.tpc, f.plane): f for f in event.frames}
        key = h.tpc.astype(np.int64) * 8 + h.plane
        for k in np.unique(key):
            tpc, plane = divmod(int(k), 8)
            idx = np.flatnonzero(key == k)
            image = plane_image(frames[(tpc, plane)], events.detector.planes[plane].calib_c)
            t0 = time.perf_counter()
            tensors = encode_plane(image, h.wire[idx], h.peak_tick[idx])
            t1 = time.perf_counter()
            decoded, wire, tick = decode_plane(tensors)
            t2 = time.perf_counter()
            for s in range(0, len(wire), 256):
                cut_patches(decoded, wire[s : s + 256], tick[s : s + 256])
            t3 = time.perf_counter()
            encode, decode, cut = encode + t1 - t0, decode + t2 - t1, cut + t3 - t2
    n = len(hits)
    return {"client_encode_s": encode / n, "server_decode_s": decode / n, "server_cut_s": cut / n}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events-file", default=None, help="ProtoDUNE-SP events (default: simulate)")
    p.add_argument("--events", type=int, default=1, help="events to simulate when no file is given")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    p.add_argument("--link-gbps", type=float, default=1.0, help="emulated link (0: skip)")
    p.add_argument(
        "--link-configs",
        default="patch fp32,patch zstd,plane,plane zstd",
        help="configurations also run behind the emulated link",
    )
    p.add_argument(
        "--network",
        choices=("shipped", "linear"),
        default="shipped",
        help="the served network: the shipped CNN, or a linear stand-in (see above)",
    )
    a = p.parse_args()
    tmp = tempfile.TemporaryDirectory()
    repository = (
        str(linear_repository(Path(tmp.name) / "models"))
        if a.network == "linear"
        else str(Path(__file__).resolve().parents[1] / "models")
    )
    path = a.events_file
    if path is None:
        path = os.path.join(tmp.name, "ev.h5")
        simulate_file(
            path, detector="protodune-sp", n_events=a.events, seed=a.seed, show_progress=False
        )
    results: dict = {
        "network": a.network,
        "events_file": str(path),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "configs": {},
    }
    with EventFile(path) as events:
        hits = [reconstruct_hits(e.frames, e.hits) for e in events]
        results["hits_per_event"] = float(np.mean([len(h) for h in hits]))
        results["fp32_patch_bytes_per_event"] = results["hits_per_event"] * 48 * 48 * 4
        results["server_patch_cost"] = server_patch_cost(events, hits)
        with harness.served(repository, ["--load-model", "emtrkmichelid"]) as server:
            results["server_rss_mb_network_only"] = _rss_mb(server.process.pid)
        server = harness.Server.argonic(Path(repository))
        address = server.url
        results["server_rss_mb_with_plane_model"] = _rss_mb(server.process.pid)
        try:
            baseline = None
            names = [c.strip() for c in a.configs.split(",")]
            link_names = {c.strip() for c in a.link_configs.split(",")} if a.link_gbps else set()
            for name in names:
                row = run_config(events, hits, address, CONFIGS[name], None, repository)
                if a.link_gbps and name in link_names:
                    row["link_module_s"] = run_config(
                        events, hits, address, CONFIGS[name], a.link_gbps, repository
                    )["module_s"]
                scores = np.concatenate(row.pop("scores"))
                if baseline is None:
                    baseline = scores
                row["hits_with_different_class"] = int(
                    (np.argmax(scores[:, :3], 1) != np.argmax(baseline[:, :3], 1)).sum()
                )
                row["max_abs_score_difference"] = float(np.abs(scores - baseline).max())
                results["configs"][name] = row
                print(
                    f"{name:<20} sent {row['sent_bytes'] / 1e6:9.2f} MB  recv {row['received_bytes'] / 1e6:6.2f} MB"
                    f"  tcp {(row['tcp_up_bytes'] + row['tcp_down_bytes']) / 1e6:9.2f} MB"
                    f"  module {row['module_s']:6.2f} s"
                    + (
                        f"  @{a.link_gbps:g}Gbps {row['link_module_s']:6.2f} s"
                        if "link_module_s" in row
                        else ""
                    )
                    + f"  diff-class {row['hits_with_different_class']}"
                    f"  max|d| {row['max_abs_score_difference']:.2g}",
                    flush=True,
                )
            results["server_rss_mb_with_plane_model_after_runs"] = _rss_mb(server.process.pid)
        finally:
            server.stop()
    print(json.dumps({k: v for k, v in results.items() if k != "configs"}, indent=1))
    harness.report(results, a)
    tmp.cleanup()


if __name__ == "__main__":
    main()
