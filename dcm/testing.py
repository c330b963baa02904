"""Test support only: polling for a condition, shared by the test suite (tests/) and the HIL suite (hil/).

Nothing in the product imports this. It lives in the installed ``dcm`` package because that is the one
place both suites can import from wherever they run: tests/ is not a package (its helpers are
importable only inside that suite), and hil/ also runs on a Pi or inside the HIL VM, from the same
virtualenv. Standard library only.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["until", "until_async"]


def until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Call ``predicate`` every ``interval`` seconds until it is true or ``timeout`` seconds have passed;
    whether it became true (it is asked once more at the deadline). Blocks the calling thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


async def until_async(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """:func:`until` for a coroutine: sleeps with ``asyncio.sleep`` so the event loop keeps running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())
