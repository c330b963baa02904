"""Quarantine: rejected payloads kept on disk with their reason, never silently dropped."""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from dcm_base.logutil import RateLimitedLog

log = logging.getLogger(__name__)


class Quarantine:
    """Writes ``<dir>/<reason>/<time>-<sha>.bin`` plus a ``.json`` with topic, reason and detail.

    ``max_files`` bounds the folder; past it payloads are no longer written but still counted
    (``dropped``), and the counters by reason always are.
    """

    def __init__(self, directory: str | Path, *, max_files: int = 10_000) -> None:
        self.directory = Path(directory)
        self.max_files = max_files
        self.by_reason: collections.Counter[str] = collections.Counter()
        self.dropped = 0
        self._written = sum(1 for _ in self.directory.glob("*/*.bin")) if self.directory.exists() else 0
        self._log = RateLimitedLog(log, "rejected payloads")
        self._lock = threading.Lock()

    def room(self) -> int:
        """How many more payloads will be written before they are only counted."""
        return max(0, self.max_files - self._written)

    def put(self, reason: str, topic: str, payload: bytes, detail: str) -> None:
        """Keep a rejected payload (thread-safe); raises ``OSError`` when it cannot be written."""
        with self._lock:
            self._put(reason, topic, payload, detail)

    def _put(self, reason: str, topic: str, payload: bytes, detail: str) -> None:
        self.by_reason[reason] += 1
        self._log.warning("rejected payload on %s: %s: %s", topic, reason, detail)
        if self._written >= self.max_files:
            self.dropped += 1
            return
        folder = self.directory / reason
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.time_ns()}-{hashlib.sha256(payload).hexdigest()[:12]}"
        (folder / f"{stem}.bin").write_bytes(payload)
        meta = {"reason": reason, "topic": topic, "detail": detail, "bytes": len(payload), "time": time.time()}
        tmp = folder / f"{stem}.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, folder / f"{stem}.json")
        self._written += 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())
