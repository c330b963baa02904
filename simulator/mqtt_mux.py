"""Many paho MQTT connections driven by one thread and one ``selectors`` loop.

:class:`MqttMux` opens ``connections`` clients (one per vehicle, or a few
shared by many vehicles) and publishes QoS 1 messages handed to it through a
bounded queue (:meth:`publish` blocks when it is full, so a slow broker
slows the producer rather than growing memory). Each connection keeps at
most ``window`` messages awaiting PUBACK. On every (re)connect the
connection's retained messages (the schemas) are published first.
:meth:`drop` severs a connection abruptly (fault injection); it reconnects
by itself and paho re-sends what was not acknowledged.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import selectors
import socket
import threading
import time

import paho.mqtt.client as mqtt

from dcm_base.broker_url import BrokerUrl
from dcm_base.errors import ServiceError

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 0.2


class MqttMuxError(ServiceError):
    """The broker could not be reached or refused the connections."""


@dataclasses.dataclass
class MuxStats:
    published: int = 0  # handed to paho
    acked: int = 0
    acked_bytes: int = 0
    errors: int = 0  # publish calls paho refused, connection losses
    disconnects: int = 0
    reconnects: int = 0
    queue_full_waits: int = 0


@dataclasses.dataclass
class _Conn:
    index: int
    client: mqtt.Client
    pending: collections.deque = dataclasses.field(default_factory=collections.deque)
    inflight: dict[int, int] = dataclasses.field(default_factory=dict)  # mid -> payload bytes
    connected: bool = False
    retry_at: float = 0.0


class MqttMux:
    """Publishes through ``connections`` MQTT clients from one network thread."""

    def __init__(self, broker: BrokerUrl, *, connections: int, client_prefix: str, window: int = 100,
                 queue_size: int = 10_000, retained: list[tuple[str, bytes]] | None = None) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.broker = broker
        self.window = window
        self.retained = list(retained or [])
        self.stats = MuxStats()
        self._queue: queue.Queue[tuple[int, str, bytes] | None] = queue.Queue(maxsize=queue_size)
        self._sel = selectors.DefaultSelector()
        self._drops: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._outstanding = 0  # accepted by publish(), not yet acknowledged
        self._failure: BaseException | None = None  # what killed the network thread
        self.conns = [self._make(i, f"{client_prefix}-{i}") for i in range(connections)]

    def _make(self, index: int, client_id: str) -> _Conn:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                        clean_session=False)
        if self.broker.username:
            c.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            c.tls_set()
        c.max_inflight_messages_set(self.window)
        c.max_queued_messages_set(0)
        conn = _Conn(index, c)
        c.user_data_set(conn)
        c.on_socket_open = lambda cl, ud, sock: self._watch(sock, selectors.EVENT_READ, ud)
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = lambda cl, ud, sock: self._watch(
            sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ud)
        c.on_socket_unregister_write = lambda cl, ud, sock: self._watch(sock, selectors.EVENT_READ, ud)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return conn

    # -- producer side -------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Connect every client and start the network thread."""
        for conn in self.conns:
            try:
                conn.client.connect(self.broker.host, self.broker.port, keepalive=60)
            except OSError as exc:
                raise MqttMuxError(f"cannot connect to {self.broker}: {exc}") from exc
        self._thread = threading.Thread(target=self._loop, name="mqtt-mux", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(c.connected for c in self.conns):
            if time.monotonic() > deadline:
                raise MqttMuxError(f"{sum(not c.connected for c in self.conns)} connections to {self.broker} "
                                   f"not accepted within {timeout} s")
            time.sleep(0.01)

    def _check(self) -> None:
        if self._failure is not None:
            raise MqttMuxError(f"the MQTT network thread failed: {self._failure}") from self._failure

    def publish(self, conn: int, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 message on connection ``conn`` (blocks while the queue is full)."""
        self._check()
        with self._lock:
            self._outstanding += 1
        try:
            self._queue.put_nowait((conn, topic, payload))
        except queue.Full:
            self.stats.queue_full_waits += 1
            while True:
                self._check()
                try:
                    self._queue.put((conn, topic, payload), timeout=0.5)
                    return
                except queue.Full:
                    continue

    def drop(self, conn: int) -> None:
        """Sever connection ``conn`` abruptly (no DISCONNECT packet)."""
        self._drops.put(conn)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outstanding > 0:
                self._check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.2))
        return True

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for conn in self.conns:
            try:
                conn.client.disconnect()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self._sel.close()

    # -- network thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run_loop()
        except BaseException as exc:  # publish()/flush() raise it instead of waiting forever
            self._failure = exc
            log.exception("MQTT network thread failed")
            with self._lock:
                self._idle.notify_all()
            while True:  # unblock producers waiting for room
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _run_loop(self) -> None:
        next_misc = 0.0
        while not self._stop.is_set():
            self._take_queue()
            while not self._drops.empty():
                self._sever(self.conns[self._drops.get()])
            for conn in self.conns:
                if conn.connected:
                    self._feed(conn)
            try:
                events = self._sel.select(timeout=0.005) if self._sel.get_map() else []
            except OSError:
                events = []
            for key, mask in events:
                conn = key.data
                if mask & selectors.EVENT_READ:
                    conn.client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    conn.client.loop_write()
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + 1.0
                for conn in self.conns:
                    conn.client.loop_misc()
                    if not conn.connected and now >= conn.retry_at and conn.client.socket() is None:
                        self._reconnect(conn)

    def _take_queue(self) -> None:
        # what sits in the per-connection deques counts against the queue's bound too, so a slow
        # or absent broker makes publish() block instead of growing memory
        room = self._queue.maxsize - sum(len(c.pending) for c in self.conns)
        for _ in range(max(0, min(room, 5000))):
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.conns[item[0]].pending.append(item[1:])

    def _feed(self, conn: _Conn) -> None:
        while conn.pending and len(conn.inflight) < self.window:
            topic, payload = conn.pending.popleft()
            info = conn.client.publish(topic, payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # refused: try it again later
                self.stats.errors += 1
                conn.pending.appendleft((topic, payload))
                return
            conn.inflight[info.mid] = len(payload)  # NO_CONN: paho keeps it and re-sends on reconnect
            self.stats.published += 1

    def _sever(self, conn: _Conn) -> None:
        sock = conn.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.client.loop_read()  # paho notices the dead socket and closes it

    def _reconnect(self, conn: _Conn) -> None:
        try:
            conn.client.reconnect()
            self.stats.reconnects += 1
        except OSError as exc:
            self.stats.errors += 1
            conn.retry_at = time.monotonic() + RECONNECT_DELAY_S * 5
            log.warning("reconnect of connection %d failed: %s", conn.index, exc)

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _watch(self, sock: socket.socket, events: int, conn: _Conn) -> None:
        """Register or update a socket in the selector (ignored once the socket is closed)."""
        if sock.fileno() < 0 or self._stop.is_set() and not self._sel.get_map():
            return
        try:
            self._sel.modify(sock, events, conn)
        except KeyError:
            try:
                self._sel.register(sock, events, conn)
            except (KeyError, ValueError, RuntimeError):
                pass
        except (ValueError, RuntimeError):
            pass

    def _on_socket_close(self, client: mqtt.Client, conn: _Conn, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _on_connect(self, client, conn: _Conn, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.stats.errors += 1
            log.warning("broker refused connection %d: %s", conn.index, reason_code)
            return
        conn.connected = True
        for topic, payload in self.retained:
            client.publish(topic, payload, qos=1, retain=True)

    def _on_disconnect(self, client, conn: _Conn, flags, reason_code, properties) -> None:
        if conn.connected:
            self.stats.disconnects += 1
        conn.connected = False
        conn.retry_at = time.monotonic() + RECONNECT_DELAY_S

    def _on_publish(self, client, conn: _Conn, mid: int, reason_code, properties) -> None:
        size = conn.inflight.pop(mid, None)
        if size is None:  # a retained schema message
            return
        self.stats.acked += 1
        self.stats.acked_bytes += size
        with self._lock:
            self._outstanding -= 1
            if self._outstanding <= 0:
                self._idle.notify_all()
