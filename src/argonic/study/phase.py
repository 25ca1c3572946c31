"""One phase of the study: N client processes started, released together through a
barrier, their rows collected; every client is stopped when the phase ends, whatever happens."""

from __future__ import annotations

import contextlib
import queue as queue_module
import time
from typing import Any

import numpy as np

from argonic import procs
from argonic.settings import StudySettings
from argonic.study.client import client_main
from argonic.study.errors import StudyError
from argonic.study.scrape import MetricsScraper


def run_phase(
    ctx: Any,
    n: int,
    base_spec: dict[str, Any],
    cfg: StudySettings,
    n_pool: int,
    scraper: MetricsScraper,
    t_zero: float,
) -> dict[str, Any]:
    """Start N clients, release them together, collect their rows; stop them all whatever happens."""
    queue = ctx.Queue()
    barrier = ctx.Barrier(n + 1)
    clients = []
    try:
        for c in range(n):
            spec = {
                **base_spec,
                "client": c,
                "n_clients": n,
                "events": event_order(c, cfg.events, n_pool, cfg.seed),
                "barrier_timeout_s": cfg.ready_timeout_s + 60,
            }
            p = ctx.Process(
                target=client_main,
                args=(spec, barrier, queue),
                name=f"argonic-study-client-{c}",
                daemon=True,
            )
            p.start()
            clients.append(p)
        ready = _collect(queue, clients, n, "ready", cfg.ready_timeout_s, "get ready")
        del ready
        scraper.phase = n
        before = scraper.scrape()
        barrier.wait(60)
        t_release = time.monotonic() - t_zero
        messages = _collect(queue, clients, n, "rows", cfg.phase_timeout_s, "finish")
        t_end = time.monotonic() - t_zero
        after = scraper.scrape()
        for p in clients:
            p.join(30)
    except BaseException:
        with contextlib.suppress(Exception):
            barrier.abort()
        raise
    finally:
        procs.stop([procs.Child.of(p) for p in clients], timeout_s=10, kill_wait_s=5)
        queue.close()
        queue.join_thread()
    rows = [
        row for _, _, client_rows in sorted(messages, key=lambda m: m[1]) for row in client_rows
    ]
    return {
        "n_clients": n,
        "t_release_s": t_release,
        "t_end_s": t_end,
        "rows": rows,
        "before": before,
        "after": after,
    }


def event_order(client: int, k: int, pool: int, seed: int = 1) -> list[int]:
    """The ``k`` events (indices into a pool of ``pool``) client ``client`` runs, in order.

    A per-client shuffled cycle through the pool: clients do not run the same sequence in
    lockstep (emulated CPU work has no jitter of its own, so two clients with the same
    sequence would collide at the server on every event).
    """
    rng = np.random.default_rng([seed, client])
    cycles = [rng.permutation(pool) for _ in range(-(-k // pool))]
    return [int(e) for e in np.concatenate(cycles)[:k]]


def _collect(
    queue: Any, procs: list[Any], n: int, kind: str, timeout_s: float, what: str
) -> list[tuple]:
    """``n`` messages of ``kind`` from the clients; StudyError on a client error, death or timeout."""
    got: list[tuple] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        try:
            msg = queue.get(timeout=0.5)
        except queue_module.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise StudyError(
                    f"client process {dead[0].name} died (exit code {dead[0].exitcode}) "
                    f"before it could {what}"
                ) from None
            if time.monotonic() > deadline:
                raise StudyError(
                    f"{n - len(got)} of {n} clients did not {what} within {timeout_s:g} s"
                ) from None
            continue
        if msg[0] == "error":
            raise StudyError(f"client {msg[1]} failed:\n{msg[2]}")
        if msg[0] == kind:
            got.append(msg)
    return got
