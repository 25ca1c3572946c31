"""Remote vs local inference time for one event's patches, and bytes on the wire.

Starts `argonic serve` on 127.0.0.1 (a free port) with the shipped model repository, then
times ``predict`` on the same patches: local ONNX Runtime in this process, and the remote
interface blocking ("sync") and pipelined ("async") at each batch size (the paper's 235
and 1693). Checks every remote result against the local one. On a small machine the
server and the client share the cores: the remote figures then include that contention.

    python benchmarks/bench_remote.py --patches 55000
"""

from __future__ import annotations

import time

import harness
import numpy as np

from argonic.inference import make_interface

# (header, result key, width, format) of the printed table
COLUMNS = [
    ("interface", "interface", 18, ""),
    ("batch", "batch_size", 6, ""),
    ("s", "seconds", 8, ".2f"),
    ("patches/s", "patches_per_s", 11, ".0f"),
    ("vs local", "vs_local", 9, ".2f"),
    ("requests", "requests", 9, ""),
    ("MB sent", "mb_sent", 9, ".1f"),
    ("ser s", "serialise_s", 7, ".2f"),
    ("wait s", "wait_s", 8, ".2f"),
    ("deser s", "deserialise_s", 8, ".2f"),
    ("srv queue s", "server_queue_s", 12, ".2f"),
    ("srv compute s", "server_compute_s", 14, ".2f"),
    ("max|diff|", "max_abs_diff_vs_local", 10, ".1e"),
]


def realistic_patches(n: int, seed: int = 0) -> np.ndarray:
    """Mostly-empty patches with a track-like ridge of charge, like those around real hits."""
    rng = np.random.default_rng(seed)
    patches = np.zeros((n, 48, 48, 1), np.float32)
    wires = np.arange(48)
    slopes, offsets = rng.normal(0, 1, n), rng.normal(24, 3, n)
    drift = np.clip(np.rint(offsets[:, None] + slopes[:, None] * (wires - 24)), 0, 47).astype(int)
    charge = rng.gamma(2.0, 3.0, (n, 48)).astype(np.float32)
    for width in (-1, 0, 1):  # a three-bin-wide ridge
        patches[np.arange(n)[:, None], wires, np.clip(drift + width, 0, 47), 0] = charge * (
            1 - 0.5 * abs(width)
        )
    patches += rng.normal(0, 0.1, patches.shape).astype(np.float32)
    return np.clip(patches, -5, 15)


def time_predict(interface, patches: np.ndarray) -> tuple[float, np.ndarray]:
    """Wall time of one predict (after a warm-up call on a few patches)."""
    interface.predict(patches[:64])
    start = time.perf_counter()
    scores = interface.predict(patches)
    return time.perf_counter() - start, scores


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--patches", type=int, default=55_000, help="patches per event")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[235, 1693])
    parser.add_argument("--max-in-flight", type=int, default=2, help="async requests in flight")
    parser.add_argument("--compression", default="none", help="none, gzip or deflate")
    parser.add_argument(
        "--shared-memory",
        choices=("off", "auto", "both"),
        default="off",
        help="[inference.remote] shared_memory (both: measure off and auto)",
    )
    args = parser.parse_args()
    shm_settings = ["off", "auto"] if args.shared_memory == "both" else [args.shared_memory]

    patches = realistic_patches(args.patches)
    results: list[dict] = []
    with make_interface({"interface": "local", "batch_size": 256}) as local:
        seconds, truth = time_predict(local, patches)
    results.append(
        {
            "interface": "local onnxruntime",
            "batch_size": 256,
            "seconds": seconds,
            "patches_per_s": len(patches) / seconds,
        }
    )

    with harness.served() as server:
        address = server.url
        for batch_size, mode, shm in (
            (b, m, s) for b in args.batch_sizes for m in ("sync", "async") for s in shm_settings
        ):
            remote = {
                "servers": [address],
                "mode": mode,
                "max_in_flight": args.max_in_flight,
                "compression": args.compression,
                "server_stats": "call",
                "timeout_s": 600.0,
                "shared_memory": shm,
            }
            with make_interface(
                {"interface": "remote", "batch_size": batch_size, "remote": remote}
            ) as interface:
                seconds, scores = time_predict(interface, patches)
                stats = interface.stats()["last_call"]
            max_diff = float(np.abs(scores - truth).max())
            if max_diff > 1e-4:
                raise SystemExit(
                    f"remote {mode} batch {batch_size} differs from local by {max_diff}"
                )
            results.append(
                {
                    "interface": f"remote {mode}" + (" shm" if shm == "auto" else ""),
                    "batch_size": batch_size,
                    "seconds": seconds,
                    "patches_per_s": len(patches) / seconds,
                    "max_abs_diff_vs_local": max_diff,
                    **{
                        k: stats[k]
                        for k in (
                            "requests",
                            "bytes_sent",
                            "bytes_received",
                            "serialise_s",
                            "wait_s",
                            "deserialise_s",
                        )
                    },
                    "server_queue_s": stats["server"].get("queue_s", 0.0),
                    "server_compute_s": stats["server"].get("compute_infer_s", 0.0),
                }
            )

    harness.report({"patches": len(patches), "results": results}, args)
    print(f"{len(patches)} patches, server {address} (argonic serve, same machine)")
    local_s = results[0]["seconds"]
    for r in results:
        r["vs_local"] = local_s / r["seconds"]
        r["mb_sent"] = r.get("bytes_sent", 0) / 1e6
    print(
        "".join(
            f"{header:<{width}}" if key == "interface" else f"{header:>{width}}"
            for header, key, width, _ in COLUMNS
        )
    )
    for r in results:
        print(
            "".join(
                f"{r.get(key, 0):{'<' if key == 'interface' else '>'}{width}{fmt}}"
                for _, key, width, fmt in COLUMNS
            )
        )


if __name__ == "__main__":
    main()
