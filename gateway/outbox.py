"""Durable on-disk outbox: a packet is on disk before it is published and leaves only after PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed ``put`` survives a
``kill -9`` or a power cut, and a torn write never corrupts older entries.
The outbox has a byte budget; when a new packet does not fit, the oldest
packets are evicted (they are the least useful to a live fleet view) and
counted, and a warning is logged once the outbox is 80 % full.

The budget follows the filesystem too: a new packet must fit in the free space
(``statvfs``) plus the database's free pages, less a reserve for the WAL and
``min_free_bytes`` for the rest of the system; otherwise the oldest packets are
evicted first (``disk_evicted_packets``), so on a full disk the newest data
survives. Should SQLite still meet a full disk ("database or disk is full":
another process filled it), the write is rolled back, the oldest packets are
evicted in rounds of 1, 2, 4, ... and the write tried again (``disk_full``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
from pathlib import Path

import faultpoints
from dcm_base.errors import ServiceError

log = logging.getLogger(__name__)

WARN_FRACTION = 0.8
DISK_OVERHEAD = 1.25  # disk bytes per payload byte (pages, row headers; measured ~1.15 on 3.5 KB packets)
MIN_FREE_BYTES = 1 << 20  # left free on the outbox's filesystem for everything else
FULL_ROUNDS = 12  # evict 1, 2, 4, ... 2048 packets before a full disk fails a put


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
    disk_evicted_packets: int = 0  # of those, evicted because the filesystem was (nearly) full
    disk_full: int = 0  # writes SQLite refused with "database or disk is full" (then retried)


class Outbox:
    """A FIFO of (topic, payload) that survives restarts. Thread-safe."""

    def __init__(self, path: str | Path, *, max_bytes: int = 256 << 20, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
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
            self._page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._wal_max = int(self._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) * self._page
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: {exc}") from exc
        self._count, self._bytes = int(row[0]), int(row[1])

    @property
    def depth(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    def disk_room(self) -> int | None:
        """Bytes the outbox may still grow by on its filesystem: free space plus the database's
        free pages, less the WAL's headroom and ``min_free_bytes`` (None: cannot tell). Call it
        with the lock held."""
        try:
            st = os.statvfs(self.path.parent)
            wal = self.path.with_name(self.path.name + "-wal")
            wal_size = wal.stat().st_size if wal.exists() else 0
            free_pages = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        except (OSError, sqlite3.Error):
            return None
        return (st.f_bavail * st.f_frsize + free_pages * self._page
                - max(0, self._wal_max + 2 * self._page - wal_size) - self.min_free_bytes)

    @property
    def budget(self) -> int:
        """The budget now: ``max_bytes``, or less when the filesystem has less room."""
        with self._lock:
            room = self.disk_room()
        if room is None:
            return self.max_bytes
        return max(0, min(self.max_bytes, self._bytes + int(room / DISK_OVERHEAD)))

    def put(self, topic: str, payload: bytes) -> None:
        """Store a packet durably, evicting the oldest ones if the budget or the disk requires."""
        size = len(payload)
        if size > self.max_bytes:
            raise OutboxError(f"packet of {size} bytes exceeds the outbox budget of {self.max_bytes}")
        with self._lock:
            room = self.disk_room()
            extra = 0
            for _ in range(FULL_ROUNDS):
                try:
                    done = self._put(topic, payload, size, room, extra)
                    break
                except sqlite3.Error as exc:
                    self._rollback()  # the evictions are rolled back too: counters stay as they were
                    if not _is_full(exc) or not self._count:
                        raise OutboxError(f"{self.path}: {exc}") from exc
                    self.stats.disk_full += 1
                    extra = max(1, 2 * extra)
                    log.warning("outbox %s: disk full; evicting the %d oldest packets and trying again",
                                self.path, extra)
            else:
                raise OutboxError(f"{self.path}: disk full even after evicting the oldest packets")
            faultpoints.hit("outbox.put.committed")
            count, nbytes, evicted, evicted_bytes, for_disk = done
            self._count, self._bytes = count + 1, nbytes + size
            self.stats.evicted_packets += evicted
            self.stats.evicted_bytes += evicted_bytes
            self.stats.disk_evicted_packets += for_disk
            self.stats.stored += 1
        if self._bytes > WARN_FRACTION * self.max_bytes:
            if not self._warned:
                log.warning("outbox %s is %.0f%% full (%d packets); oldest packets will be evicted",
                            self.path, 100 * self._bytes / self.max_bytes, self._count)
                self._warned = True
        else:
            self._warned = False

    def _put(self, topic: str, payload: bytes, size: int, room: int | None,
             extra: int) -> tuple[int, int, int, int, int]:
        """One attempt, in one transaction: evict ``extra`` oldest packets, then as many as the
        budget and the disk's ``room`` require, insert, commit. Returns (count and bytes before the
        insert, evicted, evicted bytes, evicted for the disk); the caller moves the counters."""
        count, nbytes, evicted, evicted_bytes, for_disk = self._count, self._bytes, 0, 0, 0
        self._db.execute("BEGIN IMMEDIATE")
        while count and (evicted < extra or nbytes + size > self.max_bytes
                         or (room is not None and size * DISK_OVERHEAD > room + evicted_bytes)):
            for_disk += nbytes + size <= self.max_bytes  # the configured budget alone would keep it
            oid, osize = self._db.execute("SELECT id, size FROM outbox ORDER BY id LIMIT 1").fetchone()
            self._db.execute("DELETE FROM outbox WHERE id = ?", (oid,))
            count, nbytes = count - 1, nbytes - osize
            evicted, evicted_bytes = evicted + 1, evicted_bytes + osize
        self._db.execute("INSERT INTO outbox (topic, payload, size) VALUES (?, ?, ?)", (topic, payload, size))
        faultpoints.hit("outbox.put.before_commit")
        self._db.execute("COMMIT")
        return count, nbytes, evicted, evicted_bytes, for_disk

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


def _is_full(exc: sqlite3.Error) -> bool:
    """SQLite's "database or disk is full" (SQLITE_FULL)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
