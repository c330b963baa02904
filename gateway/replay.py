"""Replay a recorded CAN log (candump ``-l`` .log, Vector .asc, .blf, ... via python-can's readers)
as a python-can bus, at recorded speed (or a multiple) or as fast as possible.

:class:`LogReplay` is a :class:`can.BusABC`, so the gateway reads it as it reads any bus.
Two things tell a recording from a live bus, both generic: ``recv`` raises
:class:`EOFError` at the end of the log (a source that ends: the gateway flushes and
stops), and the class attribute ``recorded = True`` says the frames carry the log's
timestamps, not this machine's clock (the gateway does not wall-clock check them, and
has nothing buffered in a kernel to drain when it stops).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import can

from dcm_base.errors import InputError


class ReplayError(InputError):
    """The log cannot be opened or read."""


class LogReplay(can.BusABC):
    """``recv`` returns the log's frames in order (paced by their timestamps unless ``speed`` is
    None or 0), honours its timeout while a frame is not due yet, then raises :class:`EOFError`."""

    recorded = True

    def __init__(self, path: str | Path, *, speed: float | None = 1.0, **kwargs: object) -> None:
        path = Path(path)
        reader_kwargs = {"relative_timestamp": False} if path.suffix.lower() == ".asc" else {}
        try:
            self._reader = can.LogReader(path, **reader_kwargs)
        except (OSError, ValueError, NotImplementedError) as exc:
            raise ReplayError(f"{path}: cannot replay: {exc}") from exc
        self.path = path
        self.speed = speed or None
        self.frames = 0
        self._frames: Iterator[can.Message] = iter(self._reader)
        self._next: can.Message | None = None  # read from the log, not due yet
        self._t0_log: float | None = None
        self._t0_mono = 0.0
        self._halt = threading.Event()
        super().__init__(channel=str(path), **kwargs)
        self.channel_info = f"replay of {path}"

    def _read(self) -> can.Message:
        try:
            msg = next(self._frames)
        except StopIteration:
            raise EOFError(str(self.path)) from None
        except Exception as exc:  # readers raise many types on a corrupt file
            raise ReplayError(f"{self.path}: frame {self.frames + 1}: {exc}") from exc
        self.frames += 1
        return msg

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self._halt.is_set():
            raise EOFError(str(self.path))
        if self._next is None:
            self._next = self._read()
        msg = self._next
        if self.speed:
            if self._t0_log is None:
                self._t0_log, self._t0_mono = msg.timestamp, time.monotonic()
            delay = self._t0_mono + (msg.timestamp - self._t0_log) / self.speed - time.monotonic()
            if delay > 0:
                wait = delay if timeout is None else min(delay, timeout)
                if self._halt.wait(wait):  # a gap in the log must not delay a shutdown
                    raise EOFError(str(self.path))
                if wait < delay:
                    return None, False
        self._next = None
        return msg, False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        raise can.CanOperationError("a log replay cannot send frames")

    def shutdown(self) -> None:
        self._halt.set()
        close = getattr(self._reader, "stop", None)
        if close:
            close()
        super().shutdown()
