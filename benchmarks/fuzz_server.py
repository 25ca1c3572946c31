"""Fuzz `argonic serve` over a real socket: N mutated messages of every RPC.

Starts `argonic serve` as a child process on a tiny emtrkmichelid-like repository (plus
the shipped plane model on it), sends ``--requests`` byte-mutated copies of valid messages
of every RPC (drawn by a seeded random.Random; tests/support/fuzz.py has the seeds and the
mutations), and reports the statuses, whether any was undocumented (UNKNOWN, INTERNAL,
...), the server's log lines and tracebacks, and whether a valid request still gets the
same scores afterwards. Exit status 1 if anything is wrong.

    python benchmarks/fuzz_server.py --requests 10000 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import fuzz  # noqa: E402


def start_server(repo: Path, log_file: Path) -> tuple[subprocess.Popen, str]:
    """`argonic serve` with the default (hardened) settings on a free port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "argonic.cli", "serve", "--model-repository", str(repo)]
    command += ["--host", "127.0.0.1", "--grpc-port", str(port), "--no-metrics"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file.open("wb"))
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=120)
    return process, address


def run(requests: int, seed: int) -> dict:
    """Fuzz a fresh server; return the summary."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = fuzz.make_repository(Path(tmp) / "repo")
        log_file = Path(tmp) / "server.log"
        process, address = start_server(repo, log_file)
        try:
            options = [("grpc.max_receive_message_length", 1 << 26)]
            with grpc.insecure_channel(address, options=options) as channel:
                for _ in range(60):
                    try:
                        before = fuzz.scores(channel)
                        break
                    except AssertionError:
                        time.sleep(1)
                rng = random.Random(seed)
                codes: collections.Counter[str] = collections.Counter()
                bad: list[str] = []
                start = time.perf_counter()
                for _ in range(requests):
                    rpc = rng.choice(fuzz.RPCS)
                    mutations = fuzz.random_mutations(rng)
                    data = fuzz.mutate(rng.choice(fuzz.SEEDS[rpc]), mutations)
                    answer = fuzz.send(channel, rpc, data)
                    codes[answer.code.name] += 1
                    if answer.code not in fuzz.DOCUMENTED:
                        bad.append(f"{rpc} {mutations}: {answer.code.name} {answer.details}")
                elapsed = time.perf_counter() - start
                same = bool(np.array_equal(fuzz.scores(channel), before))
                alive = process.poll() is None
        finally:
            process.terminate()
            process.wait(60)
        log = log_file.read_text(errors="replace").splitlines()
    return {
        "requests": requests,
        "seed": seed,
        "seconds": round(elapsed, 1),
        "statuses": dict(codes.most_common()),
        "undocumented": len(bad),
        "undocumented_examples": bad[:5],
        "server_log_lines": len(log),
        "tracebacks": sum(line.startswith("Traceback") for line in log),
        "server_alive": alive,
        "same_scores_after": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    a = parser.parse_args()
    summary = run(a.requests, a.seed)
    print(json.dumps(summary, indent=2))
    ok = not summary["undocumented"] and summary["same_scores_after"] and summary["server_alive"]
    sys.exit(0 if ok and not summary["tracebacks"] else 1)


if __name__ == "__main__":
    main()
