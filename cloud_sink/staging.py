"""The sink's durable staging area and state (SQLite, WAL).

Every accepted packet is inserted here, keyed by (vehicle, boot id, seq),
*before* the broker gets its PUBACK; a second delivery of the same key is a
duplicate and is dropped in the same transaction. The lake writer then moves
staged packets into Parquet in numbered batches: a batch is assigned in one
transaction, its files are written under names derived from the batch
number (so redoing a batch after a crash overwrites, never duplicates), and
the batch is marked done. A staged packet whose schema is not known yet
simply waits here ("parked") until the schema arrives.

The same database holds the latest-state table: one row per (vehicle,
signal) with the last present value and its time.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    vehicle TEXT NOT NULL, boot BLOB NOT NULL, seq INTEGER NOT NULL,
    fingerprint BLOB NOT NULL, model TEXT NOT NULL, start_time INTEGER NOT NULL, rows INTEGER NOT NULL,
    payload BLOB, batch INTEGER, received REAL NOT NULL,
    PRIMARY KEY (vehicle, boot, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS packets_pending ON packets (batch) WHERE payload IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0, files TEXT);
CREATE TABLE IF NOT EXISTS schemas (fingerprint BLOB PRIMARY KEY, json BLOB NOT NULL, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS latest_state (
    vehicle TEXT NOT NULL, signal TEXT NOT NULL, ts INTEGER NOT NULL, value REAL,
    PRIMARY KEY (vehicle, signal)
) WITHOUT ROWID;
"""


class StagingError(Exception):
    """The staging database cannot be opened or written."""


@dataclasses.dataclass(frozen=True)
class StagedPacket:
    vehicle: str
    boot: bytes
    seq: int
    fingerprint: bytes
    payload: bytes

    @property
    def key(self) -> tuple[str, bytes, int]:
        return (self.vehicle, self.boot, self.seq)


@dataclasses.dataclass(frozen=True)
class NewPacket:
    """A packet accepted at intake, to be staged."""

    vehicle: str
    boot: bytes
    seq: int
    fingerprint: bytes
    model: str
    start_time: int
    rows: int
    payload: bytes
    received: float


class Staging:
    """Thread-safe access to the sink's SQLite database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StagingError(f"{self.path}: {exc}") from exc

    def _tx(self, fn, *args):
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                result = fn(*args)
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StagingError(f"{self.path}: {exc}") from exc

    def stage(self, packets: Sequence[NewPacket]) -> list[bool]:
        """Durably insert packets; returns per packet True if new, False if a duplicate."""

        def run() -> list[bool]:
            out = []
            for p in packets:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO packets (vehicle, boot, seq, fingerprint, model, start_time, rows,"
                    " payload, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (p.vehicle, p.boot, p.seq, p.fingerprint, p.model, p.start_time, p.rows, p.payload, p.received),
                )
                out.append(cur.rowcount == 1)
            return out

        return self._tx(run)

    def assign_batch(self, fingerprints: Iterable[bytes], limit: int) -> tuple[int, list[StagedPacket]] | None:
        """Put up to ``limit`` staged packets with a known schema into a new batch.

        An unfinished batch (left by a crash) is returned first, so it is redone.
        """
        known = list(fingerprints)

        def run():
            row = self._db.execute("SELECT id FROM batches WHERE done = 0 ORDER BY id LIMIT 1").fetchone()
            if row is None:
                if not known:
                    return None
                marks = ",".join("?" * len(known))
                keys = self._db.execute(
                    f"SELECT vehicle, boot, seq FROM packets WHERE payload IS NOT NULL AND batch IS NULL"
                    f" AND fingerprint IN ({marks}) ORDER BY received LIMIT ?",
                    (*known, limit),
                ).fetchall()
                if not keys:
                    return None
                batch = self._db.execute("INSERT INTO batches (done) VALUES (0)").lastrowid
                self._db.executemany(
                    "UPDATE packets SET batch = ? WHERE vehicle = ? AND boot = ? AND seq = ?",
                    [(batch, *k) for k in keys],
                )
            else:
                batch = row[0]
            rows = self._db.execute(
                "SELECT vehicle, boot, seq, fingerprint, payload FROM packets WHERE batch = ?", (batch,)
            ).fetchall()
            return batch, [StagedPacket(v, bytes(b), s, bytes(f), bytes(p)) for v, b, s, f, p in rows]

        return self._tx(run)

    def finish_batch(self, batch: int, files: Sequence[str],
                     latest: Iterable[tuple[str, str, int, float | None]]) -> None:
        """Mark a batch written, drop its payloads (keys stay for dedupe) and upsert latest state."""

        def run() -> None:
            self._db.execute("UPDATE batches SET done = 1, files = ? WHERE id = ?", ("\n".join(files), batch))
            self._db.execute("UPDATE packets SET payload = NULL WHERE batch = ?", (batch,))
            self._db.executemany(
                "INSERT INTO latest_state (vehicle, signal, ts, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (vehicle, signal) DO UPDATE SET ts = excluded.ts, value = excluded.value"
                " WHERE excluded.ts >= latest_state.ts",
                latest,
            )

        self._tx(run)

    def save_schema(self, fingerprint: bytes, payload: bytes, now: float) -> bool:
        """Remember a schema; True when it was new."""
        return self._tx(
            lambda: self._db.execute(
                "INSERT OR IGNORE INTO schemas (fingerprint, json, first_seen) VALUES (?, ?, ?)",
                (fingerprint, payload, now),
            ).rowcount
            == 1
        )

    def schemas(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return [(bytes(f), bytes(j)) for f, j in self._db.execute("SELECT fingerprint, json FROM schemas")]

    def count(self, where: str = "1") -> int:
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM packets WHERE {where}").fetchone()[0])

    def pending(self) -> int:
        """Packets staged but not yet in the lake (including parked ones)."""
        return self.count("payload IS NOT NULL")

    def latest_state(self, vehicle: str) -> dict[str, tuple[int, float | None]]:
        with self._lock:
            rows = self._db.execute("SELECT signal, ts, value FROM latest_state WHERE vehicle = ?", (vehicle,))
            return {s: (t, v) for s, t, v in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
