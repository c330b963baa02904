"""Operational tables (vehicles, devices, drivers, assignments) joined to the views via the keyed mask.

The raw VIN lives only here. :func:`load_operational` reads four tables from a folder of CSV files
(``vehicles.csv``, ``devices.csv``, ``drivers.csv``, ``assignments.csv``) or from any database DuckDB
can attach (a DuckDB file, or SQLite/PostgreSQL/MySQL through DuckDB's extensions), validates them
and returns :class:`Operational`: the same tables with every VIN replaced by
``mask_vehicle(key, vin)`` (the sink's HMAC), so they join the lake's ``vehicle`` column and the
views never see a raw VIN.

Columns (extra columns are kept; times are ISO 8601, UTC unless they carry an offset):

* vehicles: ``vin, plate, model, fleet``
* devices: ``device_id, vin, installed_from[, installed_to]``
* drivers: ``driver_id, name``
* assignments: ``driver_id, vin, valid_from[, valid_to]`` (an empty ``valid_to``: still assigned);
  a vehicle's assignments may not overlap.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from pathlib import Path

import logging

import pyarrow as pa

from minute_packet.masking import mask_vehicle

from .errors import EnrichmentError

log = logging.getLogger(__name__)

TABLES = {
    "vehicles": ("vin", "plate", "model", "fleet"),
    "devices": ("device_id", "vin", "installed_from"),
    "drivers": ("driver_id", "name"),
    "assignments": ("driver_id", "vin", "valid_from"),
}
ASSIGNMENTS_SCHEMA = pa.schema([("vehicle", pa.string()), ("driver", pa.string()),
                                ("valid_from", pa.int64()), ("valid_to", pa.int64())])


@dataclasses.dataclass(frozen=True)
class Operational:
    """Masked operational tables, ready to join (``vehicle`` = masked VIN, times in Unix seconds)."""

    vehicles: pa.Table
    devices: pa.Table
    drivers: pa.Table
    assignments: pa.Table
    # masked id -> raw VIN, in memory only: for an API that may show VINs to scopes allowed to see
    # them; never written to a view, never part of the digest
    vins: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def digest(self) -> str:
        """Changes when who drove what changes (materialised driver views are then stale)."""
        h = hashlib.sha256()
        for row in sorted(zip(*(self.assignments.column(c).to_pylist() for c in ASSIGNMENTS_SCHEMA.names)),
                          key=repr):
            h.update(repr(row).encode())
        return h.hexdigest()[:16]


def empty_operational() -> Operational:
    """No operational data: trips have no driver, so no driver scores."""
    return Operational(pa.table({"vehicle": pa.array([], pa.string())}), pa.table({"vehicle": pa.array([], pa.string())}),
                       pa.table({"driver": pa.array([], pa.string())}), ASSIGNMENTS_SCHEMA.empty_table())


def _epoch(table: str, row: int, column: str, value: object, optional: bool = False) -> int | None:
    if value is None or value == "":
        if optional:
            return None
        raise EnrichmentError(f"{table} row {row}: {column} is empty")
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, dt.date):
        t = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise EnrichmentError(f"{table} row {row}: {column} {value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp())


def _read_sqlite(path: str, name: str) -> pa.Table:
    """SQLite through the standard library, for machines where DuckDB cannot load its sqlite extension."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            cur = con.execute(f'SELECT * FROM "{name}"')
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise EnrichmentError(f"{name}: cannot read from sqlite:{path}: {exc}") from None
    return pa.table({c: pa.array([None if r[i] is None else str(r[i]) for r in rows], pa.string())
                     for i, c in enumerate(cols)})


def _read(con, source: str, name: str) -> pa.Table:
    try:
        if con is None:
            return _read_sqlite(source.partition(":")[2], name)
        if source.startswith("csv:"):
            path = Path(source[4:]) / f"{name}.csv"
            if not path.is_file():
                raise EnrichmentError(f"{name}: no such file {path}")
            rel = con.sql("SELECT * FROM read_csv(?, header = true, all_varchar = true)", params=[str(path)])
        else:
            rel = con.sql(f"SELECT * FROM ops.{name}")
        fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
        return fetch()
    except EnrichmentError:
        raise
    except Exception as exc:  # duckdb.Error subclasses: a missing table, a bad file
        raise EnrichmentError(f"{name}: cannot read from {source}: {exc}") from None


def _masked(key: bytes, table: str, t: pa.Table) -> pa.Table:
    missing = [c for c in TABLES[table] if c not in t.column_names]
    if missing:
        raise EnrichmentError(f"{table}: missing column {missing[0]} (needs {', '.join(TABLES[table])})")
    if "vin" not in t.column_names:
        return t
    vins = t.column("vin").to_pylist()
    for i, v in enumerate(vins):
        if v is None or str(v).strip() == "":
            raise EnrichmentError(f"{table} row {i + 1}: vin is empty")
    masked = pa.array([mask_vehicle(key, str(v)) for v in vins], pa.string())
    return t.drop_columns(["vin"]).add_column(0, "vehicle", masked)


def load_operational(source: str, key: bytes) -> Operational:
    """Read and validate the operational tables from ``csv:<folder>`` or ``<database to attach>``.

    A database is attached read-only with DuckDB's ``ATTACH``: a DuckDB file path, or e.g.
    ``sqlite:ops.db`` / ``postgres:dbname=ops host=...`` (DuckDB's sqlite/postgres extensions)."""
    import duckdb

    if len(key) < 8:
        raise EnrichmentError("the masking key must be at least 8 bytes (the sink's secret_file)")
    con = duckdb.connect()
    reader = con
    try:
        if not source.startswith("csv:"):
            kind, _, target = source.partition(":")
            if kind in ("sqlite", "postgres", "mysql") and target:
                attach = f"ATTACH '{target.replace(chr(39), chr(39) * 2)}' AS ops (TYPE {kind}, READ_ONLY)"
            else:
                if not Path(source).is_file():
                    raise EnrichmentError(f"{source}: no such database file")
                attach = f"ATTACH '{source.replace(chr(39), chr(39) * 2)}' AS ops (READ_ONLY)"
            try:
                con.execute(attach)
            except duckdb.Error as exc:
                if kind != "sqlite":
                    raise EnrichmentError(f"{source}: cannot attach: {exc}") from None
                log.info("duckdb cannot attach %s (%s): reading it with sqlite3", source, exc)
                reader = None
        raw = {name: _read(reader, source, name) for name in TABLES}
    finally:
        con.close()
    vehicles = _masked(key, "vehicles", raw["vehicles"])
    vids = vehicles.column("vehicle").to_pylist()
    vins = dict(zip(vids, (str(v) for v in raw["vehicles"].column("vin").to_pylist())))
    dup = {v for v in vids if vids.count(v) > 1}
    if dup:
        raise EnrichmentError(f"vehicles: the same vin appears twice ({len(dup)} duplicates)")
    devices = _masked(key, "devices", raw["devices"])
    drivers = raw["drivers"]
    missing = [c for c in TABLES["drivers"] if c not in drivers.column_names]
    if missing:
        raise EnrichmentError(f"drivers: missing column {missing[0]}")
    drivers = drivers.rename_columns(["driver" if c == "driver_id" else c for c in drivers.column_names])
    known_drivers = set(drivers.column("driver").to_pylist())
    known_vehicles = set(vids)
    for i, v in enumerate(devices.column("vehicle").to_pylist()):
        if v not in known_vehicles:
            raise EnrichmentError(f"devices row {i + 1}: vin is not in vehicles")
    a = _masked(key, "assignments", raw["assignments"])
    has_to = "valid_to" in a.column_names
    rows = []
    for i, (veh, drv, frm, to) in enumerate(zip(a.column("vehicle").to_pylist(), a.column("driver_id").to_pylist(),
                                                a.column("valid_from").to_pylist(),
                                                a.column("valid_to").to_pylist() if has_to else [None] * a.num_rows)):
        r = i + 1
        if veh not in known_vehicles:
            raise EnrichmentError(f"assignments row {r}: vin is not in vehicles")
        if drv not in known_drivers:
            raise EnrichmentError(f"assignments row {r}: driver_id {drv!r} is not in drivers")
        start = _epoch("assignments", r, "valid_from", frm)
        end = _epoch("assignments", r, "valid_to", to, optional=True)
        if end is not None and end <= start:
            raise EnrichmentError(f"assignments row {r}: valid_to is not after valid_from")
        rows.append((veh, drv, start, end, r))
    rows.sort(key=lambda x: (x[0], x[2]))
    for prev, cur in zip(rows, rows[1:]):
        if prev[0] == cur[0] and (prev[3] is None or prev[3] > cur[2]):
            raise EnrichmentError(f"assignments rows {prev[4]} and {cur[4]}: overlapping assignments of one vehicle")
    assignments = pa.table([pa.array([x[i] for x in rows], ASSIGNMENTS_SCHEMA.field(i).type) for i in range(4)],
                           schema=ASSIGNMENTS_SCHEMA)
    return Operational(vehicles, devices, drivers, assignments, vins)
