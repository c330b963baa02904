"""Learned schemas, the fingerprints each model and vehicle used (and uses now), and the
schema-change events, as the registry (:mod:`cloud_sink.registry`) records them."""
from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from .staging_db import Database

USES_SQL = ("SELECT u.scope, u.key, u.fingerprint FROM (VALUES {marks}) v"
            " JOIN schema_use u ON u.scope = v.column1 AND u.key = v.column2 ORDER BY u.first_seen")
CURRENT_SQL = ("SELECT c.scope, c.key, c.fingerprint FROM (VALUES {marks}) v"
               " JOIN schema_current c ON c.scope = v.column1 AND c.key = v.column2")

Event = tuple[str, str, bytes | None, bytes, str]  # scope, key, old fingerprint, new fingerprint, detail JSON


class SchemaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, fingerprint: bytes, payload: bytes, now: float) -> bool:
        """Remember a schema; True when it was new."""
        return self.db.tx(lambda c: c.execute(
            "INSERT OR IGNORE INTO schemas (fingerprint, json, first_seen) VALUES (?, ?, ?)",
            (fingerprint, payload, now)).rowcount == 1)

    def all(self) -> list[tuple[bytes, bytes]]:
        """(fingerprint, schema JSON) of every learned schema, oldest first."""
        return [(bytes(f), bytes(j)) for f, j in self.db.read(
            "SELECT fingerprint, json FROM schemas ORDER BY first_seen, fingerprint")]

    def in_use(self, fingerprints: Sequence[bytes]) -> set[bytes]:
        """Those of ``fingerprints`` some model or vehicle used, or some pending packet carries
        (a schema the lake writer may still need)."""
        out: set[bytes] = set()
        for k in range(0, len(fingerprints), 400):
            part = list(fingerprints[k:k + 400])
            marks = ",".join("?" * len(part))
            out.update(bytes(f) for (f,) in self.db.read(
                f"SELECT DISTINCT fingerprint FROM schema_use WHERE fingerprint IN ({marks})"
                f" UNION SELECT DISTINCT fingerprint FROM packets WHERE pending = 1 AND fingerprint IN ({marks})",
                part + part))
        return out

    def forget(self, fingerprints: Sequence[bytes]) -> int:
        """Delete learned schemas (never used ones: see :meth:`in_use`); returns how many."""
        return self.db.tx(lambda c: sum(
            c.execute("DELETE FROM schemas WHERE fingerprint = ?", (f,)).rowcount for f in fingerprints))

    def state(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[bytes, set[bytes]]]:
        """For each known (scope, key): its current fingerprint and every fingerprint it ever used.
        Unknown keys are absent."""
        out: dict[tuple[str, str], tuple[bytes, set[bytes]]] = {}
        for k in range(0, len(keys), 400):
            part = keys[k:k + 400]
            marks = ",".join(["(?, ?)"] * len(part))
            flat = [x for key in part for x in key]
            seen: dict[tuple[str, str], list[bytes]] = {}
            # oldest first: the last one is current when schema_current has no row (older databases)
            for scope, key, fp in self.db.read(USES_SQL.format(marks=marks), flat):
                seen.setdefault((scope, key), []).append(bytes(fp))
            current = {(scope, key): bytes(fp)
                       for scope, key, fp in self.db.read(CURRENT_SQL.format(marks=marks), flat)}
            for sk, fps in seen.items():
                out[sk] = (current.get(sk, fps[-1]), set(fps))
        return out

    def record_use(self, uses: Sequence[tuple[str, str, bytes]], now: float, events: Sequence[Event],
                   current: Mapping[tuple[str, str], bytes] | None = None) -> list[int]:
        """Store new (scope, key, fingerprint) uses, the current fingerprint of the keys whose
        fingerprint changed, and the change events; returns the event ids."""

        def run(c: sqlite3.Connection) -> list[int]:
            c.executemany("INSERT OR IGNORE INTO schema_use VALUES (?, ?, ?, ?)", [(s, k, f, now) for s, k, f in uses])
            c.executemany("INSERT OR REPLACE INTO schema_current VALUES (?, ?, ?)",
                          [(s, k, f) for (s, k), f in (current or {}).items()])
            return [int(c.execute(
                "INSERT INTO schema_events (time, scope, key, old_fingerprint, new_fingerprint, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)", (now, *e)).lastrowid) for e in events]

        return self.db.tx(run)

    def events(self) -> list[tuple[int, float, str, str, bytes | None, bytes, str]]:
        """Every stored schema event: (id, time, scope, key, old fingerprint, new fingerprint, detail)."""
        rows = self.db.read("SELECT id, time, scope, key, old_fingerprint, new_fingerprint, detail"
                            " FROM schema_events ORDER BY id")
        return [(i, t, s, k, bytes(o) if o is not None else None, bytes(n), d) for i, t, s, k, o, n, d in rows]

    def prune_events(self, before: float) -> int:
        """Delete the schema events stored before Unix time ``before`` (retention); returns how many."""
        return self.db.tx(lambda c: c.execute("DELETE FROM schema_events WHERE time < ?", (before,)).rowcount)
