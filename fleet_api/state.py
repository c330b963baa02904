"""The sink's latest state, read straight from its SQLite state databases (read-only).

``latest_state(vehicle, ts, signals)`` holds one row per masked vehicle; ``signals`` is a JSON
object ``{"<signal>": [<unix ts>, <value>], ...}``. :meth:`StateReader.summaries` pulls only the
few signals the vehicle list needs (``json_extract``), incrementally by ``ts``; several sink
workers' databases are merged (the later second wins).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from speed_layer.catalog import REFERENCE_COLUMNS

from .errors import SourceUnavailable

log = logging.getLogger(__name__)

SPEED, LAT, LON = REFERENCE_COLUMNS["speed"], REFERENCE_COLUMNS["lat"], REFERENCE_COLUMNS["lon"]
VOLTAGE = REFERENCE_COLUMNS["voltage"]
SUMMARY_SIGNALS = (SPEED, "GnssSpeed", LAT, LON, VOLTAGE, "Odometer")


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the vehicle list shows of one vehicle: its last second and a few last values."""

    vehicle: str
    ts: int
    values: dict[str, tuple[int, Any]]  # signal -> (second, value)

    @property
    def speed(self) -> tuple[int, float] | None:
        return self.values.get(SPEED) or self.values.get("GnssSpeed")

    @property
    def position(self) -> dict[str, float] | None:
        lat, lon = self.values.get(LAT), self.values.get(LON)
        if lat is None or lon is None or lat[1] is None or lon[1] is None:
            return None
        return {"lat": lat[1], "lon": lon[1], "ts": max(lat[0], lon[0])}


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SourceUnavailable(f"{path}: cannot open the sink's state database: {exc}") from None


class StateReader:
    """Latest state of every vehicle over the sink workers' state databases."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.paths = paths
        self._cons: dict[Path, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._summaries: dict[str, Summary] = {}
        self._since = -1
        self.version = 0  # bumped whenever a summary changes

    def _con(self, path: Path) -> sqlite3.Connection | None:
        con = self._cons.get(path)
        if con is None:
            con = _connect(path)
            if con is not None:
                self._cons[path] = con
        return con

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        rows: list[tuple] = []
        with self._lock:
            for p in self.paths:
                con = self._con(p)
                if con is None:
                    continue
                try:
                    rows += con.execute(sql, args).fetchall()
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        continue  # a sink that has not created its tables yet
                    raise SourceUnavailable(f"{p}: {exc}") from None
        return rows

    def refresh(self, full: bool = False) -> list[Summary]:
        """Read the rows that changed since the last call (all of them with ``full``); returns the
        summaries that changed."""
        since = -1 if full else self._since
        cols = ", ".join(f"json_extract(signals, '$.\"{s}\"')" for s in SUMMARY_SIGNALS)
        rows = self._query(f"SELECT vehicle, ts, {cols} FROM latest_state WHERE ts > ?", (since,))
        changed = []
        for vehicle, ts, *raw in rows:
            values = {}
            for name, cell in zip(SUMMARY_SIGNALS, raw):
                if cell is not None:
                    t, v = json.loads(cell)
                    values[name] = (int(t), None if v is None or v != v else v)
            old = self._summaries.get(vehicle)
            if old is not None and old.ts >= ts:
                continue
            if old is not None:  # another worker's row: keep the later value of each signal
                for name, tv in old.values.items():
                    if name not in values or values[name][0] < tv[0]:
                        values[name] = tv
            s = Summary(vehicle, int(ts), values)
            self._summaries[vehicle] = s
            self.version += 1
            changed.append(s)
            self._since = max(self._since, int(ts))
        return changed

    def summaries(self) -> dict[str, Summary]:
        return self._summaries

    def latest(self, vehicle: str) -> dict[str, tuple[int, Any]]:
        """Every signal's last second and value of one masked vehicle (empty when unknown)."""
        out: dict[str, tuple[int, Any]] = {}
        for (signals,) in self._query("SELECT signals FROM latest_state WHERE vehicle = ?", (vehicle,)):
            for name, (t, v) in json.loads(signals).items():
                if name not in out or out[name][0] < t:
                    out[name] = (int(t), None if v is None or v != v else v)
        return out

    def close(self) -> None:
        with self._lock:
            for con in self._cons.values():
                con.close()
            self._cons.clear()
