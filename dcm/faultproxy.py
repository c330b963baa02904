"""A TCP proxy on loopback that breaks the network on command, for fault tests and benches.

It forwards ``127.0.0.1:<port>`` to a target and runs its own asyncio loop in a thread, so a test
drives it from plain code. Faults are deterministic (nothing random; each takes effect when
called):

* :meth:`FaultProxy.blackhole` — nothing is forwarded any more in either direction and new
  connections are accepted but never connected onwards: like a route that vanished, TCP sees no
  error, only a keepalive notices. ``blackhole(False)`` resumes what was held.
* :meth:`FaultProxy.drop` — reset every open connection (both sides see it at once).
* :meth:`FaultProxy.latency` — every chunk is forwarded ``seconds`` after it was read, in order.
* :meth:`FaultProxy.half_open` — close the target side of every open connection and swallow what
  the client sends from then on: the server knows the client is gone, the client does not.
* :meth:`FaultProxy.refuse` — close new connections at once (connection refused, as seen by MQTT).

Counters (``stats``): connections, bytes each way, connections dropped or half-opened.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)

CHUNK = 65536


@dataclasses.dataclass
class ProxyStats:
    connections: int = 0
    refused: int = 0
    dropped: int = 0
    half_opened: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client


class _Link:
    """One proxied connection: a pump per direction."""

    def __init__(self, proxy: FaultProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer = client
        self.t_writer: asyncio.StreamWriter | None = None
        self.half_open = False
        self.tasks: list[asyncio.Task] = []

    async def run(self) -> None:
        p = self.proxy
        await p._flowing()  # a blackholed route: the connection waits, unconnected
        try:
            t_reader, self.t_writer = await asyncio.open_connection(p.target_host, p.target_port)
        except OSError:
            self._reset(self.c_writer)
            return
        self.tasks = [asyncio.create_task(self._pump(self.c_reader, self.t_writer, up=True)),
                      asyncio.create_task(self._pump(t_reader, self.c_writer, up=False))]
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for w in (self.c_writer, self.t_writer):
            if not w.is_closing():
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Read chunks and forward each ``latency`` seconds after it was read, in order."""
        p = self.proxy
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer, up=up))
        try:
            while True:
                await p._flowing()
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.half_open:
                    if up:
                        continue  # the server is gone; the client's bytes go nowhere
                    break
                queue.put_nowait((time.monotonic() + p._latency, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            if self.half_open and not up:
                return  # the client's side stays open: it has not been told
            for w in (self.c_writer, self.t_writer):
                if w is not None and not w.is_closing():
                    w.close()

    async def _send(self, queue: asyncio.Queue, writer: asyncio.StreamWriter, *, up: bool) -> None:
        p = self.proxy
        while True:
            due, data = await queue.get()
            if not data:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await p._flowing()  # blackholed while the chunk was delayed: hold it
            if self.half_open:
                if up:
                    continue
                return
            writer.write(data)
            await writer.drain()
            if up:
                p.stats.bytes_up += len(data)
            else:
                p.stats.bytes_down += len(data)

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:  # SO_LINGER 0: close sends RST, as a crashed peer or a NAT timeout would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.close()

    def drop(self) -> None:
        for w in (self.c_writer, self.t_writer):
            if w is not None:
                self._reset(w)
        for t in self.tasks:
            t.cancel()

    def make_half_open(self) -> None:
        self.half_open = True
        if self.t_writer is not None:
            self._reset(self.t_writer)


class FaultProxy:
    """``with FaultProxy(host, port) as proxy:`` — clients connect to ``127.0.0.1:proxy.port``."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy only forwards to loopback")
        self.target_host, self.target_port = target_host, target_port
        self.port = port
        self.stats = ProxyStats()
        self._latency = 0.0
        self._refuse = False
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._server.close()
            for link in list(self._links):
                link.drop()
            self._open.set()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refuse:
            self.stats.refused += 1
            _Link._reset(writer)
            return
        self.stats.connections += 1
        link = _Link(self, (reader, writer))
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)

    async def _flowing(self) -> None:
        await self._open.wait()

    def _call(self, fn) -> None:
        """Run ``fn`` on the proxy's loop and wait until it has run."""
        async def run() -> None:
            fn()
        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    # -- faults -----------------------------------------------------------------------------------

    def blackhole(self, on: bool = True) -> None:
        self._call(self._open.clear if on else self._open.set)

    def drop(self) -> int:
        """Reset every open connection; returns how many."""
        links = list(self._links)

        def run() -> None:
            for link in links:
                link.drop()
            self.stats.dropped += len(links)

        self._call(run)
        return len(links)

    def latency(self, seconds: float) -> None:
        self._latency = max(0.0, seconds)

    def half_open(self) -> int:
        """Close the target side of every open connection, leaving the client believing; returns how many."""
        links = list(self._links)

        def run() -> None:
            for link in links:
                link.make_half_open()
            self.stats.half_opened += len(links)

        self._call(run)
        return len(links)

    def refuse(self, on: bool = True) -> None:
        self._refuse = on

    def open_connections(self) -> int:
        return len(self._links)

    def wait_connections(self, n: int, timeout: float = 10.0) -> bool:
        """Whether at least ``n`` connections are open within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._links) >= n:
                return True
            time.sleep(0.02)
        return len(self._links) >= n
