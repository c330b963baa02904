"""Deterministic fault points: code calls :func:`hit` at each boundary between two steps that must
survive a crash; a test chooses one boundary to fail at. Standard library only, imports nothing of
the project, so every layer may call it.

``DCM_FAULT="<point>[:<n>][:<action>]"`` arms one point: its n-th hit (default 1) performs the
action — ``kill`` (SIGKILL of this process, the default), ``raise`` (:class:`FaultInjected`, an
``OSError``), ``sqlite`` (``sqlite3.OperationalError``, as a full or failing disk gives),
``hang`` (sleep for an hour: a blocked disk). Before acting it appends the point's name to the
file ``DCM_FAULT_LOG`` (when set) and fsyncs it, so a test knows the risky path really ran.

In-process tests use :func:`set_hook` instead. Unarmed, :func:`hit` costs one call and three
comparisons. The environment is read once, at the first :func:`hit`.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

__all__ = ["FaultInjected", "hit", "set_hook", "reset"]

ACTIONS = ("kill", "raise", "sqlite", "hang")


class FaultInjected(OSError):
    """Raised by an armed fault point whose action is ``raise``."""


_hook: Callable[[str], None] | None = None
_armed: tuple[str, int, str] | None = None
_loaded = False
_count = 0


def _load() -> None:
    global _armed, _loaded
    _loaded = True
    spec = os.environ.get("DCM_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    name, n, action = parts[0], 1, "kill"
    for p in parts[1:]:
        if p.isdigit():
            n = int(p)
        elif p in ACTIONS:
            action = p
        else:
            raise ValueError(f"DCM_FAULT={spec!r}: {p!r} is neither a count nor one of {ACTIONS}")
    _armed = (name, n, action)


def hit(point: str) -> None:
    """Mark the boundary ``point``; fails here when a test armed it."""
    global _count
    if not _loaded:
        _load()
    if _hook is not None:
        _hook(point)
    if _armed is None or _armed[0] != point:
        return
    _count += 1
    if _count != _armed[1]:
        return
    log = os.environ.get("DCM_FAULT_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{point}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    action = _armed[2]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # SIGKILL is delivered before this returns
    elif action == "raise":
        raise FaultInjected(f"fault injected at {point}")
    elif action == "sqlite":
        import sqlite3
        raise sqlite3.OperationalError(f"disk I/O error (fault injected at {point})")
    elif action == "hang":
        time.sleep(3600)


def set_hook(fn: Callable[[str], None] | None) -> None:
    """Call ``fn(point)`` at every :func:`hit` (tests; None removes it)."""
    global _hook
    _hook = fn


def reset() -> None:
    """Forget the hook and re-read ``DCM_FAULT`` at the next hit (tests)."""
    global _hook, _loaded, _armed, _count
    _hook, _loaded, _armed, _count = None, False, None, 0
