"""A TCP proxy that emulates a wide-area link: one-way delay and a bandwidth limit.

The paper's clients reached the servers over ~12 ms round trips and 1-2 Gbps links.
``NetemProxy`` listens on 127.0.0.1, forwards every connection to the target address, and
in each direction delivers every chunk of bytes at

    departure = max(arrival, link_free) + size / rate        (the link serialises bytes)
    delivery  = departure + rtt / 2                           (propagation)

so the delay is paid once per chunk, not per byte: many chunks are "on the wire" at once
(a timestamped queue), and the throughput is limited by the rate alone (a token bucket
whose bucket holds one chunk). gRPC (HTTP/2 over TCP) passes through unchanged.

``shared_link=True`` makes all connections share one link per direction (a site uplink);
by default each connection has its own (each client's own link, as t_transmit in Eq. 1).
The proxy runs its asyncio loop in a daemon thread; ``start()`` returns the listening
"host:port", ``stop()`` closes everything (also a context manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024
QUEUE_CHUNKS = 512  # at most 32 MiB in flight per direction of a connection


@dataclass
class _Link:
    """One direction's link: the time it is next free to send (virtual-clock token bucket)."""

    bytes_per_s: float | None
    free_at: float = 0.0
    bytes: int = 0

    def schedule(self, arrival: float, size: int) -> float:
        """Departure time of a chunk of ``size`` bytes arriving at ``arrival``."""
        self.bytes += size
        if not self.bytes_per_s:
            return arrival
        self.free_at = max(arrival, self.free_at) + size / self.bytes_per_s
        return self.free_at


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    errors: list[str] = field(default_factory=list)


class NetemProxy:
    """Forward 127.0.0.1:<port> to ``target`` ("host:port") with delay and rate limit."""

    def __init__(
        self,
        target: str,
        rtt_ms: float = 0.0,
        link_gbps: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        shared_link: bool = False,
    ) -> None:
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
        if link_gbps is not None and link_gbps <= 0:
            raise ValueError(f"link_gbps must be > 0, got {link_gbps}")
        target_host, _, target_port = target.rpartition(":")
        if not target_host or not target_port.isdigit():
            raise ValueError(f"target {target!r} is not host:port")
        self.target = (target_host, int(target_port))
        self.delay_s = rtt_ms / 2000.0
        self.bytes_per_s = link_gbps * 1e9 / 8 if link_gbps else None
        self.host, self.port = host, port
        self.shared_link = shared_link
        self.stats = ProxyStats()
        self._shared = (_Link(self.bytes_per_s), _Link(self.bytes_per_s))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> str:
        """Start listening (in a daemon thread); return "host:port" to connect to."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, limit=CHUNK)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="argonic-netem", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self.address

    def stop(self) -> None:
        """Close the listener and every connection; join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> NetemProxy:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def as_dict(self) -> dict[str, object]:
        return {
            "rtt_ms": self.delay_s * 2000,
            "link_gbps": self.bytes_per_s * 8 / 1e9 if self.bytes_per_s else None,
            "shared_link": self.shared_link,
            "connections": self.stats.connections,
            "bytes_up": self.stats.bytes_up,
            "bytes_down": self.stats.bytes_down,
        }

    # -- inside the loop --

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target, limit=CHUNK)
        except OSError as exc:
            self.stats.errors.append(f"connect {self.target}: {exc}")
            c_writer.close()
            return
        for w in (c_writer, s_writer):
            self._writers.add(w)
        up, down = (
            self._shared if self.shared_link else (_Link(self.bytes_per_s), _Link(self.bytes_per_s))
        )
        pumps = [
            asyncio.ensure_future(self._pump(c_reader, s_writer, up, "up")),
            asyncio.ensure_future(self._pump(s_reader, c_writer, down, "down")),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            # one side closed: let the other direction finish delivering, then close both
            await asyncio.wait(pumps, timeout=self.delay_s + 5.0)
        finally:
            for t in pumps:
                t.cancel()
                self._tasks.discard(t)
            for w in (c_writer, s_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        direction: str,
    ) -> None:
        """Read chunks as they come, deliver each at its scheduled time (reader never waits on the delay)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    with contextlib.suppress(Exception):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                at, data = item
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                if direction == "up":
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                now = time.monotonic()
                if not data:
                    await queue.put(None)
                    break
                await queue.put((link.schedule(now, len(data)) + self.delay_s, data))
            await sender
        except (ConnectionError, OSError) as exc:
            self.stats.errors.append(f"{direction}: {exc}")
        finally:
            sender.cancel()
