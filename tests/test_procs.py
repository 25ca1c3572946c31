"""The process toolkit (argonic.procs) against real processes: free ports, readiness, stop
with SIGTERM then SIGKILL, children and process groups reaped, death with the parent.

Truth is /proc and the kernel (a port bound for real, a pid gone from /proc), never the
toolkit's own bookkeeping.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from argonic import procs

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

SLEEPER = "import time; time.sleep(120)"
# ignores SIGTERM, starts a grandchild in the same process group, prints its pid
STUBBORN_PARENT = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(grandchild.pid, flush=True)
time.sleep(120)
"""
# exits at once on SIGTERM, leaving behind a grandchild in its own session (a would-be orphan)
CARELESS_PARENT = """
import subprocess, sys, time
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
)
print(grandchild.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    """Not in /proc, or a zombie (finished, waiting for its parent or init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _first_line(log: Path, process: subprocess.Popen[bytes]) -> str:
    procs.wait_until(lambda: log.exists() and b"\n" in log.read_bytes(), 30, process=process)
    return log.read_text().splitlines()[0]


def _start_python(code: str, log: Path | None = None, **kwargs: bool) -> subprocess.Popen[bytes]:
    return procs.start([sys.executable, "-c", code], log=log, **kwargs)


# --- ports -----------------------------------------------------------------------------------


def test_free_port_is_bindable_and_port_free_sees_a_listener() -> None:
    port = procs.free_port()
    assert procs.port_free("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not procs.port_free("127.0.0.1", port)


# --- readiness -------------------------------------------------------------------------------


def test_wait_until_returns_once_ready(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    process = _start_python(
        f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); {SLEEPER}"
    )
    try:
        procs.wait_until(marker.exists, 30, process=process)
    finally:
        procs.kill(procs.Child.of(process))
    assert process.returncode == -signal.SIGKILL


def test_wait_until_times_out_with_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(procs.NotReady, match=r"^test server was not ready after 0.3 s$") as info:
        procs.wait_until(lambda: False, 0.3, what="test server", interval_s=0.05)
    assert info.value.returncode is None and time.monotonic() - started >= 0.3


def test_wait_until_stops_when_the_process_exits() -> None:
    process = _start_python("import sys; sys.exit(3)")
    with pytest.raises(
        procs.NotReady, match="server exited with code 3 before it was ready"
    ) as info:
        procs.wait_until(lambda: False, 30, process=process, what="server")
    assert info.value.returncode == 3


def test_start_names_a_missing_program() -> None:
    with pytest.raises(procs.ProcessError, match="cannot start /no/such/program"):
        procs.start(["/no/such/program"])


# --- stopping --------------------------------------------------------------------------------


def test_a_child_that_ignores_sigterm_gets_sigkill_and_its_children_go_too(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = _start_python(STUBBORN_PARENT, log)
    grandchild = int(_first_line(log, process))
    assert grandchild in procs.descendants(process.pid)
    assert procs.children(process.pid) == [grandchild]
    started = time.monotonic()
    summary = procs.stop(procs.Child.of(process), timeout_s=0.5)
    assert summary == {"stopped": 1, "killed": 1}
    assert time.monotonic() - started >= 0.5  # the grace time was given
    assert process.returncode == -signal.SIGKILL  # reaped: returncode known
    assert _gone(process.pid) and _gone(grandchild)


def test_a_graceful_child_stops_on_sigterm_and_leaves_no_orphan(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = _start_python(CARELESS_PARENT, log)
    grandchild = int(_first_line(log, process))
    summary = procs.stop(procs.Child.of(process), timeout_s=30)
    assert summary == {"stopped": 1, "killed": 0}
    assert process.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild), "the grandchild outlived the stop"


def test_group_stop_reaches_every_member_of_the_process_group(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = _start_python(STUBBORN_PARENT, log, new_session=True)
    grandchild = int(_first_line(log, process))
    assert os.getpgid(process.pid) == process.pid == os.getpgid(grandchild)
    procs.kill(procs.Child.of(process, group=True))
    assert _gone(process.pid) and _gone(grandchild)


def test_stop_signal_zero_only_waits_then_kills() -> None:
    process = _start_python(SLEEPER)
    summary = procs.stop(procs.Child.of(process, stop_signal=0), timeout_s=0.3)
    assert summary == {"stopped": 1, "killed": 1} and process.returncode == -signal.SIGKILL


def test_a_reused_pid_is_never_signalled() -> None:
    process = _start_python(SLEEPER)
    try:
        now = procs.start_time(process.pid)
        assert now is not None and procs.alive(process.pid, now)
        impostor = procs.Child(process.pid, now + 1)  # same pid, another start time
        assert not impostor.alive() and not impostor.signal(signal.SIGKILL)
        assert procs.stop(impostor, timeout_s=0.1) == {"stopped": 0, "killed": 0}
        assert process.poll() is None
    finally:
        procs.kill(procs.Child.of(process))


def _sleep() -> None:
    time.sleep(120)


def test_multiprocessing_children_are_stopped_and_joined() -> None:
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_sleep, daemon=True)
    p.start()
    summary = procs.stop([procs.Child.of(p)], timeout_s=10)
    assert summary == {"stopped": 1, "killed": 0}
    assert p.exitcode == -signal.SIGTERM and _gone(p.pid)


# --- dying with the parent -------------------------------------------------------------------

MIDDLE = """
import sys
from argonic import procs
child = procs.start([sys.executable, "-c", "import time; time.sleep(120)"], die_with_parent=True)
print(child.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_die_with_parent_dies_when_its_parent_is_killed() -> None:
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    child = 0
    try:
        assert middle.stdout is not None
        child = int(middle.stdout.readline())
        # the bootstrap became the command itself (execvp): same pid, the command's argv
        procs.wait_until(lambda: b"time.sleep" in Path(f"/proc/{child}/cmdline").read_bytes(), 30)
        middle.kill()  # no cleanup in the parent: only the kernel can stop the child
        middle.wait(10)
        procs.wait_until(lambda: _gone(child), 15, what="the orphaned child")
    finally:
        procs.kill(procs.Child.of(middle))
        if child and not _gone(child):
            os.kill(child, signal.SIGKILL)


# --- the serve command and the layer ---------------------------------------------------------


def test_serve_command_runs_argonic_cli_serve_in_this_interpreter() -> None:
    argv = procs.serve_command("models", grpc_port=9001, metrics_port=None, extra=["--json"])
    assert argv[:4] == [sys.executable, "-m", "argonic.cli", "serve"]
    assert argv[argv.index("--grpc-port") + 1] == "9001"
    assert "--no-metrics" in argv and argv[-1] == "--json"
    argv = procs.serve_command("models", grpc_port=9001, metrics_port=9002, host="0.0.0.0")
    assert argv[argv.index("--metrics-port") + 1] == "9002" and "0.0.0.0" in argv


def test_procs_imports_no_higher_layer() -> None:
    """A low module: importing it loads no other argonic module (it starts `argonic serve`
    as a command, never imports it)."""
    code = "import sys, argonic.procs; print(sorted(m for m in sys.modules if 'argonic' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['argonic', 'argonic.procs']"
