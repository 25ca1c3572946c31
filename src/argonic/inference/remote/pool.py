"""The server pool: which server takes the next request, and what happens when one fails.

This module decides failover. Servers are tried in configured order, healthy ones first,
then those that failed within ``health_recheck_s``; a server is used only once it passes
the model checks (identity.verify: RepositoryIndex, which a saturated server refuses, then
readiness and the model's identity) on its current channel. A request that fails with a
retryable status (errors.RETRYABLE) is marked against that server and goes, whole, to the
next; any other status is fatal. When every server failed the request in one round: start
the local fallback server (``fallback = true``; started again if it died, at most
``retries + 1`` times), else sleep ``backoff_s * 2**(k - 1)`` and begin round k, up to
``retries`` extra rounds, then RemoteInferenceError naming the servers and the last error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from argonic.inference.local_server import FallbackError, LocalServer
from argonic.inference.remote import options as config
from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import (
    RETRYABLE,
    NotReady,
    RemoteInferenceError,
    describe,
    status_code,
)
from argonic.inference.remote.identity import ModelSignature, verify
from argonic.inference.remote.options import CallOptions
from argonic.inference.remote.stats import CallStats
from argonic.settings import RemoteSettings

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One request's way through the pool: its round and the servers it tried in it."""

    round: int = 0
    tried: set[str] = field(default_factory=set)
    last_error: str = ""

    def failed_on(self, server: Server, text: str) -> None:
        self.tried.add(server.address)
        self.last_error = f"{server.label}: {text}"


class ServerPool:
    """The configured servers (and the fallback server once started), in failover order.

    ``on_verified`` callbacks run each time a server passes its checks on a new channel.
    """

    def __init__(
        self, remote: RemoteSettings, signature: ModelSignature, options: CallOptions
    ) -> None:
        self.remote = remote
        self.signature = signature
        self.options = options
        credentials = config.channel_credentials(remote)
        self.servers = [Server(address, credentials) for address in remote.servers]
        self.on_verified: list[Callable[[Server], None]] = []
        self.fallback: LocalServer | None = None
        self._fallback_starts = 0

    def pick(self, attempt: Attempt, call: CallStats) -> Server:
        """The first usable server ``attempt`` has not tried in its current round (see the
        module docstring for the order, the rounds and the fallback server)."""
        while True:
            candidates = [s for s in self.servers if s.address not in attempt.tried]
            candidates.sort(key=lambda s: not s.healthy(self.remote.health_recheck_s))
            for server in candidates:
                if self._usable(server, attempt):
                    return server
            if self._start_fallback():
                continue
            if attempt.round >= self.remote.retries:
                names = ", ".join(s.label for s in self.servers)
                raise RemoteInferenceError(
                    f"no server answered after {attempt.round + 1} round(s) over [{names}] "
                    f"for model '{self.remote.model_name}'; last error: {attempt.last_error}"
                )
            attempt.round += 1
            attempt.tried.clear()
            call.retries += 1
            time.sleep(self.remote.backoff_s * 2 ** (attempt.round - 1))

    def failed(self, attempt: Attempt, server: Server, error: grpc.RpcError) -> None:
        """A request failed on ``server``: mark both, or raise at once when the error is
        not worth another server."""
        code, text = status_code(error), describe(error)
        if code not in RETRYABLE:
            raise RemoteInferenceError(
                f"server {server.label} refused the request: {text}"
            ) from None
        log.warning("server %s failed a request (%s); trying another", server.label, text)
        server.mark_failed(code)
        attempt.failed_on(server, text)

    def _usable(self, server: Server, attempt: Attempt) -> bool:
        """Whether the server can take requests: connected, ready and serving our model."""
        if server.ready:
            return True
        try:
            model = verify(
                server,
                self.signature,
                self.remote.model_name,
                self.remote.model_version,
                self.options,
                self.remote.check_index,
            )
        except grpc.RpcError as error:
            code, text = status_code(error), describe(error)
            if code not in RETRYABLE:
                raise RemoteInferenceError(
                    f"server {server.label} refused the connection checks: {text}"
                ) from None
            server.mark_failed(code)
        except NotReady as exc:
            server.mark_failed(None)
            text = str(exc)
        else:
            server.mark_verified(model)
            for callback in self.on_verified:
                callback(server)
            return True
        log.warning("server %s is not usable: %s", server.label, text)
        attempt.failed_on(server, text)
        return False

    def _start_fallback(self) -> bool:
        """Start (or restart) the local fallback server; False if not allowed or already up."""
        if not self.remote.fallback:
            return False
        if self.fallback is None:
            repository = config.repository(self.remote)
            if repository is None:
                raise FallbackError(
                    "cannot start a fallback server: no model repository "
                    "(set [inference.remote] model_repository)"
                )
            self.fallback = LocalServer(repository, self.remote.model_name)
        elif self.fallback.alive or self._fallback_starts > self.remote.retries:
            return False
        log.warning("no configured server answers: starting a local fallback server")
        self._fallback_starts += 1
        address = self.fallback.start()
        for server in self.servers:
            if server.fallback:
                server.close()
        self.servers = [s for s in self.servers if not s.fallback]
        self.servers.append(Server(address, None, fallback=True))
        return True

    def close_retired(self) -> None:
        """Close channels replaced by reconnections (nothing may be in flight)."""
        for server in self.servers:
            server.close_retired()

    def close(self) -> None:
        """Close every channel and stop the fallback server if one was started."""
        for server in self.servers:
            server.close()
        if self.fallback is not None:
            self.fallback.stop()
