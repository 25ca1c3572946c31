"""The processes of a cluster: N ``argonic serve`` replicas and nginx, started, checked,
restarted and stopped (on the process toolkit, argonic.procs).

Replica i (0-based) listens for gRPC on ``replica_port + i`` and serves metrics on
``metrics_port + i``; nginx listens on ``grpc_port``. A process counts as started when
it answers SERVING on the gRPC health service.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from argonic import procs
from argonic.cluster.render import nginx_command, nginx_template, render_nginx_config
from argonic.cluster.state import (
    DEFAULT_RUN_DIR,
    NGINX_CONF,
    STATE_FILE,
    TARGETS_FILE,
    ClusterError,
    Proc,
    atomic_write,
    load_state,
    write_state,
)
from argonic.server.grpc import health
from argonic.settings import ServerSettings

RESTART_BACKOFF_S = 2.0
SERVER_CONFIG = "server.toml"  # the replicas' [server] table, in the run directory


def health_check(target: str, timeout_s: float = 1.0, service: str = "") -> bool:
    """True if ``grpc.health.v1.Health/Check`` at ``target`` (host:port) answers SERVING."""
    return health.check(target, service, timeout_s) == "SERVING"


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
        server_settings: ServerSettings | None = None,
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
        self.server_settings = server_settings
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

    @classmethod
    def on_free_ports(cls, model_repository: str | Path, replicas: int = 2, **kw: Any) -> Cluster:
        """A cluster on loopback ports free now: the balancer's, then the replicas' gRPC
        and metrics ports (tests and benchmarks)."""
        base = procs.free_port_block(1 + 2 * replicas)
        ports = {"grpc_port": base, "replica_port": base + 1, "metrics_port": base + 1 + replicas}
        return cls(model_repository, replicas, **ports, **kw)

    def _write_server_config(self) -> None:
        """The replicas' ``[server]`` table (every key but those the cluster sets per
        replica) as the TOML file each replica reads with ``--config``."""
        per_replica = {"model_repository", "host", "grpc_port", "metrics_port", "http_port"}
        values = (self.server_settings or ServerSettings()).model_dump(exclude=per_replica)
        lines = ["[server]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
        atomic_write(self.run_dir / SERVER_CONFIG, "\n".join(lines) + "\n")

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
            if any(procs.alive(p["pid"], p.get("start_time")) for p in old["processes"]):
                raise ClusterError(
                    f"a cluster is already running from {self.run_dir} "
                    f"(endpoint {old['endpoint']}); run `argonic cluster down` first"
                )
        ports = [
            self.grpc_port,
            *range(self.replica_port, self.replica_port + self.n_replicas),
            *range(self.metrics_port, self.metrics_port + self.n_replicas),
        ]
        busy = [p for p in ports if not procs.port_free(self.host, p)]
        if busy:
            raise ClusterError(
                f"port(s) already in use on {self.host}: {', '.join(map(str, busy))}"
            )
        (self.run_dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
        self._write_server_config()
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
        argv = procs.serve_command(
            self.model_repository,
            grpc_port=self.replica_port + i,
            metrics_port=self.metrics_port + i,
            host=self.host,
            extra=["--config", str(self.run_dir / SERVER_CONFIG)],
        )
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
            nginx_command(self.nginx, self.run_dir, conf, test=True),
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise ClusterError(f"nginx rejected {conf}: {check.stderr.strip()}")
        argv = nginx_command(self.nginx, self.run_dir, conf)
        return Proc("balancer", 0, argv, str(self.run_dir / "nginx.log"), grpc_port=self.grpc_port)

    def _launch(self, proc: Proc) -> None:
        proc.popen = procs.start(
            proc.argv, log=proc.log, env={**self.env, **proc.env}, new_session=self.detach
        )
        proc.pid = proc.popen.pid
        proc.start_time = procs.start_time(proc.pid)

    def _wait_serving(self, proc: Proc) -> None:
        target = f"{self.connect_host}:{proc.grpc_port}"
        try:
            procs.wait_until(
                lambda: health_check(target, timeout_s=1.0),
                self.start_timeout_s,
                process=proc.popen,
                interval_s=0.2,
            )
        except procs.NotReady as exc:
            if exc.returncode is None:
                raise ClusterError(
                    f"{proc.role} {proc.index} not SERVING on {target} after "
                    f"{self.start_timeout_s:.0f} s; see {proc.log}"
                ) from None
            raise ClusterError(
                f"{proc.role} {proc.index} exited with code {exc.returncode} before serving; "
                f"last lines of {proc.log}:\n{procs.log_tail(proc.log, 15, missing='(no log)')}"
            ) from None

    # --- faults and restarts -----------------------------------------------------------------

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to replica i (SIGKILL: a crash; SIGTERM: a drain) and reap it."""
        proc = self.replicas[i]
        proc.child().signal(sig)
        if proc.popen is not None:
            proc.popen.wait(timeout=60)
        self._write_state()

    def kill_balancer(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to nginx's master and worker processes (SIGKILL: the balancer dies)."""
        proc = self.balancer
        if proc is None or not proc.alive():
            return
        procs.signal_tree(proc.pid, sig)
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
        summary = stop_processes(
            ([self.balancer] if self.balancer else []) + self.replicas, timeout_s
        )
        self._write_state()
        return summary

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        processes = [p for p in [self.balancer, *self.replicas] if p is not None]
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
            "processes": [p.state() for p in processes],
        }

    def _write_state(self) -> None:
        write_state(self.run_dir, self.state(), self.metrics_endpoints())


def stop_processes(processes: list[Proc], timeout_s: float = 40.0) -> dict[str, Any]:
    """Ask each live process to stop, wait, then SIGKILL what is left. Returns counts."""
    return procs.stop([p.child() for p in processes], timeout_s)


def supervise(cluster: Cluster) -> dict[str, Any]:
    """Stay with a started cluster: restart replicas that exit (at most every
    RESTART_BACKOFF_S each), stop everything on SIGINT / SIGTERM or when nginx exits."""
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
