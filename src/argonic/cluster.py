"""Several ``argonic serve`` replicas behind one nginx gRPC load balancer, on one machine.

``Cluster`` starts N replicas on consecutive loopback ports and nginx (from the template in
deploy/nginx/) in front of them, writes a state file in its run directory and stops all of
it again.  ``cluster_up`` / ``cluster_down`` / ``cluster_status`` are the library side of
``argonic cluster up|down|status``: ``up`` leaves the processes running (each in its own
session) and returns; ``down`` finds them again through the state file.

Ports: the balancer listens on ``grpc_port``; replica i (0-based) listens for gRPC on
``replica_port + i`` and serves metrics on ``metrics_port + i``.  A Prometheus file_sd
target list of the replicas' metrics endpoints is written next to the state file.

nginx runs as a non-daemon child with ``-p <run dir> -e <run dir>/nginx-error.log``: its
pid file, logs and temp directories are in the run directory, never the system's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc

from argonic import ArgonicError

STATE_FILE = "cluster.json"
TARGETS_FILE = "prometheus-targets.json"
NGINX_CONF = "nginx.conf"
DEFAULT_RUN_DIR = ".argonic-cluster"
RESTART_BACKOFF_S = 2.0

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}, protobuf wire format


class ClusterError(ArgonicError):
    """A cluster could not be started, found or stopped."""


def nginx_template_path() -> Path | None:
    """deploy/nginx/argonic-grpc.conf.template of a source checkout (or $ARGONIC_NGINX_TEMPLATE)."""
    env = os.environ.get("ARGONIC_NGINX_TEMPLATE")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "deploy" / "nginx" / "argonic-grpc.conf.template"
        if candidate.is_file():
            return candidate
    return None


def nginx_template() -> str:
    """The nginx template: the file in deploy/nginx/, else the same text carried here (for
    installs without the source tree; tests/test_deploy.py checks the two are identical)."""
    path = nginx_template_path()
    if path is None:
        return NGINX_TEMPLATE
    try:
        return path.read_text()
    except OSError as exc:
        raise ClusterError(f"cannot read the nginx template {path}: {exc}") from None


def render_nginx_config(
    template: str,
    run_dir: Path,
    listen: str,
    upstreams: list[str],
    *,
    max_fails: int = 1,
    fail_timeout_s: int = 5,
    next_upstream_tries: int = 0,
    keepalive: int = 32,
    timeout_s: int = 300,
    max_body: str = "1g",
    workers: int = 1,
) -> str:
    """Fill the template's @NAME@ placeholders; refuse to leave any unfilled."""
    servers = "\n".join(
        f"        server {u} max_fails={max_fails} fail_timeout={fail_timeout_s}s;"
        for u in upstreams
    )
    values = {
        "RUN_DIR": str(run_dir),
        "LISTEN": listen,
        "UPSTREAM_SERVERS": servers,
        "NEXT_UPSTREAM_TRIES": str(next_upstream_tries or len(upstreams)),
        "KEEPALIVE": str(keepalive),
        "TIMEOUT_S": str(timeout_s),
        "MAX_BODY": max_body,
        "WORKERS": str(workers),
    }
    lines = []
    for line in template.splitlines():
        if not line.lstrip().startswith("#"):  # comments keep their placeholder names
            for key, value in values.items():
                line = line.replace(f"@{key}@", value)
            if "@" in line.split("#")[0]:
                raise ClusterError(f"nginx template has an unfilled placeholder: {line.strip()}")
        lines.append(line)
    return "\n".join(lines) + "\n"


def health_check(target: str, timeout_s: float = 1.0, service: str = "") -> bool:
    """True if ``grpc.health.v1.Health/Check`` at ``target`` (host:port) answers SERVING."""
    request = service.encode() and b"\x0a" + bytes([len(service.encode())]) + service.encode()
    try:
        with grpc.insecure_channel(target) as channel:
            check = channel.unary_unary(
                _HEALTH_CHECK, request_serializer=None, response_deserializer=None
            )
            return check(request, timeout=timeout_s) == _SERVING
    except grpc.RpcError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against reused pids)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parts = stat[stat.rindex(")") + 2 :].split()
    if parts[0] == "Z":  # a zombie has finished
        return None
    return int(parts[19])


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int, start_time: int | None) -> bool:
    now = _start_time(pid)
    return now is not None and (start_time is None or now == start_time)


@dataclass
class Proc:
    """One process of the cluster, as recorded in the state file."""

    role: str  # "replica" or "balancer"
    index: int
    argv: list[str]
    log: str
    pid: int = 0
    start_time: int | None = None
    grpc_port: int = 0
    metrics_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # set for this process only
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.pid > 0 and _alive(self.pid, self.start_time)

    def state(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}
        d["alive"] = self.alive()
        return d


class Cluster:
    """N ``argonic serve`` replicas + nginx on one host; a context manager in tests."""

    def __init__(
        self,
        model_repository: str | Path,
        replicas: int = 2,
        *,
        grpc_port: int = 8001,
        host: str = "127.0.0.1",
        replica_port: int | None = None,
        metrics_port: int | None = None,
        run_dir: str | Path = DEFAULT_RUN_DIR,
        serve_args: list[str] | None = None,
        nginx: str = "nginx",
        max_fails: int = 1,
        fail_timeout_s: int = 5,
        timeout_s: int = 300,
        start_timeout_s: float = 120.0,
        detach: bool = False,
        env: dict[str, str] | None = None,
        gpus: list[str] | None = None,
    ) -> None:
        if replicas < 1:
            raise ClusterError(f"replicas must be >= 1, got {replicas}")
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise ClusterError(f"model repository {model_repository} is not a directory")
        self.n_replicas = replicas
        self.host = host
        # Where nginx and the health checks connect: a wildcard address is reached on loopback.
        self.connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.grpc_port = grpc_port
        self.replica_port = replica_port if replica_port is not None else grpc_port + 1000
        self.metrics_port = metrics_port if metrics_port is not None else self.replica_port + 100
        self.run_dir = Path(run_dir).resolve()
        self.serve_args = list(serve_args or [])
        self.nginx = shutil.which(nginx) or (nginx if Path(nginx).is_file() else None)
        if self.nginx is None:
            raise ClusterError(f"nginx not found ({nginx!r}); install the Debian package nginx")
        self.max_fails = max_fails
        self.fail_timeout_s = fail_timeout_s
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.detach = detach
        self.env = {**os.environ, **(env or {})}
        # Replica i sees GPU gpus[i % len(gpus)] only (CUDA_VISIBLE_DEVICES): one per GPU.
        self.gpus = [str(g) for g in gpus or []]
        self.replicas: list[Proc] = []
        self.balancer: Proc | None = None

    # --- addresses ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """host:port of the balancer: what clients use."""
        return f"{self.host}:{self.grpc_port}"

    def replica_endpoints(self) -> list[str]:
        return [f"{self.connect_host}:{self.replica_port + i}" for i in range(self.n_replicas)]

    def metrics_endpoints(self) -> list[str]:
        return [f"{self.connect_host}:{self.metrics_port + i}" for i in range(self.n_replicas)]

    # --- starting ----------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start the replicas, wait until each answers SERVING, then start nginx and wait for it."""
        state_file = self.run_dir / STATE_FILE
        if state_file.exists():
            old = load_state(self.run_dir)
            if any(_alive(p["pid"], p.get("start_time")) for p in old["processes"]):
                raise ClusterError(
                    f"a cluster is already running from {self.run_dir} "
                    f"(endpoint {old['endpoint']}); run `argonic cluster down` first"
                )
        ports = [
            self.grpc_port,
            *range(self.replica_port, self.replica_port + self.n_replicas),
            *range(self.metrics_port, self.metrics_port + self.n_replicas),
        ]
        busy = [p for p in ports if not port_free(self.host, p)]
        if busy:
            raise ClusterError(
                f"port(s) already in use on {self.host}: {', '.join(map(str, busy))}"
            )
        (self.run_dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
        try:
            self.replicas = [self._replica(i) for i in range(self.n_replicas)]
            for proc in self.replicas:
                self._launch(proc)
            self._write_state()
            for proc in self.replicas:
                self._wait_serving(proc)
            self.balancer = self._balancer()
            self._launch(self.balancer)
            self._write_state()
            self._wait_serving(self.balancer)
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def _replica(self, i: int) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "argonic.cli",
            "serve",
            "--model-repository",
            str(self.model_repository),
            "--host",
            self.host,
            "--grpc-port",
            str(self.replica_port + i),
            "--metrics-port",
            str(self.metrics_port + i),
            *self.serve_args,
        ]
        env = {"CUDA_VISIBLE_DEVICES": self.gpus[i % len(self.gpus)]} if self.gpus else {}
        return Proc(
            "replica",
            i,
            argv,
            str(self.run_dir / f"replica-{i}.log"),
            grpc_port=self.replica_port + i,
            metrics_port=self.metrics_port + i,
            env=env,
        )

    def _balancer(self) -> Proc:
        conf = self.run_dir / NGINX_CONF
        conf.write_text(
            render_nginx_config(
                nginx_template(),
                self.run_dir,
                self.endpoint,
                self.replica_endpoints(),
                max_fails=self.max_fails,
                fail_timeout_s=self.fail_timeout_s,
                timeout_s=self.timeout_s,
            )
        )
        check = subprocess.run(
            [
                self.nginx,
                "-t",
                "-q",
                "-p",
                str(self.run_dir),
                "-e",
                str(self.run_dir / "nginx-error.log"),
                "-c",
                str(conf),
            ],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise ClusterError(f"nginx rejected {conf}: {check.stderr.strip()}")
        argv = [
            self.nginx,
            "-p",
            str(self.run_dir),
            "-e",
            str(self.run_dir / "nginx-error.log"),
            "-c",
            str(conf),
        ]
        return Proc("balancer", 0, argv, str(self.run_dir / "nginx.log"), grpc_port=self.grpc_port)

    def _launch(self, proc: Proc) -> None:
        with open(proc.log, "ab") as log:
            proc.popen = subprocess.Popen(
                proc.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **proc.env},
                start_new_session=self.detach,
            )
        proc.pid = proc.popen.pid
        proc.start_time = _start_time(proc.pid)

    def _wait_serving(self, proc: Proc) -> None:
        target = f"{self.connect_host}:{proc.grpc_port}"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ClusterError(
                    f"{proc.role} {proc.index} exited with code "
                    f"{proc.popen.poll() if proc.popen else '?'} before serving; "
                    f"last lines of {proc.log}:\n{_tail(proc.log)}"
                )
            if health_check(target, timeout_s=1.0):
                return
            time.sleep(0.2)
        raise ClusterError(
            f"{proc.role} {proc.index} not SERVING on {target} after "
            f"{self.start_timeout_s:.0f} s; see {proc.log}"
        )

    # --- faults and restarts -----------------------------------------------------------------

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to replica i (SIGKILL: a crash; SIGTERM: a drain) and reap it."""
        proc = self.replicas[i]
        if proc.alive():
            os.kill(proc.pid, sig)
        if proc.popen is not None:
            proc.popen.wait(timeout=60)
        self._write_state()

    def kill_balancer(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to nginx's master and worker processes (SIGKILL: the balancer dies)."""
        proc = self.balancer
        if proc is None or not proc.alive():
            return
        for pid in [proc.pid, *_children(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if proc.popen is not None:
            proc.popen.wait(timeout=60)
        self._write_state()

    def restart_replica(self, i: int, wait: bool = True) -> None:
        """Start replica i again on its own ports (after it died or was killed)."""
        proc = self.replicas[i]
        if proc.alive():
            raise ClusterError(f"replica {i} (pid {proc.pid}) is still running")
        self._launch(proc)
        self._write_state()
        if wait:
            self._wait_serving(proc)

    # --- stopping ----------------------------------------------------------------------------

    def stop(self, timeout_s: float = 40.0) -> dict[str, Any]:
        """Stop nginx (graceful: SIGQUIT), then drain the replicas (SIGTERM); SIGKILL stragglers."""
        procs = ([self.balancer] if self.balancer else []) + self.replicas
        summary = stop_processes(procs, timeout_s)
        self._write_state()
        return summary

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        procs = [p for p in [self.balancer, *self.replicas] if p is not None]
        return {
            "endpoint": self.endpoint,
            "host": self.connect_host,
            "grpc_port": self.grpc_port,
            "replicas": self.n_replicas,
            "replica_endpoints": self.replica_endpoints(),
            "metrics_endpoints": self.metrics_endpoints(),
            "model_repository": str(self.model_repository),
            "run_dir": str(self.run_dir),
            "nginx_conf": str(self.run_dir / NGINX_CONF),
            "prometheus_targets": str(self.run_dir / TARGETS_FILE),
            "processes": [p.state() for p in procs],
        }

    def _write_state(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.run_dir / STATE_FILE, json.dumps(self.state(), indent=2))
        targets = [
            {"targets": [m], "labels": {"replica": str(i), "job": "argonic"}}
            for i, m in enumerate(self.metrics_endpoints())
        ]
        _atomic_write(self.run_dir / TARGETS_FILE, json.dumps(targets, indent=2))


def stop_processes(procs: list[Proc], timeout_s: float = 40.0) -> dict[str, Any]:
    """Ask each live process to stop, wait, then SIGKILL what is left. Returns counts."""
    asked = []
    for proc in procs:
        if proc.alive():
            try:
                os.kill(proc.pid, signal.SIGQUIT if proc.role == "balancer" else signal.SIGTERM)
                asked.append(proc)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout_s
    killed = 0
    for proc in asked:
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.alive():
            try:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        if proc.popen is not None:
            proc.popen.wait(timeout=10)
        else:
            while proc.alive():
                time.sleep(0.05)
    return {"stopped": len(asked), "killed": killed}


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def load_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterError(
            f"no cluster state file {path} (was `argonic cluster up` run with this --run-dir?)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ClusterError(f"cluster state file {path} is not valid JSON: {exc}") from None


# --- the library side of `argonic cluster up|down|status` ---------------------------------


def cluster_up(
    model_repository: str | Path,
    replicas: int = 2,
    *,
    grpc_port: int = 8001,
    host: str = "127.0.0.1",
    replica_port: int | None = None,
    metrics_port: int | None = None,
    run_dir: str | Path = DEFAULT_RUN_DIR,
    serve_args: list[str] | None = None,
    nginx: str = "nginx",
    foreground: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Start a cluster. Detached (default): return once it serves, leaving it running.

    ``foreground``: stay, restart replicas that exit unexpectedly, and stop everything on
    SIGINT / SIGTERM (for running under a supervisor or in a terminal).
    """
    cluster = Cluster(
        model_repository,
        replicas,
        grpc_port=grpc_port,
        host=host,
        replica_port=replica_port,
        metrics_port=metrics_port,
        run_dir=run_dir,
        serve_args=serve_args,
        nginx=nginx,
        detach=not foreground,
        **kwargs,
    )
    cluster.start()
    state = cluster.state()
    print(
        f"argonic cluster: {replicas} replica(s) behind nginx; endpoint {cluster.endpoint} "
        f"(state in {cluster.run_dir / STATE_FILE})",
        file=sys.stderr,
        flush=True,
    )
    if not foreground:
        return state
    return _supervise(cluster)


def _supervise(cluster: Cluster) -> dict[str, Any]:
    stop = []
    previous = {
        s: signal.signal(s, lambda *_: stop.append(1)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    restarts = 0
    last_start = [time.monotonic()] * len(cluster.replicas)
    try:
        while not stop:
            if cluster.balancer is not None and not cluster.balancer.alive():
                raise ClusterError(f"nginx exited; see {cluster.balancer.log}")
            for i, proc in enumerate(cluster.replicas):
                # A replica that keeps crashing is restarted at most every RESTART_BACKOFF_S.
                if (
                    not proc.alive()
                    and not stop
                    and time.monotonic() - last_start[i] > RESTART_BACKOFF_S
                ):
                    print(
                        f"argonic cluster: replica {i} exited "
                        f"(code {proc.popen.poll() if proc.popen else '?'}); restarting",
                        file=sys.stderr,
                        flush=True,
                    )
                    cluster.restart_replica(i, wait=False)
                    last_start[i] = time.monotonic()
                    restarts += 1
            time.sleep(0.2)
    finally:
        summary = cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return {**cluster.state(), **summary, "restarts": restarts}


def cluster_down(run_dir: str | Path = DEFAULT_RUN_DIR, timeout_s: float = 40.0) -> dict[str, Any]:
    """Stop the cluster recorded in ``run_dir``: nginx first, then drain the replicas."""
    state = load_state(run_dir)
    procs = [
        Proc(
            p["role"],
            p["index"],
            p["argv"],
            p["log"],
            pid=p["pid"],
            start_time=p.get("start_time"),
            grpc_port=p["grpc_port"],
            metrics_port=p.get("metrics_port"),
            env=p.get("env", {}),
        )
        for p in state["processes"]
    ]
    summary = stop_processes(procs, timeout_s)
    state["processes"] = [p.state() for p in procs]
    _atomic_write(Path(run_dir) / STATE_FILE, json.dumps(state, indent=2))
    return {
        "endpoint": state["endpoint"],
        "run_dir": str(Path(run_dir).resolve()),
        **summary,
        "still_running": sum(p.alive() for p in procs),
    }


def cluster_status(run_dir: str | Path = DEFAULT_RUN_DIR) -> dict[str, Any]:
    """The state file, with each process's liveness and health (SERVING) checked now."""
    state = load_state(run_dir)
    for p in state["processes"]:
        p["alive"] = _alive(p["pid"], p.get("start_time"))
        p["serving"] = p["alive"] and health_check(f"{state['host']}:{p['grpc_port']}")
    state["serving"] = all(p["serving"] for p in state["processes"])
    return state


# deploy/nginx/argonic-grpc.conf.template, verbatim (see nginx_template).
NGINX_TEMPLATE = """\
# nginx as the load balancer in front of several `argonic serve` replicas (HTTP/2 gRPC).
#
# A template: `argonic cluster up` (argonic.cluster) fills the @NAME@ placeholders and runs
# nginx in the foreground with its own prefix, pid file, logs and temp directories in the
# cluster's run directory, so no system nginx (and no root) is involved.  To use it by hand,
# replace the placeholders; @UPSTREAM_SERVERS@ is one line per replica:
#     server 127.0.0.1:9001 max_fails=1 fail_timeout=5s;
#
# Placeholders: @RUN_DIR@ @LISTEN@ @UPSTREAM_SERVERS@ @NEXT_UPSTREAM_TRIES@
#               @KEEPALIVE@ @TIMEOUT_S@ @MAX_BODY@ @WORKERS@

daemon off;                 # stays a child of whoever starts it
worker_processes @WORKERS@;
pid @RUN_DIR@/nginx.pid;
error_log @RUN_DIR@/nginx-error.log warn;

events {
    worker_connections 4096;
}

http {
    # Every path nginx would otherwise take from its compiled-in prefix (/var/lib/nginx):
    client_body_temp_path @RUN_DIR@/nginx-tmp/client_body;
    proxy_temp_path       @RUN_DIR@/nginx-tmp/proxy;
    fastcgi_temp_path     @RUN_DIR@/nginx-tmp/fastcgi;
    uwsgi_temp_path       @RUN_DIR@/nginx-tmp/uwsgi;
    scgi_temp_path        @RUN_DIR@/nginx-tmp/scgi;

    # One line per gRPC call: which replica answered, its HTTP status and the time taken.
    # The gRPC status itself travels in trailers and is not visible here.
    log_format grpc '$time_iso8601 $remote_addr "$request" $status $request_length '
                    '$bytes_sent upstream=$upstream_addr upstream_status=$upstream_status '
                    'time=$request_time upstream_time=$upstream_response_time';
    access_log @RUN_DIR@/nginx-access.log grpc;

    upstream argonic_replicas {
        # Least outstanding requests first (what SuperSONIC's Envoy does: least_request).
        least_conn;
        # max_fails / fail_timeout: a replica that refused a connection or timed out is
        # taken out of rotation for fail_timeout, then tried again.
@UPSTREAM_SERVERS@
        # Reused HTTP/2 connections to the replicas.
        keepalive @KEEPALIVE@;
        keepalive_timeout 300s;
    }

    server {
        listen @LISTEN@ http2;      # cleartext HTTP/2 (h2c), what insecure gRPC clients speak

        # A request of 1693 patches is ~16 MB; larger batches are larger still.
        client_max_body_size @MAX_BODY@;
        client_body_buffer_size 32m;
        http2_max_concurrent_streams 1024;

        location / {
            grpc_pass grpc://argonic_replicas;
            grpc_socket_keepalive on;
            grpc_connect_timeout 2s;
            grpc_read_timeout @TIMEOUT_S@s;
            grpc_send_timeout @TIMEOUT_S@s;
            grpc_buffer_size 1m;

            # A request that cannot reach a replica (connection refused, connect timeout)
            # goes to the next one.  gRPC calls are POSTs, which nginx never re-sends once
            # they reached an upstream unless told so; inference is a pure function of its
            # input, so re-sending is safe: `non_idempotent`.  A request already streamed
            # to a replica that then dies cannot be replayed (nginx does not keep the body
            # of an HTTP/2 request): the client gets UNAVAILABLE ("status: 502") and its
            # own retry resends it.  nginx has no condition for a gRPC status either
            # (UNAVAILABLE from a draining or full replica travels in HTTP/2 trailers with
            # HTTP 200): the client's retries handle those too.
            grpc_next_upstream error timeout non_idempotent;
            grpc_next_upstream_tries @NEXT_UPSTREAM_TRIES@;
            grpc_next_upstream_timeout @TIMEOUT_S@s;
        }
    }
}
"""
