"""Latest state: one row per masked vehicle, ``signals`` a JSON object of each signal's last
``[unix ts, value]``; merged as batches finish (per signal the later value wins)."""
from __future__ import annotations

import sqlite3
from collections.abc import Mapping

import msgspec

from .staging_db import Database
from .table import merge_latest

Latest = Mapping[str, Mapping[str, tuple[int, float]]]  # masked vehicle -> signal -> (ts, value)


_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode


class LatestStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def merge(self, latest: Latest) -> None:
        """Fold a batch's last values into the stored state (runs in, or joins, one transaction)."""
        self.db.tx(lambda c: self._merge(c, latest))

    @staticmethod
    def _merge(c: sqlite3.Connection, latest: Latest) -> None:
        vehicles = list(latest)
        old: dict[str, dict[str, tuple[int, float]]] = {}
        for k in range(0, len(vehicles), 500):
            part = vehicles[k:k + 500]
            rows = c.execute(f"SELECT vehicle, signals FROM latest_state WHERE vehicle IN"
                             f" ({','.join('?' * len(part))})", part)
            old.update((v, {n: (t, x) for n, (t, x) in _DECODE(j).items()}) for v, j in rows)
        merged = {v: dict(old[v]) for v in old}
        merge_latest(merged, {v: dict(s) for v, s in latest.items()})
        # msgspec's JSON (compact, shortest round-trip floats): about 13x faster than json.dumps for 218 signals
        c.executemany("INSERT OR REPLACE INTO latest_state (vehicle, ts, signals) VALUES (?, ?, ?)",
                      [(v, max(t for t, _ in sig.values()), _ENCODE(sig).decode()) for v, sig in merged.items() if sig])

    def get(self, vehicle: str) -> dict[str, tuple[int, float | None]]:
        """Signal -> (unix ts, value) of a masked vehicle; empty when unknown."""
        rows = self.db.read("SELECT signals FROM latest_state WHERE vehicle = ?", (vehicle,))
        if not rows:
            return {}
        return {n: (int(t), None if x is None or x != x else x) for n, (t, x) in _DECODE(rows[0][0]).items()}
