"""``--model-control-mode poll``: follow the model repository on disk, as Triton's poll mode.

Every ``--repository-poll-secs`` the repository is scanned: a model directory that is new
is loaded, one whose files changed (config.pbtxt, a version added or removed, a model file
rewritten; for the plane model also its network's files) is reloaded (the new versions
take over, the old ones finish their requests first), and a loaded model whose directory
is gone is unloaded after its in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from argonic.server.core.dataplane import DataPlane
from argonic.server.errors import ServerError

log = logging.getLogger("argonic.server")

Snapshot = dict[str, tuple]


class RepositoryPoller:
    """Scans the repository every ``interval_s`` and applies what changed to the data plane."""

    def __init__(self, dataplane: DataPlane, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("--repository-poll-secs must be > 0 in poll mode")
        self.dataplane = dataplane
        self.interval_s = interval_s
        self.snapshot: Snapshot = {}
        self._task: asyncio.Task | None = None

    def _scan(self) -> Snapshot:
        repository = self.dataplane.repository
        return {name: repository.fingerprint(name) for name in repository.names()}

    async def start(self) -> None:
        """Remember the repository as it is now, then poll in the background."""
        self.snapshot = await asyncio.to_thread(self._scan)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling (a load in progress is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Load new models, reload changed ones, unload removed ones."""
        current = await asyncio.to_thread(self._scan)
        for name in sorted(set(self.snapshot) - set(current)):
            if name in self.dataplane.models:
                log.info("poll: model '%s' was removed from the repository, unloading", name)
                await self.dataplane.unload(name)
        for name, fingerprint in sorted(current.items()):
            if self.snapshot.get(name) == fingerprint:
                continue
            log.info("poll: model '%s' is new or changed, loading", name)
            try:
                await self.dataplane.load(name)
            except ServerError as exc:
                log.error("poll: model '%s' failed to load: %s", name, exc)
        self.snapshot = current
