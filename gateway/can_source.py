"""The gateway's frame source: a python-can bus that survives its interface going away.

When ``recv`` fails (SocketCAN interface down, USB adapter unplugged, bus-off)
the bus is shut down and reopened with exponential backoff; the outage is
counted and logged with its length, so the gap in the data is explained
rather than silent. Error frames are counted, never decoded.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import can

from dcm_base.backoff import Backoff

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SourceStats:
    frames: int = 0
    error_frames: int = 0
    remote_frames: int = 0  # RTR frames carry no data: counted, never sampled
    bus_errors: int = 0  # recv/open failures
    outages: int = 0  # times the bus went away and came back
    outage_seconds: float = 0.0
    last_outage: tuple[float, float] | None = None  # (wall-clock start, seconds) of the latest outage


def enlarge_receive_buffer(bus: can.BusABC, size: int) -> int | None:
    """Give a SocketCAN bus a ``size``-byte kernel receive buffer; returns what the kernel granted.

    The kernel default (~200 KB, a few hundred frames) overflows, silently, during a reader
    stall of a fraction of a second on a busy bus. ``SO_RCVBUFFORCE`` (root/CAP_NET_ADMIN)
    ignores ``net.core.rmem_max``; otherwise ``SO_RCVBUF`` is capped by it.
    """
    sock = getattr(bus, "socket", None)
    if not isinstance(sock, socket.socket):
        return None
    for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < size:  # the kernel reports twice what was set
        log.warning("CAN receive buffer is %d bytes, not %d (raise net.core.rmem_max or run with CAP_NET_ADMIN)",
                    granted, size)
    return granted


def open_bus(config: Any, can_filters: list[dict] | None, *, fd: bool) -> can.BusABC:
    """Open the bus a gateway config names (``interface``, ``channel``, ``bitrate``, ``kernel_filters``,
    ``rcvbuf_bytes``); ``can_filters`` pass only the collected IDs through the kernel."""
    kwargs: dict[str, Any] = {"interface": config.interface, "channel": config.channel}
    if config.bitrate:
        kwargs["bitrate"] = config.bitrate
    if fd:
        kwargs["fd"] = True
    if config.kernel_filters:
        kwargs["can_filters"] = can_filters
    bus = can.Bus(**kwargs)
    if config.interface == "socketcan":
        enlarge_receive_buffer(bus, config.rcvbuf_bytes)
    return bus


class CanSource:
    """``recv`` returns data frames or None; it never raises for bus trouble while a reopener exists."""

    def __init__(
        self,
        bus: can.BusABC | None = None,
        *,
        opener: Callable[[], can.BusABC] | None = None,
        stop: threading.Event | None = None,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        if bus is None and opener is None:
            raise ValueError("CanSource needs a bus or an opener")
        self.stats = SourceStats()
        self._bus = bus
        self._opener = opener
        self._stop = stop or threading.Event()
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        self._down_since: tuple[float, float] | None = None  # (monotonic, wall) when the bus failed

    @property
    def bus(self) -> can.BusABC | None:
        return self._bus

    def recv(self, timeout: float) -> can.Message | None:
        if self._bus is None and not self._open():
            return None
        assert self._bus is not None
        try:
            msg = self._bus.recv(timeout=timeout)
        except (can.CanError, OSError) as exc:
            if self._opener is None:
                raise
            self.stats.bus_errors += 1
            if self._down_since is None:
                self._down_since = (time.monotonic(), time.time())
                log.warning("CAN bus failed (%s); reopening", exc)
            self._close()
            self._wait()
            return None
        if msg is None:
            return None
        if self._down_since is not None:
            self._recovered()
        if msg.is_error_frame:
            self.stats.error_frames += 1
            return None
        if msg.is_remote_frame:
            self.stats.remote_frames += 1
            return None
        self.stats.frames += 1
        return msg

    def _open(self) -> bool:
        assert self._opener is not None
        try:
            self._bus = self._opener()
            return True
        except can.CanInterfaceNotImplementedError:
            raise  # a misspelt or missing interface never appears by waiting
        except (can.CanError, OSError, ValueError) as exc:
            self.stats.bus_errors += 1
            if self._down_since is None:
                self._down_since = (time.monotonic(), time.time())
                log.warning("CAN bus unavailable (%s); retrying", exc)
            else:
                log.debug("CAN bus still unavailable: %s", exc)
            self._wait()
            return False

    @property
    def down_for_s(self) -> float:
        """How long the current outage has lasted (0.0 while the bus works)."""
        return time.monotonic() - self._down_since[0] if self._down_since else 0.0

    def _wait(self) -> None:
        self._stop.wait(self._backoff.next())

    def _recovered(self) -> None:
        assert self._down_since is not None
        began, began_wall = self._down_since
        gap = time.monotonic() - began
        self.stats.outages += 1
        self.stats.outage_seconds += gap
        self.stats.last_outage = (began_wall, gap)
        self._down_since = None
        self._backoff.reset()
        log.warning("CAN bus back after %.1f s without frames", gap)

    def _close(self) -> None:
        if self._bus is not None:
            try:
                self._bus.shutdown()
            except Exception:  # shutting down a broken bus may fail too
                pass
            self._bus = None

    def close(self) -> None:
        self._close()
