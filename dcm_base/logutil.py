"""Logging helpers shared by the services."""
from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs the first occurrence of a kind of problem, then at most once per ``interval`` seconds
    with the number suppressed since, so a flood of bad input cannot flood the log."""

    def __init__(self, logger: logging.Logger, what: str, interval: float = 60.0) -> None:
        self._log = logger
        self._what = what
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" (+{self._suppressed} more {self._what} since last report)"
        self._log.warning(msg, *args)
        self._suppressed = 0
        self._next = now + self._interval
