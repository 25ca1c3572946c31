"""Small shared helpers: progress bars on stderr (rich), atomic output files, JSON output,
giving freed heap memory back to the OS."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _progress_shown(enabled: bool) -> bool:
    """Progress goes to a terminal only (``ARGONIC_PROGRESS=1`` forces it, for tests)."""
    return enabled and (sys.stderr.isatty() or os.environ.get("ARGONIC_PROGRESS") == "1")


class Bar:
    """One progress bar of a :class:`Bars` display (does nothing when progress is off)."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more units done."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: float, total: float | None = None) -> None:
        """Set the units done (and the total, when it becomes known)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)


class Bars:
    """Progress bars on stderr (rich), shown only on a terminal; a context manager.

    ``bars.add(label, total, unit)`` gives a :class:`Bar` to advance; bars stay on screen
    when the block ends. Disabled (``enabled`` False or stderr not a terminal), it is free.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._progress = None
        if _progress_shown(enabled):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            forced = not sys.stderr.isatty()
            self._progress = Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True, force_terminal=forced or None),
            )

    def add(self, label: str, total: float | None, unit: str = "") -> Bar:
        """A new bar; ``total`` None until known (see :meth:`Bar.update`)."""
        if self._progress is None:
            return Bar()
        return Bar(self._progress, self._progress.add_task(label, total=total, unit=unit))

    def __enter__(self) -> Bars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def progress(
    items: Iterable[T], total: int | None, label: str, enabled: bool = True, unit: str = ""
) -> Iterator[T]:
    """Yield items while a progress bar (rate, elapsed, ETA) counts them on stderr."""
    with Bars(enabled) as bars:
        bar = bars.add(label, total, unit)
        for item in items:
            yield item
            bar.advance()


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


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_free_memory() -> bool:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``): after many large
    buffers are freed, glibc keeps their pages and the process stays at its peak RSS.
    False where there is no glibc."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def raise_open_files_limit(need: int | None = None) -> tuple[int, int]:
    """Raise this process's soft limit of open files to ``need`` (None: to the hard limit),
    never above the hard limit; return (soft, hard) as they are now. A server with thousands
    of client connections needs one descriptor per connection (as nginx's worker_rlimit_nofile
    or Go's runtime do, the soft limit is raised rather than left at a distribution's 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if need is None else need
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft, hard
