"""The process toolkit: free ports, starting `argonic serve` (or any command), waiting until
it is ready, and stopping processes (their stop signal, then SIGKILL) with their children.

One implementation for everything that runs processes: the fallback server
(argonic.inference.local_server), `argonic cluster` (argonic.cluster), `argonic study` and the
tests. It is a low module: the standard library and ``ArgonicError`` only. `argonic serve`
is started as ``python -m argonic.cli serve ...``, never imported.

Liveness comes from /proc (Linux): a pid is alive if /proc/<pid>/stat exists, is not a
zombie and, when a start time was recorded, still has that start time (a reused pid is
never mistaken for ours or signalled). Guarantees of ``stop``: every process it is given
is gone when it returns (SIGKILL after the grace time), and so is every descendant it
found before signalling: no orphans stay behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from argonic import ArgonicError

# Run by ``start(..., die_with_parent=True)`` before the real command: ask the kernel to
# send SIGTERM when the parent dies (PR_SET_PDEATHSIG = 1; kept across execve), make sure
# the parent did not die before that call, then become the command.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != parent:
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


class ProcessError(ArgonicError):
    """A process could not be started, did not become ready, or could not be stopped."""


class NotReady(ProcessError):
    """``wait_until`` gave up: the process exited (``returncode`` set) or time ran out."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


# --- ports ----------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(n: int, host: str = "127.0.0.1", start: int = 20000, stop: int = 32000) -> int:
    """A random port p below the ephemeral range with p .. p+n-1 all free on ``host`` now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(start, stop - n)
        if all(port_free(host, base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no block of {n} free ports found")


# --- /proc ----------------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":  # a zombie has finished
        return None
    return int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``started`` is given, is the same process."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process, from one walk of /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and fields[0] != "Z":
                out[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return out


def children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid``."""
    return sorted(p for p, (parent, _) in _processes().items() if parent == pid)


def descendants(pid: int, *, group: bool = False) -> list[int]:
    """Pids of ``pid``'s children, their children and so on (parents before children);
    ``group``: also the other members of the process group ``pid`` leads, and theirs."""
    table = _processes()
    by_parent: dict[int, list[int]] = {}
    for p, (parent, _) in table.items():
        by_parent.setdefault(parent, []).append(p)
    out: list[int] = []
    todo = [pid]
    if group:
        todo += sorted(p for p, (_, pgrp) in table.items() if pgrp == pid and p != pid)
        out += todo[1:]
    while todo:
        kids = [k for k in sorted(by_parent.get(todo.pop(0), [])) if k not in out]
        out.extend(kids)
        todo.extend(kids)
    return out


def signal_tree(pid: int, sig: int) -> int:
    """Send ``sig`` to ``pid`` and all its descendants; return how many got it."""
    sent = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)
            sent += 1
    return sent


# --- starting -------------------------------------------------------------------------------


def serve_command(
    model_repository: str | os.PathLike[str],
    *,
    grpc_port: int,
    metrics_port: int | None = 0,
    host: str = "127.0.0.1",
    extra: Iterable[str] = (),
    http_port: int | None = 0,
) -> list[str]:
    """The command line of `argonic serve` in this interpreter (``metrics_port`` or
    ``http_port`` None: no /metrics or no HTTP/REST; 0: a port chosen by the server)."""
    metrics = ["--no-metrics"] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    http = ["--allow-http", "false"] if http_port is None else ["--http-port", str(http_port)]
    return [
        sys.executable,
        "-m",
        "argonic.cli",
        "serve",
        "--model-repository",
        str(model_repository),
        "--host",
        host,
        "--grpc-port",
        str(grpc_port),
        *metrics,
        *http,
        *extra,
    ]


def start(
    argv: list[str],
    *,
    log: str | os.PathLike[str] | IO[bytes] | None = None,
    env: dict[str, str] | None = None,
    new_session: bool = False,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdin closed and stdout + stderr to ``log`` (a path, appended to;
    an open binary file; or None: discarded).

    ``new_session``: the child leads its own session and process group (a Ctrl-C at the
    terminal does not reach it; ``Child(group=True)`` signals the whole group).
    ``die_with_parent``: on Linux the kernel sends the child SIGTERM when this process dies
    (``PR_SET_PDEATHSIG``; strictly, when the *thread* that started it ends: start it from
    a long-lived thread).
    """
    if die_with_parent:
        argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    with contextlib.ExitStack() as stack:
        out: Any = subprocess.DEVNULL
        if isinstance(log, (str, os.PathLike)):
            out = stack.enter_context(open(log, "ab"))  # the child has its own copy
        elif log is not None:
            out = log
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=new_session,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {argv[0]}: {exc}") from None


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    what: str = "process",
    interval_s: float = 0.1,
) -> None:
    """Call ``ready()`` every ``interval_s`` until it returns True.

    Raises NotReady when ``process`` exits first (with its ``returncode``) or when
    ``timeout_s`` passes; exceptions from ``ready`` itself propagate.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(
                f"{what} exited with code {process.returncode} before it was ready",
                process.returncode,
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise NotReady(f"{what} was not ready after {timeout_s:g} s")
        time.sleep(interval_s)


def log_tail(path: str | os.PathLike[str], lines: int = 20, missing: str = "") -> str:
    """The last ``lines`` lines a process wrote to its log file (``missing`` if unreadable)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return missing


# --- stopping -------------------------------------------------------------------------------


@dataclass
class Child:
    """A process to stop: a pid (with its start time, against pid reuse) and, when this
    process started it, its handle (a ``subprocess.Popen`` or a ``multiprocessing.Process``)
    so that it is reaped."""

    pid: int
    started: int | None = None
    handle: Any = field(default=None, repr=False)
    group: bool = False  # it leads its own process group: signal the whole group
    stop_signal: int = signal.SIGTERM

    @classmethod
    def of(cls, handle: Any, *, group: bool = False, stop_signal: int = signal.SIGTERM) -> Child:
        """The Child for a ``subprocess.Popen`` or a started ``multiprocessing.Process``."""
        return cls(handle.pid, start_time(handle.pid), handle, group, stop_signal)

    def alive(self) -> bool:
        if isinstance(self.handle, subprocess.Popen):
            return self.handle.poll() is None
        if self.handle is not None:  # multiprocessing.Process
            return bool(self.handle.is_alive())
        return self.pid > 0 and alive(self.pid, self.started)

    def signal(self, sig: int) -> bool:
        """Send ``sig`` (to the group if ``group``); False if the process is gone."""
        if not self.alive():
            return False
        try:
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for it to end (reaping it if it is ours); True if gone."""
        if isinstance(self.handle, subprocess.Popen):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.handle.wait(max(timeout_s, 0.0))
        elif self.handle is not None:
            self.handle.join(max(timeout_s, 0.0))
        else:
            deadline = time.monotonic() + timeout_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        return not self.alive()


def stop(
    targets: Child | Iterable[Child], timeout_s: float = 10.0, kill_wait_s: float = 10.0
) -> dict[str, int]:
    """Stop processes and everything they started.

    Each live target gets its ``stop_signal`` at once (so they stop in parallel; 0 sends
    nothing: it was asked to stop some other way); those still running ``timeout_s`` later
    get SIGKILL and are waited for up to ``kill_wait_s``. The target's descendants (and,
    for ``group``, its process group) found before the signals and again before SIGKILL
    that are still alive at the end get SIGKILL too: no orphans. Returns how many were
    asked to stop and how many had to be killed.
    """
    targets = [targets] if isinstance(targets, Child) else list(targets)
    # recorded before signalling: afterwards orphans no longer point to their parent
    family = [_family(c) for c in targets if c.alive()]
    asked = [c for c in targets if c.signal(c.stop_signal)]
    deadline = time.monotonic() + timeout_s
    killed = 0
    for c in asked:
        if c.wait(deadline - time.monotonic()):
            continue
        family.append(_family(c))
        if c.signal(signal.SIGKILL):
            killed += 1
        c.wait(kill_wait_s)
    orphans = [o for members in family for o in members if o.alive()]
    for orphan in orphans:
        orphan.signal(signal.SIGKILL)
    for orphan in orphans:
        orphan.wait(kill_wait_s)
    return {"stopped": len(asked), "killed": killed}


def _family(c: Child) -> list[Child]:
    """The live descendants (and group members) of ``c``, with their start times."""
    members = [Child(p, start_time(p)) for p in descendants(c.pid, group=c.group)]
    return [m for m in members if m.started is not None]


def kill(targets: Child | Iterable[Child], wait_s: float = 10.0) -> None:
    """SIGKILL processes (a crash, no grace) and their descendants; reap them."""
    targets = [targets] if isinstance(targets, Child) else list(targets)
    stop([Child(c.pid, c.started, c.handle, c.group, signal.SIGKILL) for c in targets], wait_s)


# --- multiprocessing's helper processes ------------------------------------------------------


def multiprocessing_helpers() -> tuple[bool, bool]:
    """Whether multiprocessing's forkserver and resource tracker processes are running now."""
    from multiprocessing import forkserver, resource_tracker

    fs = getattr(forkserver._forkserver, "_forkserver_pid", None) is not None  # type: ignore[attr-defined]
    rt = getattr(resource_tracker._resource_tracker, "_pid", None) is not None  # type: ignore[attr-defined]
    return fs, rt


def stop_multiprocessing_helpers(running_before: tuple[bool, bool], tracker: bool = True) -> None:
    """Stop the forkserver and resource tracker if they were not running before
    (``running_before`` from ``multiprocessing_helpers``): they would otherwise live until
    this process exits. ``tracker=False`` leaves the tracker alone (after an error a
    traceback may still hold semaphores it would unlink under their owners)."""
    import gc
    from multiprocessing import forkserver, resource_tracker

    gc.collect()

    fs_before, rt_before = running_before
    if not fs_before:
        with contextlib.suppress(Exception):
            forkserver._forkserver._stop()  # type: ignore[attr-defined]
    if not rt_before and tracker:
        with contextlib.suppress(Exception):
            resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
