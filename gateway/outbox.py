"""Durable on-disk outbox: a packet is on disk before it is published and leaves only after PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed ``put`` survives a
``kill -9`` or a power cut, and a torn write never corrupts older entries.
The outbox has a byte budget; when a new packet does not fit, the oldest
packets are evicted (they are the least useful to a live fleet view) and
counted, and a warning is logged once the outbox is 80 % full.
"""
from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from pathlib import Path

import faultpoints
from dcm_base.errors import ServiceError

log = logging.getLogger(__name__)

WARN_FRACTION = 0.8


class OutboxError(ServiceError):
    """The outbox database cannot be opened or written."""


@dataclasses.dataclass(frozen=True)
class OutboxItem:
    id: int
    topic: str
    payload: bytes


@dataclasses.dataclass
class OutboxStats:
    stored: int = 0
    removed: int = 0
    evicted_packets: int = 0
    evicted_bytes: int = 0


class Outbox:
    """A FIFO of (topic, payload) that survives restarts. Thread-safe."""

    def __init__(self, path: str | Path, *, max_bytes: int = 256 << 20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.stats = OutboxStats()
        self._lock = threading.Lock()
        self._warned = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL)"
            )
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: {exc}") from exc
        self._count, self._bytes = int(row[0]), int(row[1])

    @property
    def depth(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, topic: str, payload: bytes) -> None:
        """Store a packet durably, evicting the oldest ones if the budget requires."""
        size = len(payload)
        if size > self.max_bytes:
            raise OutboxError(f"packet of {size} bytes exceeds the outbox budget of {self.max_bytes}")
        with self._lock:
            count, nbytes, evicted, evicted_bytes = self._count, self._bytes, 0, 0
            try:
                self._db.execute("BEGIN IMMEDIATE")
                while nbytes + size > self.max_bytes and count:
                    oid, osize = self._db.execute("SELECT id, size FROM outbox ORDER BY id LIMIT 1").fetchone()
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (oid,))
                    count, nbytes = count - 1, nbytes - osize
                    evicted, evicted_bytes = evicted + 1, evicted_bytes + osize
                self._db.execute("INSERT INTO outbox (topic, payload, size) VALUES (?, ?, ?)", (topic, payload, size))
                faultpoints.hit("outbox.put.before_commit")
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()  # the evictions are rolled back too: counters stay as they were
                raise OutboxError(f"{self.path}: {exc}") from exc
            faultpoints.hit("outbox.put.committed")
            self._count, self._bytes = count + 1, nbytes + size
            self.stats.evicted_packets += evicted
            self.stats.evicted_bytes += evicted_bytes
            self.stats.stored += 1
        if self._bytes > WARN_FRACTION * self.max_bytes:
            if not self._warned:
                log.warning("outbox %s is %.0f%% full (%d packets); oldest packets will be evicted",
                            self.path, 100 * self._bytes / self.max_bytes, self._count)
                self._warned = True
        else:
            self._warned = False

    def peek(self, limit: int = 32, after_id: int = 0, upto_id: int | None = None) -> list[OutboxItem]:
        """The oldest packets with ``after_id < id <= upto_id``, oldest first."""
        upto = (1 << 62) if upto_id is None else upto_id
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, upto, limit),
            ).fetchall()
        return [OutboxItem(int(i), t, bytes(p)) for i, t, p in rows]

    def peek_topic(self, suffix: str, upto_id: int, limit: int = 32) -> list[OutboxItem]:
        """The oldest items up to ``upto_id`` whose topic ends in ``suffix`` (event packets jump
        the backlog queue this way)."""
        pattern = "%" + suffix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id <= ? AND topic LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
                (upto_id, pattern, limit),
            ).fetchall()
        return [OutboxItem(int(i), t, bytes(p)) for i, t, p in rows]

    def last_id(self) -> int:
        """The id of the newest packet (0 when empty)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0])

    def remove(self, item_ids: list[int]) -> None:
        """Forget packets the broker has acknowledged, in one transaction (one fsync); ids evicted
        meanwhile are skipped."""
        if not item_ids:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                marks = ",".join("?" * len(item_ids))
                sizes = self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING size", item_ids).fetchall()
                faultpoints.hit("outbox.remove.before_commit")
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: {exc}") from exc
            faultpoints.hit("outbox.remove.committed")
            self._count -= len(sizes)
            self._bytes -= sum(int(r[0]) for r in sizes)
            self.stats.removed += len(sizes)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            self._db.close()
