"""The nginx configuration of a cluster: the template (package data) and its rendering.

The template, ``argonic-grpc.conf.template`` next to this module, is the one copy: it is
installed with the package and deploy/nginx/ links to it. ``$ARGONIC_NGINX_TEMPLATE``
names another file to use instead.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from argonic.cluster.state import ClusterError

TEMPLATE = "argonic-grpc.conf.template"


def nginx_template_path() -> Path:
    """$ARGONIC_NGINX_TEMPLATE, else the template shipped in this package."""
    env = os.environ.get("ARGONIC_NGINX_TEMPLATE")
    if env:
        return Path(env)
    return Path(str(resources.files(__package__).joinpath(TEMPLATE)))


def nginx_template() -> str:
    """The text of the nginx template (see ``nginx_template_path``)."""
    path = nginx_template_path()
    try:
        return path.read_text()
    except OSError as exc:
        raise ClusterError(f"cannot read the nginx template {path}: {exc}") from None


def _nofile(most: int = 65536) -> int:
    """The open-file limit nginx may set itself (``worker_rlimit_nofile``)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return most if hard == resource.RLIM_INFINITY else min(most, hard)


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
        # two descriptors per client connection (client and replica side), up to what this
        # process may give nginx (its hard limit): nginx raises its own soft limit to it
        "NOFILE": str(_nofile()),
        "CONNECTIONS": str(max(4096, _nofile() // 2)),
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


def nginx_command(nginx: str, run_dir: Path, conf: Path, *, test: bool = False) -> list[str]:
    """nginx in the foreground with the run directory as its prefix and error log there
    (``test``: only check the configuration, quietly)."""
    check = ["-t", "-q"] if test else []
    return [
        nginx,
        *check,
        "-p",
        str(run_dir),
        "-e",
        str(run_dir / "nginx-error.log"),
        "-c",
        str(conf),
    ]
