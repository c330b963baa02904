"""Replay a recorded CAN log (candump ``-l`` .log, Vector .asc, .blf, ... via python-can's readers)
as the gateway's frame source, at recorded speed (or a multiple) or as fast as possible."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import can

from dcm_base.errors import InputError


class ReplayError(InputError):
    """The log cannot be opened or read."""


class LogReplay:
    """Bus-like: ``recv`` returns the log's frames in order, then raises :class:`EOFError`."""

    def __init__(self, path: str | Path, *, speed: float | None = 1.0, stop: threading.Event | None = None) -> None:
        path = Path(path)
        kwargs = {"relative_timestamp": False} if path.suffix.lower() == ".asc" else {}
        try:
            self._reader = can.LogReader(path, **kwargs)
        except (OSError, ValueError, NotImplementedError) as exc:
            raise ReplayError(f"{path}: cannot replay: {exc}") from exc
        self.path = path
        self.speed = speed
        self._frames: Iterator[can.Message] = iter(self._reader)
        self._t0_log: float | None = None
        self._t0_mono = 0.0
        self.frames = 0
        self._stop = stop or threading.Event()

    def recv(self, timeout: float | None = None) -> can.Message | None:
        try:
            msg = next(self._frames)
        except StopIteration:
            raise EOFError(str(self.path)) from None
        except Exception as exc:  # readers raise many types on a corrupt file
            raise ReplayError(f"{self.path}: frame {self.frames + 1}: {exc}") from exc
        self.frames += 1
        if self.speed:
            if self._t0_log is None:
                self._t0_log, self._t0_mono = msg.timestamp, time.monotonic()
            due = self._t0_mono + (msg.timestamp - self._t0_log) / self.speed
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):  # a gap in the log must not delay a stop
                raise EOFError(str(self.path))
        return msg

    def stop(self) -> None:
        """Make a pending ``recv`` return (as end of log) at once."""
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        close = getattr(self._reader, "stop", None)
        if close:
            close()
