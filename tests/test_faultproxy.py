"""dcm.faultproxy against a real TCP echo server on loopback: each fault does what it says."""
from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from dcm.faultproxy import FaultProxy
from dcm.testing import until


class _Echo(socketserver.BaseRequestHandler):
    closed = threading.Event()

    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except ConnectionResetError:
            pass
        _Echo.closed.set()


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _conn(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    return s


def test_forwards_and_counts(echo):
    with FaultProxy("127.0.0.1", echo) as proxy:
        s = _conn(proxy)
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
        # counted once the write has drained, which may be just after the echo arrived
        assert until(lambda: proxy.stats.bytes_down == 5, 2)
        assert proxy.stats.bytes_up == 5 and proxy.stats.connections == 1
        s.close()


def test_blackhole_holds_everything_until_lifted(echo):
    with FaultProxy("127.0.0.1", echo) as proxy:
        s = _conn(proxy)
        s.sendall(b"a")
        assert s.recv(10) == b"a"
        proxy.blackhole()
        s.sendall(b"b")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(10)
        late = _conn(proxy)  # accepted by the kernel, connected nowhere
        late.sendall(b"c")
        late.settimeout(0.3)
        with pytest.raises(TimeoutError):
            late.recv(10)
        proxy.blackhole(False)
        s.settimeout(2), late.settimeout(2)
        assert s.recv(10) == b"b" and late.recv(10) == b"c"
        s.close(), late.close()


def test_drop_resets_both_sides(echo):
    with FaultProxy("127.0.0.1", echo) as proxy:
        s = _conn(proxy)
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        _Echo.closed.clear()
        assert proxy.drop() == 1
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(50):  # the RST arrives asynchronously
                s.sendall(b"y")
                if s.recv(10) == b"":
                    raise ConnectionResetError
                time.sleep(0.02)
        assert _Echo.closed.wait(2)  # the server saw it too
        assert proxy.stats.dropped == 1


def test_latency_delays_every_chunk_in_order(echo):
    with FaultProxy("127.0.0.1", echo) as proxy:
        s = _conn(proxy)
        proxy.latency(0.25)
        start = time.monotonic()
        s.sendall(b"1")
        s.sendall(b"2")
        got = b""
        while len(got) < 2:
            got += s.recv(10)
        assert got == b"12" and time.monotonic() - start >= 0.5  # once up, once down
        s.close()


def test_half_open_closes_the_server_side_only(echo):
    with FaultProxy("127.0.0.1", echo) as proxy:
        s = _conn(proxy)
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        _Echo.closed.clear()
        assert proxy.half_open() == 1
        assert _Echo.closed.wait(2)  # the server knows
        s.sendall(b"still there?")  # the client does not: no error, no answer
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(10)
        s.close()


def test_refuse_closes_new_connections(echo):
    with FaultProxy("127.0.0.1", echo) as proxy:
        proxy.refuse()
        try:  # the reset may already meet the client's connect, or only its first read
            s = _conn(proxy)
            s.settimeout(2)
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        assert until(lambda: proxy.stats.refused == 1, 5)
        with pytest.raises(ValueError):
            FaultProxy("10.0.0.1", 1883)
