"""Server-wide memory limits: the bytes of request tensors admitted at once.

gRPC receives a whole message before the handler runs (and refuses one above
``--grpc-max-message-bytes`` with RESOURCE_EXHAUSTED by itself). ModelInfer then holds
its bytes zero-copy (wire.py) until it is answered; ``InflightBytes`` admits it only while
the bytes of all admitted requests stay under ``--max-inflight-bytes``, before the
tensors are decoded, decompressed or copied into a batch. A request that does not fit now
gets UNAVAILABLE (clients retry, as for a full queue); one that can never fit gets
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from argonic.server.errors import ServerError, Unavailable

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # > a 4096-patch request (37.7 MB), the shipped maximum
DEFAULT_MAX_INFLIGHT_BYTES = 512 << 20  # ~32 requests of 1693 patches


class InflightBytes:
    """Counts the bytes of admitted requests against a cap (0: no cap); event-loop only."""

    def __init__(self, cap: int = DEFAULT_MAX_INFLIGHT_BYTES) -> None:
        self.cap = cap
        self.used = 0
        self.peak = 0
        self.refused = 0

    @contextlib.contextmanager
    def admit(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` while the block runs; refuse at once if they do not fit."""
        if self.cap and nbytes > self.cap:
            self.refused += 1
            raise ServerError(
                f"request of {nbytes} bytes is above the server's --max-inflight-bytes {self.cap}",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        if self.cap and self.used + nbytes > self.cap:
            self.refused += 1
            raise Unavailable(
                f"Exceeds maximum in-flight request bytes ({self.used} of {self.cap} in use): retry"
            )
        self.used += nbytes
        self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            self.used -= nbytes
