"""Plane mode: whether a (TPC, plane) travels as one request to the plane model.

With ``request_mode = "plane"`` each (TPC, plane)'s image and hits go to
``plane_model_name`` and the server cuts the patches (same scores, far fewer bytes). A
server is asked once per successful check whether it serves that plane model for the
expected network; the first server without it turns plane mode off for this client (a
warning, once) and the patches are sent from then on.
"""

from __future__ import annotations

import logging

from argonic.inference.remote.channel import Server
from argonic.inference.remote.identity import ModelSignature, serves_plane_model
from argonic.inference.remote.options import CallOptions
from argonic.settings import RemoteSettings

log = logging.getLogger(__name__)


class PlaneMode:
    """The plane-mode state of one client: configured, still on, and each server's answer."""

    def __init__(
        self, remote: RemoteSettings, signature: ModelSignature, options: CallOptions
    ) -> None:
        self.remote = remote
        self.signature = signature
        self.options = options
        self._off = False  # a server lacked the plane model: patch mode from then on
        self._answers: dict[Server, tuple[int, bool]] = {}  # server -> (its checks, answer)

    @property
    def active(self) -> bool:
        """Whether ``predict_plane`` should send planes."""
        return self.remote.request_mode == "plane" and not self._off

    def ready(self, server: Server) -> bool:
        """Whether ``server`` serves the plane model for our network (asked once per check of
        the server); ModelMismatchError if it serves one whose tensors or checksum differ."""
        known = self._answers.get(server)
        if known is not None and known[0] == server.checks:
            return known[1]
        answer = serves_plane_model(
            server,
            self.signature,
            self.remote.plane_model_name,
            self.remote.model_version,
            self.options,
        )
        self._answers[server] = (server.checks, answer)
        return answer

    def turn_off(self, server_label: str) -> None:
        """``server_label`` lacks the plane model: send patches from now on."""
        self._off = True
        log.warning(
            "server %s does not serve the plane model '%s': using patch mode from now on",
            server_label,
            self.remote.plane_model_name,
        )
