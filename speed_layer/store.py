"""The rule worker's SQLite state: dedupe keys, per-vehicle state and history, alerts, the outbox.

One database per worker (WAL, ``synchronous=FULL``). Everything a packet changes is written in
one transaction (:meth:`Store.transaction`) and the packet is acknowledged to the broker only
after it commits, so a ``kill -9`` at any instant leaves either all of a packet's effects or none
(and then the broker redelivers it). Tables:

``seen``        (vehicle, boot, seq) of every packet taken, for dedupe (pruned after ``dedupe_days``)
``vehicles``    per vehicle: rule state (JSON), the order key of the newest applied packet,
                whether its history was trimmed, the rules skipped for it
``history``     per applied packet: its bytes and the vehicle's state *before* it (the checkpoint
                a replay restarts from), at most ``history`` packets per vehicle
``undo``        the before-image of every alert a packet changed, so a replay can undo it
``alerts``      the alert table (open / closed, acknowledged_at), queried by the API
``waiting``     packets whose schema has not arrived yet
``notified``    (alert id, status, content digest) already queued: each version is sent once per target
``outbox``      deliveries waiting per target (``mqtt``, ``webhook:<name>``), bounded
``schemas``, ``counters``, ``skipped_rules``
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import StoreError

LAYOUT = 1
Order = tuple[int, bytes, int]  # (start_time, boot, seq): the order packets of a vehicle are applied in

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen(vehicle TEXT, boot BLOB, seq INTEGER, at REAL NOT NULL,
    PRIMARY KEY(vehicle, boot, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS vehicles(vehicle TEXT PRIMARY KEY, state TEXT NOT NULL, t INTEGER NOT NULL,
    boot BLOB NOT NULL, seq INTEGER NOT NULL, trimmed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS history(vehicle TEXT, t INTEGER, boot BLOB, seq INTEGER, packet BLOB NOT NULL,
    before TEXT NOT NULL, PRIMARY KEY(vehicle, t, boot, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS undo(vehicle TEXT, t INTEGER, boot BLOB, seq INTEGER, n INTEGER, alert_id TEXT NOT NULL,
    before TEXT, PRIMARY KEY(vehicle, t, boot, seq, n)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts(id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL,
    episode TEXT NOT NULL, status TEXT NOT NULL, start INTEGER NOT NULL, end_t INTEGER, details TEXT NOT NULL,
    acknowledged_at REAL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_vehicle ON alerts(vehicle, start);
CREATE TABLE IF NOT EXISTS waiting(vehicle TEXT, t INTEGER, boot BLOB, seq INTEGER, fingerprint BLOB NOT NULL,
    packet BLOB NOT NULL, PRIMARY KEY(vehicle, t, boot, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS waiting_fp ON waiting(fingerprint);
CREATE TABLE IF NOT EXISTS schemas(fingerprint BLOB PRIMARY KEY, json BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS notified(alert_id TEXT, status TEXT, digest TEXT,
    PRIMARY KEY(alert_id, status, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, alert_id TEXT NOT NULL,
    status TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_target ON outbox(target, next_at);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS skipped_rules(vehicle TEXT, rule TEXT, reason TEXT NOT NULL, PRIMARY KEY(vehicle, rule));
"""
ALERT_FIELDS = ("id", "vehicle", "rule", "kind", "episode", "status", "start", "end", "details")


class Store:
    """The state database of one rule worker. Not shared between threads: open one per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path) if str(path) == ":memory:" else self.path, isolation_level=None, timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('layout', ?)", (str(LAYOUT),))
            elif int(row[0]) != LAYOUT:
                raise StoreError(f"{self.path}: state layout {row[0]}, this version reads {LAYOUT}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the state database: {exc}") from None
        self._lock = threading.Lock()
        self._in_tx = False

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable unit of work (``BEGIN IMMEDIATE`` .. ``COMMIT``)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_tx = True
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            else:
                self.db.execute("COMMIT")
            finally:
                self._in_tx = False

    # -- dedupe -----------------------------------------------------------------------------------

    def mark_seen(self, vehicle: str, boot: bytes, seq: int) -> bool:
        """Record a packet's key; False when it was already seen (a duplicate)."""
        cur = self.db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?)", (vehicle, boot, seq, time.time()))
        return cur.rowcount == 1

    def prune_seen(self, older_than_s: float) -> int:
        return self.db.execute("DELETE FROM seen WHERE at < ?", (time.time() - older_than_s,)).rowcount

    # -- vehicles and history ---------------------------------------------------------------------

    def vehicle(self, vehicle: str) -> tuple[dict[str, Any], Order, bool] | None:
        row = self.db.execute("SELECT state, t, boot, seq, trimmed FROM vehicles WHERE vehicle = ?",
                              (vehicle,)).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), (row[1], row[2], row[3]), bool(row[4])

    def save_vehicle(self, vehicle: str, state: dict[str, Any], last: Order, trimmed: bool) -> None:
        self.db.execute("INSERT OR REPLACE INTO vehicles VALUES (?, ?, ?, ?, ?, ?)",
                        (vehicle, json.dumps(state, sort_keys=True), *last, int(trimmed)))

    def add_history(self, vehicle: str, order: Order, packet: bytes, before: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?)", (vehicle, *order, packet, before))

    def history_after(self, vehicle: str, order: Order) -> list[tuple[Order, bytes, str]]:
        """History entries later than ``order``, oldest first."""
        rows = self.db.execute(
            "SELECT t, boot, seq, packet, before FROM history WHERE vehicle = ? AND (t, boot, seq) > (?, ?, ?)"
            " ORDER BY t, boot, seq", (vehicle, *order)).fetchall()
        return [((r[0], r[1], r[2]), r[3], r[4]) for r in rows]

    def oldest_history(self, vehicle: str) -> Order | None:
        row = self.db.execute("SELECT t, boot, seq FROM history WHERE vehicle = ? ORDER BY t, boot, seq LIMIT 1",
                              (vehicle,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def trim_history(self, vehicle: str, keep: int) -> int:
        """Keep the newest ``keep`` history entries of a vehicle (and their undo rows)."""
        rows = self.db.execute("SELECT t, boot, seq FROM history WHERE vehicle = ? ORDER BY t DESC, boot DESC,"
                               " seq DESC LIMIT -1 OFFSET ?", (vehicle, keep)).fetchall()
        for r in rows:
            self.db.execute("DELETE FROM history WHERE vehicle = ? AND t = ? AND boot = ? AND seq = ?", (vehicle, *r))
            self.db.execute("DELETE FROM undo WHERE vehicle = ? AND t = ? AND boot = ? AND seq = ?", (vehicle, *r))
        return len(rows)

    def drop_history_after(self, vehicle: str, order: Order) -> list[str]:
        """Undo every alert change of the history entries later than ``order`` (newest first), delete
        those entries; the ids of the alerts touched."""
        rows = self.db.execute(
            "SELECT alert_id, before FROM undo WHERE vehicle = ? AND (t, boot, seq) > (?, ?, ?)"
            " ORDER BY t DESC, boot DESC, seq DESC, n DESC", (vehicle, *order)).fetchall()
        for alert, before in rows:
            if before is None:
                self.db.execute("DELETE FROM alerts WHERE id = ?", (alert,))
            else:
                self._write_alert(json.loads(before))
        args = (vehicle, *order)
        self.db.execute("DELETE FROM undo WHERE vehicle = ? AND (t, boot, seq) > (?, ?, ?)", args)
        self.db.execute("DELETE FROM history WHERE vehicle = ? AND (t, boot, seq) > (?, ?, ?)", args)
        return sorted({r[0] for r in rows})

    # -- alerts -----------------------------------------------------------------------------------

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT id, vehicle, rule, kind, episode, status, start, end_t, details, acknowledged_at"
                              " FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            return None
        rec = dict(zip(ALERT_FIELDS, row[:9]))
        rec["details"] = json.loads(rec["details"])
        rec["acknowledged_at"] = row[9]
        return rec

    def _write_alert(self, rec: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO alerts(id, vehicle, rule, kind, episode, status, start, end_t, details, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status,"
            " start = excluded.start, end_t = excluded.end_t, details = excluded.details,"
            " updated_at = excluded.updated_at",
            (*(rec[f] for f in ALERT_FIELDS[:8]), json.dumps(rec["details"], sort_keys=True), time.time()))

    def upsert_alert(self, vehicle: str, order: Order, n: int, rec: dict[str, Any]) -> None:
        """Write an alert record, keeping its before-image for a replay to undo."""
        before = self.alert(rec["id"])
        if before is not None:
            before.pop("acknowledged_at")
        self.db.execute("INSERT OR REPLACE INTO undo VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (vehicle, *order, n, rec["id"], None if before is None else json.dumps(before)))
        self._write_alert(rec)

    def put_alert(self, rec: dict[str, Any]) -> None:
        """Write an alert that no replay can touch (edge-trigger alerts: no per-vehicle order)."""
        self._write_alert(rec)

    def acknowledge(self, alert_id: str, at: float | None = None) -> bool:
        """Mark an alert acknowledged (the third state of its lifecycle); False when unknown."""
        with self.transaction():
            cur = self.db.execute("UPDATE alerts SET acknowledged_at = ?, updated_at = ? WHERE id = ? AND"
                                  " acknowledged_at IS NULL", (at or time.time(), time.time(), alert_id))
        return cur.rowcount == 1

    def expire_alerts(self, before: float) -> int:
        """Delete the alerts closed before Unix time ``before`` (retention), with their delivery
        marks and before-images; open alerts and alerts still waiting for a delivery stay. One
        transaction, so a rule worker running beside it sees all or nothing. Returns how many."""
        with self.transaction():
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM alerts WHERE status != 'open' AND COALESCE(end_t, start) < ? AND updated_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.alert_id = alerts.id)", (before, before))]
            for k in range(0, len(ids), 500):
                part = ids[k:k + 500]
                marks = ",".join("?" * len(part))
                for table, column in (("notified", "alert_id"), ("undo", "alert_id"), ("alerts", "id")):
                    self.db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", part)
        return len(ids)

    def alerts_version(self) -> tuple[int, float]:
        """Changes whenever an alert is written, removed or acknowledged: (count, newest update)."""
        n, newest = self.db.execute("SELECT count(*), COALESCE(max(updated_at), 0) FROM alerts").fetchone()
        return int(n), float(newest)

    def alerts(self, vehicle: str | None = None) -> list[dict[str, Any]]:
        """Every alert (of one vehicle), ordered by vehicle, start and id."""
        where, args = ("WHERE vehicle = ?", (vehicle,)) if vehicle else ("", ())
        ids = [r[0] for r in self.db.execute(f"SELECT id FROM alerts {where} ORDER BY vehicle, start, id", args)]
        return [a for a in (self.alert(i) for i in ids) if a is not None]

    # -- waiting packets, schemas, skipped rules, counters ----------------------------------------

    def add_waiting(self, vehicle: str, order: Order, fingerprint: bytes, packet: bytes, limit: int) -> int:
        """Park a packet until its schema arrives; returns how many old ones were dropped for room."""
        self.db.execute("INSERT OR REPLACE INTO waiting VALUES (?, ?, ?, ?, ?, ?)", (vehicle, *order, fingerprint, packet))
        (count,) = self.db.execute("SELECT count(*) FROM waiting").fetchone()
        if count <= limit:
            return 0
        return self.db.execute("DELETE FROM waiting WHERE rowid IN (SELECT rowid FROM waiting ORDER BY t LIMIT ?)",
                               (count - limit,)).rowcount

    def take_waiting(self, fingerprint: bytes) -> list[tuple[str, bytes]]:
        rows = self.db.execute("SELECT vehicle, packet FROM waiting WHERE fingerprint = ? ORDER BY vehicle, t, boot,"
                               " seq", (fingerprint,)).fetchall()
        self.db.execute("DELETE FROM waiting WHERE fingerprint = ?", (fingerprint,))
        return rows

    def save_schema(self, fingerprint: bytes, text: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO schemas VALUES (?, ?)", (fingerprint, text))

    def schemas(self) -> dict[bytes, bytes]:
        return dict(self.db.execute("SELECT fingerprint, json FROM schemas").fetchall())

    def report_skipped(self, vehicle: str, rule: str, reason: str) -> bool:
        """Record a rule skipped for a vehicle; True the first time (so it is reported once)."""
        return self.db.execute("INSERT OR IGNORE INTO skipped_rules VALUES (?, ?, ?)",
                               (vehicle, rule, reason)).rowcount == 1

    def count(self, name: str, n: int = 1) -> None:
        self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                        (name, n, n))

    def counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters").fetchall())

    # -- notifications and the outbox -------------------------------------------------------------

    def notify_once(self, alert_id: str, status: str, digest: str = "") -> bool:
        """Record that this version of an alert is queued for delivery; True the first time."""
        return self.db.execute("INSERT OR IGNORE INTO notified VALUES (?, ?, ?)",
                               (alert_id, status, digest)).rowcount == 1

    def was_notified(self, alert_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM notified WHERE alert_id = ?", (alert_id,)).fetchone() is not None

    def enqueue(self, target: str, alert_id: str, status: str, payload: bytes, limit: int) -> int:
        """Queue a delivery; beyond ``limit`` rows for the target the oldest are dropped (returned)."""
        self.db.execute("INSERT INTO outbox(target, alert_id, status, payload) VALUES (?, ?, ?, ?)",
                        (target, alert_id, status, payload))
        (count,) = self.db.execute("SELECT count(*) FROM outbox WHERE target = ?", (target,)).fetchone()
        if count <= limit:
            return 0
        return self.db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE target = ? ORDER BY id"
                               " LIMIT ?)", (target, count - limit)).rowcount

    def due(self, target: str, limit: int, now: float | None = None) -> list[tuple[int, str, str, bytes, int]]:
        """Deliveries of a target whose retry time has come: (id, alert id, status, payload, attempts)."""
        return self.db.execute("SELECT id, alert_id, status, payload, attempts FROM outbox WHERE target = ? AND"
                               " next_at <= ? ORDER BY id LIMIT ?", (target, now or time.time(), limit)).fetchall()

    def delivered(self, outbox_id: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))

    def retry_later(self, outbox_id: int, next_at: float, error: str) -> None:
        self.db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
                        (next_at, error[:500], outbox_id))

    def outbox_depth(self, target: str | None = None) -> int:
        if target is None:
            return self.db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM outbox WHERE target = ?", (target,)).fetchone()[0]
