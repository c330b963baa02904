"""Dedupe keys: (vehicle, boot id, seq) of every staged packet, kept after it is in the lake, and
per (vehicle, boot) stream its highest seq, count and pruned floor (for gaps and stale packets)."""
from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence

from .gaps import Gap, union_gaps
from .staging_db import Database

NEW, DUPLICATE, STALE = "new", "duplicate", "stale"

# Lookups of many keys at once. A JOIN on a VALUES list, not "(a, b) IN (VALUES ...)": SQLite
# (3.40) scans the whole table for the latter; the planner searches the key index for these
# (tests/test_sink_registry.py checks the plans).
SEEN_SQL = ("SELECT p.vehicle, p.boot, p.seq FROM (VALUES {marks}) v"
            " JOIN packets p ON p.vehicle = v.column1 AND p.boot = v.column2 AND p.seq = v.column3")
FLOORS_SQL = ("SELECT DISTINCT s.vehicle, s.boot, s.floor FROM (VALUES {marks}) v"
              " JOIN streams s ON s.vehicle = v.column1 AND s.boot = v.column2 WHERE s.floor >= 0")


@dataclasses.dataclass(frozen=True)
class NewPacket:
    """A packet accepted at intake, to be staged. ``part`` is its lake partition key."""

    vehicle: str
    boot: bytes
    seq: int
    fingerprint: bytes
    model: str
    part: str
    start_time: int
    rows: int
    payload: bytes
    received: float


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def admit(self, packets: Sequence[NewPacket]) -> tuple[list[str], list[int]]:
        """Record the keys of new packets (as pending rows of ``packets``) and their streams.

        Returns per packet ``NEW``, ``DUPLICATE`` or ``STALE`` (at or below its stream's pruned
        floor: it cannot be told from a duplicate any more), and the row ids given to the new
        ones, in order. Runs in (or joins) one transaction."""
        return self.db.tx(lambda c: self._admit(c, packets))

    def _admit(self, c: sqlite3.Connection, packets: Sequence[NewPacket]) -> tuple[list[str], list[int]]:
        seen: set[tuple[str, bytes, int]] = set()
        floors: dict[tuple[str, bytes], int] = {}
        for k in range(0, len(packets), 300):  # 3 parameters per key, well under SQLite's limit
            keys = [(p.vehicle, p.boot, p.seq) for p in packets[k:k + 300]]
            marks = ",".join(["(?, ?, ?)"] * len(keys))
            flat = [x for key in keys for x in key]
            seen.update((v, bytes(b), s) for v, b, s in c.execute(SEEN_SQL.format(marks=marks), flat))
            floors.update(((v, bytes(b)), f) for v, b, f in c.execute(FLOORS_SQL.format(marks=marks), flat))
        out, rows = [], []
        for p in packets:
            key = (p.vehicle, p.boot, p.seq)
            if key in seen:
                out.append(DUPLICATE)
            elif p.seq <= floors.get((p.vehicle, p.boot), -1):
                out.append(STALE)
            else:
                seen.add(key)  # a second copy within the same batch is a duplicate too
                out.append(NEW)
                rows.append((p.vehicle, p.boot, p.seq, p.fingerprint, p.model, p.part, p.start_time, p.rows,
                             len(p.payload), p.received))
        ids: list[int] = []
        if rows:
            first = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM packets").fetchone()[0]
            ids = list(range(first, first + len(rows)))
            c.executemany(
                "INSERT INTO packets (id, vehicle, boot, seq, fingerprint, model, part, start_time, rows,"
                " size, pending, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                [(i, *r) for i, r in zip(ids, rows)])
        c.executemany(  # per (vehicle, boot): highest seq and count, for the gap metric
            "INSERT INTO streams (vehicle, boot, top, n) VALUES (?, ?, ?, 1) ON CONFLICT (vehicle, boot)"
            " DO UPDATE SET top = max(top, excluded.top), n = n + 1", [r[:3] for r in rows])
        return out, ids

    def prune(self, before: float) -> int:
        """Forget the keys of packets received before ``before`` that are already in the lake.

        Bounds the database: dedupe then covers the retention window. Each stream remembers the
        highest pruned seq (``floor``); a later packet at or below it is reported ``STALE``."""

        def run(c: sqlite3.Connection) -> int:
            c.execute(
                "UPDATE streams SET floor = max(floor, (SELECT MAX(seq) FROM packets p WHERE p.vehicle ="
                " streams.vehicle AND p.boot = streams.boot AND p.pending = 0 AND p.received < ?))"
                " WHERE EXISTS (SELECT 1 FROM packets p WHERE p.vehicle = streams.vehicle AND p.boot ="
                " streams.boot AND p.pending = 0 AND p.received < ?)", (before, before))
            return c.execute("DELETE FROM packets WHERE pending = 0 AND received < ?", (before,)).rowcount

        return self.db.tx(run)

    def count(self, where: str = "1") -> int:
        """Keys held (``where`` filters the ``packets`` table)."""
        return int(self.db.read(f"SELECT COUNT(*) FROM packets WHERE {where}")[0][0])

    def missing_count(self) -> int:
        """Total number of seqs missing below each (vehicle, boot)'s highest seq (one row per stream)."""
        return int(self.db.read("SELECT COALESCE(SUM(top + 1 - n), 0) FROM streams")[0][0])

    def gaps(self) -> list[Gap]:
        """Per (vehicle, boot), the seq ranges never received (below the highest seq seen).

        Scans every key, on its own read connection so intake is not blocked meanwhile."""
        return union_gaps([self.db.path])
