"""Put simulated frames onto a python-can bus, optionally paced in real time."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import can

log = logging.getLogger(__name__)

SEND_RETRIES = 5
RETRY_DELAY_S = 0.01
SEND_TIMEOUT_S = 0.2


def _send(bus: can.BusABC, frame: can.Message, stop: threading.Event | None) -> None:
    """Send one frame, retrying a failing send a few times before raising."""
    for attempt in range(SEND_RETRIES + 1):
        try:
            bus.send(frame, timeout=SEND_TIMEOUT_S)
            return
        except can.CanError as exc:
            if attempt == SEND_RETRIES or (stop is not None and stop.is_set()):
                raise
            log.debug("send of 0x%X failed (%s), retry %d", frame.arbitration_id, exc, attempt + 1)
            time.sleep(RETRY_DELAY_S * (attempt + 1))


def send_frames(bus: can.BusABC, frames: Iterable[can.Message], *, realtime: bool = False,
                on_frame: Callable[[can.Message], None] | None = None,
                stop: threading.Event | None = None) -> int:
    """Send frames onto a python-can bus, returning how many were sent.

    ``realtime=True`` paces them by their timestamps using ``time.monotonic()``
    (the first frame goes out at once); otherwise they go as fast as the bus
    takes them.  ``on_frame`` is called with every frame sent.  A
    :class:`can.CanError` on send is retried briefly, then raised.  Setting
    ``stop`` ends sending before the next frame.
    """
    sent = 0
    t0_wall: float | None = None
    t0_frame = 0.0
    for frame in frames:
        if stop is not None and stop.is_set():
            break
        if realtime:
            if t0_wall is None:
                t0_wall, t0_frame = time.monotonic(), frame.timestamp
            delay = (frame.timestamp - t0_frame) - (time.monotonic() - t0_wall)
            if delay > 0:
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    time.sleep(delay)
        _send(bus, frame, stop)
        sent += 1
        if on_frame is not None:
            on_frame(frame)
    log.debug("sent %d frames", sent)
    return sent
