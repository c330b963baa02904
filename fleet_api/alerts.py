"""The speed layer's alerts: listed from the rule workers' stores, acknowledged through them.

Listing reads each store's ``alerts`` table over a read-only SQLite connection (one query per
page, newest first, across every worker's store); acknowledging goes through
:meth:`speed_layer.store.Store.acknowledge`, in the store that holds the alert.

The rule workers key alerts by the vehicle id of the packets (the raw id); the API speaks masked
ids only (``minute_packet.masking.mask_vehicle`` with the sink's key), so every alert leaves here
with ``vehicle`` masked and the raw id never in an answer.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minute_packet.masking import mask_vehicle
from speed_layer.store import Store

from .errors import BadRequest, SourceUnavailable

STATES = ("open", "closed", "acknowledged", "unacknowledged", "all")
_COLS = "id, vehicle, rule, kind, episode, status, start, end_t, details, acknowledged_at, updated_at"


class AlertReader:
    def __init__(self, paths: tuple[Path, ...], secret: bytes) -> None:
        self.paths = paths
        self.secret = secret
        self._masks: dict[str, str] = {}  # raw vehicle id -> masked (bounded by the stores' vehicles)
        self._ro: dict[Path, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def _rows(self, sql: str, args: list[Any]) -> list[tuple[Path, tuple]]:
        out = []
        with self._lock:
            for p in self.paths:
                con = self._ro.get(p)
                if con is None:
                    if not p.exists():
                        continue
                    con = self._ro[p] = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5,
                                                        check_same_thread=False)
                try:
                    out += [(p, r) for r in con.execute(sql, args).fetchall()]
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        continue
                    raise SourceUnavailable(f"{p}: {exc}") from None
        return out

    def mask(self, raw: str) -> str:
        m = self._masks.get(raw)
        if m is None:
            m = self._masks[raw] = mask_vehicle(self.secret, raw)
        return m

    def alert_json(self, row: tuple) -> dict[str, Any]:
        a = dict(zip(("id", "vehicle", "rule", "kind", "episode", "status", "start", "end", "details",
                      "acknowledged_at", "updated_at"), row))
        a["details"] = json.loads(a["details"])
        a["vehicle"] = self.mask(a["vehicle"])
        return a

    def raw_ids(self, masked: Iterable[str]) -> list[str]:
        """The raw ids in the stores whose mask is one of ``masked``."""
        want = set(masked)
        return sorted(raw for (raw,) in (r for _, r in self._rows("SELECT DISTINCT vehicle FROM alerts", []))
                      if self.mask(raw) in want)

    def list(self, state: str = "all", vehicles: Iterable[str] | None = None, before: tuple[int, str] | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """Alerts newest first (by start, then id), ``before`` the cursor (start, id); ``vehicles``
        None means every vehicle."""
        if state not in STATES:
            raise BadRequest(f"state: must be one of {', '.join(STATES)}")
        where, args = [], []
        where.append({"open": "status = 'open'", "closed": "status = 'closed'",
                      "acknowledged": "acknowledged_at IS NOT NULL",
                      "unacknowledged": "acknowledged_at IS NULL", "all": "1"}[state])
        if vehicles is not None:
            vs = self.raw_ids(vehicles)
            if not vs:
                return []
            where.append(f"vehicle IN ({', '.join('?' * len(vs))})")
            args += vs
        if before is not None:
            where.append("(start < ? OR (start = ? AND id < ?))")
            args += [before[0], before[0], before[1]]
        sql = f"SELECT {_COLS} FROM alerts WHERE {' AND '.join(where)} ORDER BY start DESC, id DESC LIMIT ?"
        rows = [r for _, r in self._rows(sql, [*args, limit])]
        rows.sort(key=lambda r: (r[6], r[0]), reverse=True)
        return [self.alert_json(r) for r in rows[:limit]]

    def get(self, alert_id: str) -> tuple[Path, dict[str, Any]] | None:
        rows = self._rows(f"SELECT {_COLS} FROM alerts WHERE id = ?", [alert_id])
        return (rows[0][0], self.alert_json(rows[0][1])) if rows else None

    def changed_since(self, updated_at: float) -> list[dict[str, Any]]:
        """Alerts written or acknowledged after ``updated_at`` (for the live stream), oldest first."""
        rows = self._rows(f"SELECT {_COLS} FROM alerts WHERE updated_at > ? OR acknowledged_at > ?"
                          f" ORDER BY updated_at LIMIT 1000", [updated_at, updated_at])
        return sorted((self.alert_json(r) for _, r in rows), key=lambda a: max(a["updated_at"], a["acknowledged_at"] or 0))

    def acknowledge(self, path: Path, alert_id: str) -> bool:
        """Acknowledge in the store at ``path`` (the speed layer's own method); False when it already was."""
        store = Store(path)
        try:
            return store.acknowledge(alert_id)
        finally:
            store.close()

    def close(self) -> None:
        with self._lock:
            for con in self._ro.values():
                con.close()
            self._ro.clear()
