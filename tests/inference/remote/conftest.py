"""Fixtures of the remote client's unit tests: one tiny-model repository and one in-process
`argonic serve` on it, shared by the files of this folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.remote import make_repository

from argonic.server import running_server


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """emtrkmichelid's names and shapes, a linear layer per head, max_batch_size 100."""
    return make_repository(tmp_path_factory.mktemp("tiny_repo"), max_batch_size=100)


@pytest.fixture(scope="session")
def tiny_server(tiny_repository: Path) -> Iterator[str]:
    """host:port of an in-process server on ``tiny_repository``."""
    with running_server(tiny_repository, metrics_port=None) as handle:
        yield handle.url
