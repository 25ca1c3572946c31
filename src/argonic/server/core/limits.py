"""Server-wide memory limits: the bytes of request tensors admitted at once.

What counts: each request's bytes as received (or what its compressed tensors expand to)
and, for a plane-mode request, the image it is decoded into (core.dataplane).

gRPC refuses a message above ``--grpc-max-message-bytes`` with RESOURCE_EXHAUSTED by
itself. ModelInfer (registered stream-unary, so the handler decides when to read) holds
its bytes zero-copy (wire.py) until it is answered; ``InflightBytes`` admits it only while
the bytes of all admitted requests stay under ``--max-inflight-bytes``: room for the
message is reserved before the handler reads it (``receive``), and a call that finds none
gets UNAVAILABLE without its message being read, decoded, decompressed or copied. A request that can never fit gets RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
from collections.abc import AsyncIterator, Iterator

import grpc

from argonic._util import release_free_memory
from argonic.server.errors import InvalidArgument, ServerError, Unavailable
from argonic.settings.server import MAX_INFLIGHT_BYTES


class InflightBytes:
    """Counts the bytes of admitted requests against a cap (0: no cap); event-loop only.

    ModelInfer is registered as a stream-unary handler so that its one message is read only
    after :meth:`receive` has reserved room for it: the reservation is the largest of the
    recent requests' sizes (``initial_estimate`` at first), replaced by the real size once
    read (at first ``initial_estimate``, at most an eighth of the cap). A call that finds
    no room is refused before its message is decoded, its bytes dropped at once.
    """

    def __init__(self, cap: int = MAX_INFLIGHT_BYTES, initial_estimate: int = 16 << 20) -> None:
        self.cap = cap
        self.used = 0
        self.peak = 0
        self.refused = 0
        self.initial_estimate = min(initial_estimate, cap // 8) if cap else 0
        self._recent: collections.deque[int] = collections.deque(maxlen=32)

    def _take(self, nbytes: int) -> None:
        if self.cap and nbytes > self.cap:
            self.refused += 1
            raise ServerError(
                f"request of {nbytes} bytes is above the server's --max-inflight-bytes {self.cap}",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        if self.cap and self.used and self.used + nbytes > self.cap:
            self.refused += 1
            raise Unavailable(
                f"Exceeds maximum in-flight request bytes ({self.used} of {self.cap} in use): retry"
            )
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    @contextlib.contextmanager
    def admit(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` while the block runs; refuse at once if they do not fit."""
        self._take(nbytes)
        try:
            yield
        finally:
            self.used -= nbytes

    @contextlib.asynccontextmanager
    async def receive(self, messages: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Reserve room, read the call's one message, hold its size while the block runs."""
        guess = min(max(self._recent, default=self.initial_estimate), self.cap)
        # Refused: the message is never read, so the call ends at once and its bytes stop
        # at HTTP/2 flow control (reading and dropping it instead let gRPC buffer every
        # refused message: 5.0 GB instead of 0.76 GB peak for 64 x 1693 patches). Clients
        # see UNAVAILABLE: the CANCELLED some saw under heavy overload came from gRPC
        # core's backlog of calls not yet taken by the event loop (app.MAX_PENDING_CALLS).
        self._take(guess)
        try:
            data = await anext(messages, None)
            # read to the end of the client's stream as a unary handler does: replying
            # while it is still open resets the stream and the client may see CANCELLED
            extra = await anext(messages, None) if data is not None else None
        finally:
            self.used -= guess
        if data is None or extra is not None:
            raise InvalidArgument("a ModelInfer call carries exactly one request message")
        self._recent.append(len(data))
        with self.admit(len(data)):
            yield data


class IdleTrim:
    """Gives freed heap memory back to the OS (glibc ``malloc_trim``) once the server has
    been idle for ``delay_s``: after a burst of large requests, CPython and gRPC free their
    buffers but glibc keeps the pages, and the process would stay at its peak RSS."""

    def __init__(self, delay_s: float = 1.0) -> None:
        self.delay_s = delay_s
        self.trims = 0
        self._handle: asyncio.TimerHandle | None = None

    def busy(self) -> None:
        """A request started: cancel a pending trim."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def idle(self) -> None:
        """The last in-flight request finished: trim after ``delay_s`` unless busy again."""
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay_s, self._run)

    def _run(self) -> None:
        self._handle = None
        self.trims += release_free_memory()


M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does), before the server's threads
    start: with one arena per thread, gRPC's and ONNX Runtime's threads each keep freed
    request buffers, and a burst of 64 large requests left ~3x more RSS (measured)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc
        return False
