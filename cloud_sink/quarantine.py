"""Quarantine: rejected payloads kept on disk with their reason, bounded in files and bytes.

A reject is always counted by reason; its payload is kept as evidence while the quarantine has
room. The quarantine holds at most ``max_files`` payloads and ``max_bytes`` bytes (payload plus
note): to keep a new one the **oldest** are evicted first (``evicted``, ``evicted_bytes``), so the
newest rejects are the ones at hand. A payload that cannot be kept at all (larger than the whole
budget, or its write failed: a full disk, an I/O error) is counted as ``unsaved`` and logged at a
sane rate; :meth:`Quarantine.put` never raises, so a full quarantine or a failing disk never stops
intake. The files are private (folders 0700, files 0600): rejects carry raw vehicle ids.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import faultpoints
from dcm_base.logutil import RateLimitedLog

log = logging.getLogger(__name__)

MAX_FILES = 10_000
MAX_BYTES = 1 << 30  # 1 GiB


class Quarantine:
    """Writes ``<dir>/<reason>/<time ns>-<sha>.bin`` plus a ``.json`` note (topic, reason, detail).

    Thread-safe. The index of kept payloads (at most ``max_files`` entries) is rebuilt from the
    folder at start, so the bounds hold across restarts."""

    def __init__(self, directory: str | Path, *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.by_reason: collections.Counter[str] = collections.Counter()
        self.dropped = 0  # rejects counted but not kept (too large for the budget, or the write failed)
        self.write_errors = 0  # of those, the writes that failed (a full disk, an I/O error)
        self.evicted = 0  # kept payloads deleted to make room for newer ones
        self.evicted_bytes = 0
        self._log = RateLimitedLog(log, "rejected payloads")
        self._err_log = RateLimitedLog(log, "quarantine write failures")
        self._lock = threading.Lock()
        # (stem, reason, bytes on disk), oldest first
        self._index: collections.deque[tuple[str, str, int]] = collections.deque()
        self.bytes = 0
        self._scan()

    @property
    def files(self) -> int:
        """Payloads kept now."""
        return len(self._index)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def room(self) -> int:
        """How many more payloads can be kept without evicting older ones (by file count)."""
        return max(0, self.max_files - len(self._index)) if self.max_bytes > self.bytes else 0

    def put(self, reason: str, topic: str, payload: bytes, detail: str, *, only_if_kept: bool = False) -> bool:
        """Count a rejected payload and keep it, evicting the oldest kept ones when the quarantine
        is full; True when it was kept. Never raises: a failed write is counted and logged. With
        ``only_if_kept`` (the caller keeps the payload elsewhere until it is here) a payload not
        kept is not counted at all: it was not rejected yet."""
        with self._lock:
            kept = self._put(reason, topic, payload, detail)
            if kept or not only_if_kept:
                self.by_reason[reason] += 1
                self.dropped += not kept
                self._log.warning("rejected payload on %s: %s: %s", topic, reason, detail)
            return kept

    def _put(self, reason: str, topic: str, payload: bytes, detail: str) -> bool:
        stem = f"{time.time_ns()}-{hashlib.sha256(payload).hexdigest()[:12]}"
        note = json.dumps({"reason": reason, "topic": topic, "detail": detail, "bytes": len(payload),
                           "time": time.time()}).encode()
        size = len(payload) + len(note)
        if self.max_files <= 0 or size > self.max_bytes:
            return False
        while self._index and (len(self._index) >= self.max_files or self.bytes + size > self.max_bytes):
            self._evict_oldest()
        try:
            self._write(reason, stem, payload, note)
        except OSError as exc:
            self.write_errors += 1
            if exc.errno == errno.ENOSPC and self._index:
                self._evict_oldest()  # a full disk: give the next reject the oldest one's room
            self._err_log.warning("quarantine %s: cannot keep a %s payload (%d bytes): %s",
                                self.directory, reason, len(payload), exc.strerror or exc)
            return False
        self._index.append((stem, reason, size))
        self.bytes += size
        return True

    def evict_before(self, cutoff_s: float) -> tuple[int, int]:
        """Delete the payloads kept before Unix time ``cutoff_s`` (retention); returns (files, bytes)."""
        files = size = 0
        with self._lock:
            while self._index and int(self._index[0][0].split("-", 1)[0]) < cutoff_s * 1e9:
                size += self._index[0][2]
                self._delete(*self._index.popleft())
                files += 1
            self.bytes -= size
        return files, size

    # internals (called with the lock held)

    def _write(self, reason: str, stem: str, payload: bytes, note: bytes) -> None:
        folder = self.directory / reason
        if not folder.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        bin_path, note_path = folder / f"{stem}.bin", folder / f"{stem}.json"
        tmp = folder / f"{stem}.json.tmp"
        try:
            faultpoints.hit("sink.quarantine.write")
            _write_private(bin_path, payload)
            _write_private(tmp, note)
            os.replace(tmp, note_path)
        except OSError:
            for p in (bin_path, tmp):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
            raise

    def _evict_oldest(self) -> None:
        stem, reason, size = self._index.popleft()
        self._delete(stem, reason, size)
        self.bytes -= size
        self.evicted += 1
        self.evicted_bytes += size

    def _delete(self, stem: str, reason: str, size: int) -> None:
        folder = self.directory / reason
        for suffix in (".json", ".bin"):  # the note first: a note never names a missing payload
            try:
                (folder / f"{stem}{suffix}").unlink(missing_ok=True)
            except OSError as exc:
                self._err_log.warning("quarantine: cannot delete %s%s: %s", stem, suffix, exc.strerror or exc)

    def _scan(self) -> None:
        """Rebuild the index from the folder (oldest first); drop half-written notes; enforce the
        bounds (a smaller budget than the last run's evicts the oldest now)."""
        if not self.directory.is_dir():
            return
        found = []
        for folder in self.directory.iterdir():
            if not folder.is_dir():
                continue
            for tmp in folder.glob("*.json.tmp"):
                tmp.unlink(missing_ok=True)
            for path in folder.glob("*.bin"):
                stem = path.name[:-4]
                if not stem.split("-", 1)[0].isdigit():
                    continue
                try:
                    size = path.stat().st_size
                    note = folder / f"{stem}.json"
                    size += note.stat().st_size if note.exists() else 0
                except OSError:
                    continue
                found.append((stem, folder.name, size))
        found.sort()
        self._index.extend(found)
        self.bytes = sum(f[2] for f in found)
        while self._index and (len(self._index) > self.max_files or self.bytes > self.max_bytes):
            self._evict_oldest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
