"""Shared pieces of the scale-out tests (no tests here): the tiny model's repository with a
bounded queue, the client configuration, metrics parsing, free port blocks."""

from __future__ import annotations

from pathlib import Path

from support.models import tiny_repository

# queue bound and one thread per replica: servers leave the two shared cores to the load
# balancer and the clients
CLUSTER_EXTRA = """
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{
  max_queue_delay_microseconds: 1000
  default_queue_policy {{ max_queue_size: {max_queue} }}
}}
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
"""


def cluster_repository(
    root: Path, max_queue: int = 64, max_batch: int = 4096, layers: int = 0
) -> Path:
    """The tiny model (support.models) with a bounded queue, as the cluster tests serve it."""
    return tiny_repository(
        root,
        max_batch_size=max_batch,
        extra=CLUSTER_EXTRA.format(max_queue=max_queue),
        layers=layers,
    )


def remote_config(repository: Path, servers: list[str], **remote) -> dict:
    """The [inference] table for argonic's RemoteInterface against the tiny model."""
    return {
        "batch_size": remote.pop("batch_size", 256),
        "remote": {
            "servers": servers,
            "model_repository": str(repository),
            "timeout_s": 30.0,
            "backoff_s": 0.05,
            "health_recheck_s": 1.0,
            **remote,
        },
    }


def metric(text: str, name: str) -> float:
    """Sum of the samples of one metric in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(None, 1)[1])
    return total
