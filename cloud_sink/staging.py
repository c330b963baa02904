"""The sink's durable staging area and state (SQLite, WAL).

Every accepted packet is inserted here, keyed by (vehicle, boot id, seq),
*before* the broker gets its PUBACK; a second delivery of the same key is a
duplicate and is dropped in the same transaction. The lake writer then moves
staged packets into Parquet in numbered batches: a batch is assigned in one
transaction, its files are written under names derived from the worker id
and batch number (so redoing a batch after a crash overwrites, never
duplicates), and the batch is marked done. A staged packet whose schema is
not known yet simply waits here ("parked") until the schema arrives.

Keys live in ``packets`` (small rows, kept for dedupe after the packet is
in the lake); the bytes of pending packets live in ``payloads`` and are
deleted when their batch is done, so assigning and finishing a batch never
rewrites packet bytes (tables, layout version and migration: ``staging_db``).

The same database holds the learned schemas, schema-change events and the
latest-state table (one row per masked vehicle, its signals' last values as JSON).
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from .gaps import Gap, union_gaps
from .staging_db import StagingError, connect
from .table import merge_latest

T = TypeVar("T")

NEW, DUPLICATE, STALE = "new", "duplicate", "stale"

# Lookups of many keys at once. A JOIN on a VALUES list, not "(a, b) IN (VALUES ...)": SQLite
# (3.40) scans the whole table for the latter; the planner searches the key index for these
# (tests/test_sink_registry.py checks the plans).
SEEN_SQL = ("SELECT p.vehicle, p.boot, p.seq FROM (VALUES {marks}) v"
            " JOIN packets p ON p.vehicle = v.column1 AND p.boot = v.column2 AND p.seq = v.column3")
FLOORS_SQL = ("SELECT DISTINCT s.vehicle, s.boot, s.floor FROM (VALUES {marks}) v"
              " JOIN streams s ON s.vehicle = v.column1 AND s.boot = v.column2 WHERE s.floor >= 0")
USES_SQL = ("SELECT u.scope, u.key, u.fingerprint FROM (VALUES {marks}) v"
            " JOIN schema_use u ON u.scope = v.column1 AND u.key = v.column2 ORDER BY u.first_seen")
CURRENT_SQL = ("SELECT c.scope, c.key, c.fingerprint FROM (VALUES {marks}) v"
               " JOIN schema_current c ON c.scope = v.column1 AND c.key = v.column2")


@dataclasses.dataclass(frozen=True)
class StagedPacket:
    """A packet of a batch, in lake order. Its bytes are read on demand (:meth:`Staging.payloads`):
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


@dataclasses.dataclass(frozen=True)
class Backlog:
    """Staged packets with a known schema that wait for the lake."""

    packets: int
    bytes: int
    oldest: float | None


class Staging:
    """Thread-safe access to the sink's SQLite database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StagingError(f"{self.path}: {exc}") from exc
        self._db = connect(self.path)

    def _tx(self, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                result = fn()
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StagingError(f"{self.path}: {exc}") from exc

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StagingError(f"{self.path}: {exc}") from exc

    def stage(self, packets: Sequence[NewPacket]) -> list[str]:
        """Durably insert packets; returns per packet ``NEW``, ``DUPLICATE`` or ``STALE`` (at or
        below its stream's pruned floor: it cannot be told from a duplicate any more)."""

        def run() -> list[str]:
            seen: set[tuple[str, bytes, int]] = set()
            floors: dict[tuple[str, bytes], int] = {}
            for k in range(0, len(packets), 300):  # 3 parameters per key, well under SQLite's limit
                keys = [(p.vehicle, p.boot, p.seq) for p in packets[k:k + 300]]
                marks = ",".join(["(?, ?, ?)"] * len(keys))
                flat = [x for key in keys for x in key]
                seen.update((v, bytes(b), s) for v, b, s in self._db.execute(SEEN_SQL.format(marks=marks), flat))
                floors.update(((v, bytes(b)), f) for v, b, f in self._db.execute(FLOORS_SQL.format(marks=marks), flat))
            out, rows, payloads = [], [], []
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
                    payloads.append(p.payload)
            if rows:
                first = self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM packets").fetchone()[0]
                self._db.executemany(
                    "INSERT INTO packets (id, vehicle, boot, seq, fingerprint, model, part, start_time, rows,"
                    " size, pending, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                    [(first + i, *r) for i, r in enumerate(rows)])
                self._db.executemany("INSERT INTO payloads (id, data) VALUES (?, ?)",
                                     [(first + i, b) for i, b in enumerate(payloads)])
            self._db.executemany(  # per (vehicle, boot): highest seq and count, for the gap metric
                "INSERT INTO streams (vehicle, boot, top, n) VALUES (?, ?, ?, 1) ON CONFLICT (vehicle, boot)"
                " DO UPDATE SET top = max(top, excluded.top), n = n + 1", [r[:3] for r in rows])
            return out

        return self._tx(run)

    def prune(self, before: float) -> int:
        """Forget the keys of packets received before ``before`` that are already in the lake.

        Bounds the database: dedupe then covers the retention window. Each stream remembers the
        highest pruned seq (``floor``); a later packet at or below it is reported ``STALE``."""

        def run() -> int:
            self._db.execute(
                "UPDATE streams SET floor = max(floor, (SELECT MAX(seq) FROM packets p WHERE p.vehicle ="
                " streams.vehicle AND p.boot = streams.boot AND p.pending = 0 AND p.received < ?))"
                " WHERE EXISTS (SELECT 1 FROM packets p WHERE p.vehicle = streams.vehicle AND p.boot ="
                " streams.boot AND p.pending = 0 AND p.received < ?)", (before, before))
            return self._db.execute("DELETE FROM packets WHERE pending = 0 AND received < ?", (before,)).rowcount

        return self._tx(run)

    def parked_before(self, before: float, limit: int) -> list[tuple[int, str, bytes, int, bytes, bytes]]:
        """Up to ``limit`` packets parked (their schema unknown to this database) since before
        ``before``: (id, vehicle, boot, seq, fingerprint, payload). Changes nothing."""
        rows = self._read(
            "SELECT p.id, p.vehicle, p.boot, p.seq, p.fingerprint, d.data FROM packets p JOIN payloads d ON d.id = p.id"
            " WHERE p.pending = 1 AND p.batch IS NULL AND p.received < ?"
            " AND p.fingerprint NOT IN (SELECT fingerprint FROM schemas) ORDER BY p.id LIMIT ?", (before, limit))
        return [(i, v, bytes(b), q, bytes(f), bytes(d)) for i, v, b, q, f, d in rows]

    def forget_parked(self, ids: Sequence[int]) -> int:
        """Drop the bytes of packets returned by :meth:`parked_before` once they are safe elsewhere
        (their keys stay for dedupe); a packet whose schema arrived meanwhile is kept. Returns
        how many were dropped."""

        def run() -> int:
            still = [i for i in ids if self._db.execute(
                "SELECT 1 FROM packets WHERE id = ? AND pending = 1 AND batch IS NULL"
                " AND fingerprint NOT IN (SELECT fingerprint FROM schemas)", (i,)).fetchone()]
            self._release(still)
            return len(still)

        return self._tx(run)

    def backlog(self, fingerprints: Iterable[bytes]) -> Backlog:
        known = list(fingerprints)
        if not known:
            return Backlog(0, 0, None)
        marks = ",".join("?" * len(known))
        n, size, oldest = self._read(
            f"SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received) FROM packets"
            f" WHERE pending = 1 AND batch IS NULL AND fingerprint IN ({marks})", known)[0]
        return Backlog(int(n), int(size), oldest)

    def unfinished_batch(self) -> bool:
        """A batch was assigned but not finished (a crash or a failed write): it must be redone."""
        return bool(self._read("SELECT 1 FROM batches WHERE done = 0 LIMIT 1"))

    def assign_batch(self, fingerprints: Iterable[bytes], limit: int) -> tuple[int, bool, list[StagedPacket]] | None:
        """Put up to ``limit`` staged packets with a known schema into a new batch.

        Returns (batch, redo, packets) with the packets in lake order (model, day,
        fingerprint, partition, vehicle, time). An unfinished batch (left by a crash) is
        returned first with ``redo`` true, so it is written again.
        """
        known = list(fingerprints)

        def run():
            row = self._db.execute("SELECT id FROM batches WHERE done = 0 ORDER BY id LIMIT 1").fetchone()
            redo = row is not None
            if row is None:
                if not known:
                    return None
                marks = ",".join("?" * len(known))
                batch = self._db.execute("INSERT INTO batches (done) VALUES (0)").lastrowid
                assigned = self._db.execute(
                    f"UPDATE packets SET batch = ? WHERE id IN (SELECT id FROM packets WHERE pending = 1"
                    f" AND batch IS NULL AND fingerprint IN ({marks}) ORDER BY id LIMIT ?)",
                    (batch, *known, limit)).rowcount
                if not assigned:
                    self._db.execute("DELETE FROM batches WHERE id = ?", (batch,))
                    return None
            else:
                batch = row[0]
            rows = self._db.execute(
                "SELECT id, vehicle, boot, seq, fingerprint, model, part, start_time FROM packets"
                " WHERE batch = ? AND pending = 1"
                " ORDER BY model, start_time / 86400, fingerprint, part, vehicle, start_time, boot, seq", (batch,)
            ).fetchall()
            return batch, redo, [StagedPacket(i, v, bytes(b), s, bytes(f), m, pt, t)
                                 for i, v, b, s, f, m, pt, t in rows]

        return self._tx(run)

    def payloads(self, ids: Sequence[int]) -> dict[int, bytes]:
        """The staged bytes of pending packets, by packet id."""
        out: dict[int, bytes] = {}
        for k in range(0, len(ids), 500):
            part = ids[k:k + 500]
            out.update((i, bytes(d)) for i, d in self._read(
                f"SELECT id, data FROM payloads WHERE id IN ({','.join('?' * len(part))})", part))
        return out

    def finish_batch(self, batch: int, files: Sequence[str],
                     latest: Mapping[str, Mapping[str, tuple[int, float]]]) -> None:
        """Mark a batch written, drop its payloads (keys stay for dedupe) and merge latest state
        (one row per masked vehicle; per signal the later value wins)."""

        def run() -> None:
            self._db.execute("UPDATE batches SET done = 1, files = ? WHERE id = ?", ("\n".join(files), batch))
            # "pending = 1" lets SQLite use packets_pending instead of a table scan
            self._db.execute("DELETE FROM payloads WHERE id IN (SELECT id FROM packets WHERE batch = ? AND pending = 1)",
                             (batch,))
            self._db.execute("UPDATE packets SET pending = 0 WHERE batch = ? AND pending = 1", (batch,))
            vehicles = list(latest)
            old: dict[str, dict[str, tuple[int, float]]] = {}
            for k in range(0, len(vehicles), 500):
                part = vehicles[k:k + 500]
                rows = self._db.execute(f"SELECT vehicle, signals FROM latest_state WHERE vehicle IN"
                                        f" ({','.join('?' * len(part))})", part)
                old.update((v, {n: (t, x) for n, (t, x) in json.loads(j).items()}) for v, j in rows)
            merged = {v: dict(old[v]) for v in old}
            merge_latest(merged, {v: dict(s) for v, s in latest.items()})
            self._db.executemany(
                "INSERT OR REPLACE INTO latest_state (vehicle, ts, signals) VALUES (?, ?, ?)",
                [(v, max(t for t, _ in sig.values()), json.dumps(sig)) for v, sig in merged.items() if sig])

        self._tx(run)

    def drop(self, ids: Sequence[int]) -> None:
        """Forget the payloads of packets rejected at write time (their keys stay for dedupe)."""
        self._tx(lambda: self._release(ids))

    def _release(self, ids: Sequence[int]) -> None:
        """Inside a transaction: delete packets' bytes and mark them no longer pending."""
        rows = [(i,) for i in ids]
        self._db.executemany("DELETE FROM payloads WHERE id = ?", rows)
        self._db.executemany("UPDATE packets SET pending = 0 WHERE id = ?", rows)

    # -- schemas --------------------------------------------------------------------------------

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
        return [(bytes(f), bytes(j)) for f, j in self._read("SELECT fingerprint, json FROM schemas")]

    def schema_state(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[bytes, set[bytes]]]:
        """For each known (scope, key): its current fingerprint and every fingerprint it ever used.
        Unknown keys are absent."""
        out: dict[tuple[str, str], tuple[bytes, set[bytes]]] = {}
        for k in range(0, len(keys), 400):
            part = keys[k:k + 400]
            marks = ",".join(["(?, ?)"] * len(part))
            flat = [x for key in part for x in key]
            seen: dict[tuple[str, str], list[bytes]] = {}
            # oldest first: the last one is current when schema_current has no row (older databases)
            for scope, key, fp in self._read(USES_SQL.format(marks=marks), flat):
                seen.setdefault((scope, key), []).append(bytes(fp))
            current = {(scope, key): bytes(fp) for scope, key, fp in self._read(CURRENT_SQL.format(marks=marks), flat)}
            for sk, fps in seen.items():
                out[sk] = (current.get(sk, fps[-1]), set(fps))
        return out

    def record_schema_use(self, uses: Sequence[tuple[str, str, bytes]], now: float,
                          events: Sequence[tuple[str, str, bytes | None, bytes, str]],
                          current: Mapping[tuple[str, str], bytes] | None = None) -> list[int]:
        """Store new (scope, key, fingerprint) uses, the current fingerprint of the keys whose
        fingerprint changed, and the change events; returns the event ids."""

        def run() -> list[int]:
            self._db.executemany("INSERT OR IGNORE INTO schema_use VALUES (?, ?, ?, ?)",
                                 [(s, k, f, now) for s, k, f in uses])
            self._db.executemany("INSERT OR REPLACE INTO schema_current VALUES (?, ?, ?)",
                                 [(s, k, f) for (s, k), f in (current or {}).items()])
            return [int(self._db.execute(
                "INSERT INTO schema_events (time, scope, key, old_fingerprint, new_fingerprint, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)", (now, *e)).lastrowid) for e in events]

        return self._tx(run)

    def schema_events(self) -> list[tuple[int, float, str, str, bytes | None, bytes, str]]:
        rows = self._read("SELECT id, time, scope, key, old_fingerprint, new_fingerprint, detail"
                          " FROM schema_events ORDER BY id")
        return [(i, t, s, k, bytes(o) if o is not None else None, bytes(n), d) for i, t, s, k, o, n, d in rows]

    # -- queries --------------------------------------------------------------------------------

    def count(self, where: str = "1") -> int:
        return int(self._read(f"SELECT COUNT(*) FROM packets WHERE {where}")[0][0])

    def pending(self) -> int:
        """Packets staged but not yet in the lake (including parked ones)."""
        return self.count("pending = 1")

    def gaps(self) -> list[Gap]:
        """Per (vehicle, boot), the seq ranges never received (below the highest seq seen).

        Scans every key, on its own read connection so intake is not blocked meanwhile."""
        return union_gaps([self.path])

    def missing_count(self) -> int:
        """Total number of seqs missing below each (vehicle, boot)'s highest seq (one row per stream)."""
        return int(self._read("SELECT COALESCE(SUM(top + 1 - n), 0) FROM streams")[0][0])

    def latest_state(self, vehicle: str) -> dict[str, tuple[int, float | None]]:
        """Signal -> (unix ts, value) of a masked vehicle; empty when unknown."""
        rows = self._read("SELECT signals FROM latest_state WHERE vehicle = ?", (vehicle,))
        if not rows:
            return {}
        return {n: (int(t), None if x is None or x != x else x) for n, (t, x) in json.loads(rows[0][0]).items()}

    def close(self) -> None:
        with self._lock:
            self._db.close()


