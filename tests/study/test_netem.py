"""The TCP delay/bandwidth proxy: transparent, pays the round trip, caps the rate."""

import os
import socket
import socketserver
import threading
import time

import numpy as np
import pytest

from argonic.study.netem import CHUNK, NetemProxy, _Link


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(1 << 16)
            if not data:
                return
            self.request.sendall(data)


@pytest.fixture()
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _connect(address):
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _exchange(sock, payload):
    """Send everything (in a thread) while reading the echo back; return what came back."""
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    sender.join()
    return bytes(got)


def test_bytes_pass_through_unchanged(echo):
    payload = os.urandom(3_000_000 + 17)
    with NetemProxy(echo, rtt_ms=2.0) as proxy, _connect(proxy.address) as sock:
        assert _exchange(sock, payload) == payload
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)
    assert not proxy.stats.errors


def test_round_trip_is_at_least_the_configured_rtt(echo):
    rtt_s = 0.030
    with NetemProxy(echo, rtt_ms=rtt_s * 1000) as proxy, _connect(proxy.address) as sock:
        for i in range(4):
            t0 = time.perf_counter()
            assert _exchange(sock, b"ping %d" % i) == b"ping %d" % i
            assert time.perf_counter() - t0 >= rtt_s


def test_throughput_is_not_above_the_link_rate(echo):
    gbps = 0.04  # 5 MB/s each way
    payload = os.urandom(2_000_000)
    with NetemProxy(echo, rtt_ms=1.0, link_gbps=gbps) as proxy, _connect(proxy.address) as sock:
        t0 = time.perf_counter()
        assert _exchange(sock, payload) == payload
        elapsed = time.perf_counter() - t0
    rate = len(payload) / elapsed
    limit = gbps * 1e9 / 8
    assert rate <= limit  # the link serialises every byte (a loaded machine is only slower)


def test_the_link_schedule_reaches_the_rate_exactly():
    """The virtual-clock schedule (no wall clock: independent of the machine's load): 32
    chunks arriving together leave one chunk time apart, so 2 MB take exactly 2 MB / rate
    (a schedule that waited for each chunk's delivery would fall below it), and an idle
    link sends a late chunk at its arrival plus its own time."""
    link = _Link(bytes_per_s=5e6)
    departures = [link.schedule(0.0, CHUNK) for _ in range(32)]
    np.testing.assert_allclose(np.diff([0.0, *departures]), CHUNK / 5e6)
    assert departures[-1] == pytest.approx(32 * CHUNK / 5e6)
    assert link.schedule(100.0, CHUNK) == pytest.approx(100.0 + CHUNK / 5e6)
    assert _Link(bytes_per_s=None).schedule(3.0, CHUNK) == 3.0  # no limit: no wait
    assert link.bytes == 33 * CHUNK


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="host:port"):
        NetemProxy("nowhere")
    with pytest.raises(ValueError, match="link_gbps"):
        NetemProxy("127.0.0.1:1", link_gbps=0)
