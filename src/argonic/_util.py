"""Small shared helpers: progress on stderr, atomic output files, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], total: int | None, label: str, enabled: bool = True
) -> Iterator[T]:
    """Yield items while drawing a one-line progress bar with rate and ETA on stderr."""
    show = enabled and sys.stderr.isatty() or os.environ.get("ARGONIC_PROGRESS") == "1"
    start = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        if show:
            elapsed = time.perf_counter() - start
            if total:
                eta = elapsed / done * (total - done)
                bar = "#" * int(30 * done / total)
                sys.stderr.write(
                    f"\r{label} [{bar:<30}] {done}/{total} {elapsed:.1f}s eta {eta:.1f}s"
                )
            else:
                sys.stderr.write(f"\r{label} {done} {elapsed:.1f}s")
            sys.stderr.flush()
    if show and done:
        sys.stderr.write("\n")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Give a temporary path next to ``path``; move it into place only if the block succeeds.

    A failed or interrupted run therefore never leaves a file that looks complete.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for summaries: numpy scalars and arrays, paths."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dump_json(obj: Any) -> str:
    """Serialise a summary for ``--json`` (numpy scalars and arrays become plain JSON)."""
    return json.dumps(obj, indent=2, default=json_default)
