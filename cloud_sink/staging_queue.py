"""The packet queue: bytes of staged packets waiting for the lake, and the numbered batches that
move them there (assigned in one transaction, redone after a crash, finished in one)."""
from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence

from .staging_db import Database


@dataclasses.dataclass(frozen=True)
class StagedPacket:
    """A packet of a batch, in lake order. Its bytes are read on demand (:meth:`PacketQueue.payloads`):
    the writer usually still holds the packet it validated at intake."""

    id: int
    vehicle: str
    boot: bytes
    seq: int
    fingerprint: bytes
    model: str
    part: str
    start_time: int

    @property
    def key(self) -> tuple[str, bytes, int]:
        return (self.vehicle, self.boot, self.seq)


@dataclasses.dataclass(frozen=True)
class Backlog:
    """Staged packets with a known schema that wait for the lake."""

    packets: int
    bytes: int
    oldest: float | None


class PacketQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, ids: Sequence[int], payloads: Sequence[bytes]) -> None:
        """Store the bytes of newly admitted packets (joins the staging transaction)."""
        self.db.tx(lambda c: c.executemany("INSERT INTO payloads (id, data) VALUES (?, ?)", zip(ids, payloads)))

    def pending(self) -> int:
        """Packets staged but not yet in the lake (including parked ones)."""
        return int(self.db.read("SELECT COUNT(*) FROM packets WHERE pending = 1")[0][0])

    def backlog(self, fingerprints: Iterable[bytes]) -> Backlog:
        """Staged packets with one of these (known) schemas that wait for the lake."""
        known = list(fingerprints)
        if not known:
            return Backlog(0, 0, None)
        marks = ",".join("?" * len(known))
        n, size, oldest = self.db.read(
            f"SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received) FROM packets"
            f" WHERE pending = 1 AND batch IS NULL AND fingerprint IN ({marks})", known)[0]
        return Backlog(int(n), int(size), oldest)

    def unfinished_batch(self) -> bool:
        """A batch was assigned but not finished (a crash or a failed write): it must be redone."""
        return bool(self.db.read("SELECT 1 FROM batches WHERE done = 0 LIMIT 1"))

    def assign_batch(self, fingerprints: Iterable[bytes], limit: int) -> tuple[int, bool, list[StagedPacket]] | None:
        """Put up to ``limit`` staged packets with a known schema into a new batch.

        Returns (batch, redo, packets) with the packets in lake order (model, day,
        fingerprint, partition, vehicle, time). An unfinished batch (left by a crash) is
        returned first with ``redo`` true, so it is written again.
        """
        known = list(fingerprints)

        def run(c: sqlite3.Connection):
            row = c.execute("SELECT id FROM batches WHERE done = 0 ORDER BY id LIMIT 1").fetchone()
            redo = row is not None
            if row is None:
                if not known:
                    return None
                marks = ",".join("?" * len(known))
                batch = c.execute("INSERT INTO batches (done) VALUES (0)").lastrowid
                assigned = c.execute(
                    f"UPDATE packets SET batch = ? WHERE id IN (SELECT id FROM packets WHERE pending = 1"
                    f" AND batch IS NULL AND fingerprint IN ({marks}) ORDER BY id LIMIT ?)",
                    (batch, *known, limit)).rowcount
                if not assigned:
                    c.execute("DELETE FROM batches WHERE id = ?", (batch,))
                    return None
            else:
                batch = row[0]
            rows = c.execute(
                "SELECT id, vehicle, boot, seq, fingerprint, model, part, start_time FROM packets"
                " WHERE batch = ? AND pending = 1"
                " ORDER BY model, start_time / 86400, fingerprint, part, vehicle, start_time, boot, seq", (batch,)
            ).fetchall()
            return batch, redo, [StagedPacket(i, v, bytes(b), s, bytes(f), m, pt, t)
                                 for i, v, b, s, f, m, pt, t in rows]

        return self.db.tx(run)

    def payloads(self, ids: Sequence[int]) -> dict[int, bytes]:
        """The staged bytes of pending packets, by packet id."""
        out: dict[int, bytes] = {}
        for k in range(0, len(ids), 500):
            part = ids[k:k + 500]
            out.update((i, bytes(d)) for i, d in self.db.read(
                f"SELECT id, data FROM payloads WHERE id IN ({','.join('?' * len(part))})", part))
        return out

    def finish(self, batch: int, files: Sequence[str]) -> None:
        """Mark a batch written and drop its payloads (keys stay for dedupe)."""

        def run(c: sqlite3.Connection) -> None:
            c.execute("UPDATE batches SET done = 1, files = ? WHERE id = ?", ("\n".join(files), batch))
            # "pending = 1" lets SQLite use packets_pending instead of a table scan
            c.execute("DELETE FROM payloads WHERE id IN (SELECT id FROM packets WHERE batch = ? AND pending = 1)",
                      (batch,))
            c.execute("UPDATE packets SET pending = 0 WHERE batch = ? AND pending = 1", (batch,))

        self.db.tx(run)

    def drop(self, ids: Sequence[int]) -> None:
        """Forget the payloads of packets rejected at write time (their keys stay for dedupe)."""
        self.db.tx(lambda c: self._release(c, ids))

    def parked_before(self, before: float, limit: int) -> list[tuple[int, str, bytes, int, bytes, bytes]]:
        """Up to ``limit`` packets parked (their schema unknown to this database) since before
        ``before``: (id, vehicle, boot, seq, fingerprint, payload). Changes nothing."""
        rows = self.db.read(
            "SELECT p.id, p.vehicle, p.boot, p.seq, p.fingerprint, d.data FROM packets p JOIN payloads d ON d.id = p.id"
            " WHERE p.pending = 1 AND p.batch IS NULL AND p.received < ?"
            " AND p.fingerprint NOT IN (SELECT fingerprint FROM schemas) ORDER BY p.id LIMIT ?", (before, limit))
        return [(i, v, bytes(b), q, bytes(f), bytes(d)) for i, v, b, q, f, d in rows]

    def forget_parked(self, ids: Sequence[int]) -> int:
        """Drop the bytes of packets returned by :meth:`parked_before` once they are safe elsewhere
        (their keys stay for dedupe); a packet whose schema arrived meanwhile is kept. Returns
        how many were dropped."""

        def run(c: sqlite3.Connection) -> int:
            still = [i for i in ids if c.execute(
                "SELECT 1 FROM packets WHERE id = ? AND pending = 1 AND batch IS NULL"
                " AND fingerprint NOT IN (SELECT fingerprint FROM schemas)", (i,)).fetchone()]
            self._release(c, still)
            return len(still)

        return self.db.tx(run)

    @staticmethod
    def _release(c: sqlite3.Connection, ids: Sequence[int]) -> None:
        """Delete packets' bytes and mark them no longer pending."""
        rows = [(i,) for i in ids]
        c.executemany("DELETE FROM payloads WHERE id = ?", rows)
        c.executemany("UPDATE packets SET pending = 0 WHERE id = ?", rows)
