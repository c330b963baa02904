"""Time series and routes from the Parquet lake with DuckDB, downsampled on the server.

A request names a masked vehicle, signals and a time range; :meth:`LakeReader.files` picks the
lake files of the days in the range (the ``date=`` partitions; in the vehicle layout only that
vehicle's folders), and one DuckDB query groups the rows into ``step``-second buckets with
min/max/mean/count per signal. ``step`` is chosen so that at most ``max_points`` buckets come back
(or taken from the request, raised to that bound). Rows a packet stored twice (two sink workers)
fall in the same bucket: min and max are exact, the mean weighs them twice. Answers are kept in a
bounded LRU (``RESULT_CACHE``; hits and evictions in ``/health``) keyed by the request and the
exact list of files with their sizes and modification times: lake files never change, so a new,
rolled or compacted file is a new key and the cache never serves stale data. On a local lake, a
request with another range or step over files already read is answered from the vehicle's columns
kept in memory (:mod:`fleet_api.series_columns`, bounded in bytes) instead of a new scan.
"""
from __future__ import annotations

import collections
import datetime as dt
import glob
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

from minute_packet.masking import lake_bucket

from .errors import BadRequest, SourceUnavailable
from .series_columns import DEFAULT_BYTES, ColumnCache, bucketise, columns_for

_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE"
                      r"|DECIMAL.*)$")
_RESERVED = {"ts", "seq", "boot_id", "vehicle", "out_of_range", "model", "date", "vehicle_bucket"}
MAX_SIGNALS = 16
MAX_RANGE_S = 366 * 86400
SCHEMA_CACHE = 20_000  # lake files whose column list is kept
RESULT_CACHE = 256  # series answers kept (lake files never change: a new or compacted file changes the key)


def _days(t0: int, t1: int) -> list[str]:
    d0 = dt.datetime.fromtimestamp(t0, dt.timezone.utc).date()
    d1 = dt.datetime.fromtimestamp(max(t0, t1 - 1), dt.timezone.utc).date()
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def choose_step(t0: int, t1: int, step: int | None, max_points: int) -> int:
    """The bucket width in seconds: at least ``step`` (default 1) and wide enough for ``max_points``."""
    need = max(1, math.ceil((t1 - t0) / max_points))
    return max(need, step or 1)


class LakeReader:
    """Reads one lake root (a local folder; other roots through DuckDB's own globbing)."""

    def __init__(self, root: str, max_points: int = 2000, column_bytes: int = DEFAULT_BYTES) -> None:
        import duckdb

        self.root = root[len("file://"):] if root.startswith("file://") else root
        self.local = "://" not in self.root
        self.max_points = max_points
        self._duckdb = duckdb
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        try:  # lake files never change: keep their footers (DuckDB bounds this cache itself)
            self._con.execute("SET parquet_metadata_cache = true")
        except duckdb.Error:
            self._con.execute("SET enable_object_cache = true")
        self._lock = threading.Lock()
        self._schemas: dict[str, dict[str, bool]] = {}  # file -> column -> numeric (bounded, oldest dropped)
        self.buckets = self._buckets()
        self._results: collections.OrderedDict[tuple, dict[str, Any]] = collections.OrderedDict()
        self.cache_hits = self.cache_evicted = 0
        self.column_cache = ColumnCache(column_bytes)

    def _buckets(self) -> int | None:
        """The bucket count the sink recorded in ``_dcm_lake.json`` (bucket layout), else None: then
        every bucket folder of a day is read (a lake written before the file existed)."""
        import json

        if not self.local:
            return None
        try:
            desc = json.loads(Path(self.root, "_dcm_lake.json").read_bytes())
        except (OSError, ValueError):
            return None
        b = desc.get("buckets") if isinstance(desc, dict) and desc.get("layout") == "bucket" else None
        return b if isinstance(b, int) and not isinstance(b, bool) and b >= 1 else None

    def files(self, vehicle: str, t0: int, t1: int) -> list[str]:
        """The lake files that can hold the vehicle's rows in [t0, t1)."""
        if not re.fullmatch(r"[0-9a-f]{16}", vehicle):
            return []
        out: list[str] = []
        for day in _days(t0, t1):
            if self.local:
                base = os.path.join(glob.escape(self.root), "model=*", f"date={day}")
                out += glob.glob(os.path.join(base, f"vehicle={vehicle}", "*.parquet"))
                bucket = lake_bucket(vehicle, self.buckets) if self.buckets else "*"  # only its own bucket
                out += glob.glob(os.path.join(base, f"vehicle_bucket={bucket}", "*.parquet"))
            else:
                out.append(f"{self.root.rstrip('/')}/*/date={day}/*/*.parquet")
        return sorted(out)

    def _cursor(self):
        with self._lock:
            return self._con.cursor()

    def columns(self, files: list[str]) -> dict[str, bool]:
        """Column name -> numeric?, over the files (a lake file never changes: schemas are cached)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out: dict[str, bool] = {}
        for f in files:
            cols = self._schemas.get(f)
            if cols is None:
                if not self.local:
                    return self._describe(files)
                try:
                    schema = pq.read_schema(f)
                except (OSError, pa.ArrowException) as exc:
                    raise SourceUnavailable(f"lake: cannot read {f}: {exc}") from None
                cols = {n.name: pa.types.is_integer(n.type) or pa.types.is_floating(n.type) for n in schema}
                while len(self._schemas) >= SCHEMA_CACHE:
                    self._schemas.pop(next(iter(self._schemas)))
                self._schemas[f] = cols
            out.update(cols)
        return out

    def _describe(self, files: list[str]) -> dict[str, bool]:
        cur = self._cursor()
        try:
            rows = cur.execute(f"DESCRIBE SELECT * FROM read_parquet({_list(files)}, hive_partitioning = true,"
                               f" union_by_name = true)").fetchall()
        except self._duckdb.Error as exc:
            raise SourceUnavailable(f"lake: cannot read: {exc}") from None
        finally:
            cur.close()
        return {r[0]: bool(_NUMERIC.match(r[1])) for r in rows}

    def series(self, vehicle: str, signals: list[str], t0: int, t1: int, step: int | None = None) -> dict[str, Any]:
        """``{"step": s, "from": t0, "to": t1, "t": [...], "signals": {name: {"min": [...], "max": [...],
        "mean": [...], "count": [...]}}}``; bucket starts are Unix seconds."""
        if not signals:
            raise BadRequest("signals: give one or more signal names, comma-separated")
        if len(signals) > MAX_SIGNALS:
            raise BadRequest(f"signals: at most {MAX_SIGNALS} at once")
        if not t1 > t0:
            raise BadRequest("to must be after from")
        if t1 - t0 > MAX_RANGE_S:
            raise BadRequest("from..to spans more than 366 days")
        width = choose_step(t0, t1, step, self.max_points)
        out: dict[str, Any] = {"vehicle": vehicle, "from": t0, "to": t1, "step": width, "t": [],
                               "signals": {s: {"min": [], "max": [], "mean": [], "count": []} for s in signals}}
        files = self.files(vehicle, t0, t1)
        if not files:
            return out
        stamps = [_stamp(f) for f in files] if self.local else []  # an object store's listing is a glob
        key = (vehicle, tuple(signals), t0, t1, width, tuple(files), tuple(stamps))
        with self._lock:
            hit = self._results.get(key)
            if hit is not None:
                self._results.move_to_end(key)
                self.cache_hits += 1
                return hit
        cols = self.columns(files)
        for s in signals:
            if s in _RESERVED or s not in cols:
                raise BadRequest(f"signals: {s!r} is not a signal of this vehicle's data in that range")
            if not cols[s]:
                raise BadRequest(f"signals: {s!r} is not numeric")
        if not self.local:  # its files are not known here: nothing is kept
            self._series_sql(out, files, vehicle, signals, t0, t1, width)
            return out
        t, vals = columns_for(self.column_cache, self._read_columns, list(zip(files, stamps)), vehicle, signals)
        got = bucketise(t, vals, t0, t1, width)
        out["t"], out["signals"] = got["t"], got["signals"]
        with self._lock:
            self._results[key] = out
            while len(self._results) > RESULT_CACHE:
                self._results.popitem(last=False)
                self.cache_evicted += 1
        return out

    def _series_sql(self, out: dict[str, Any], files: list[str], vehicle: str, signals: list[str], t0: int, t1: int,
                    width: int) -> None:
        """The buckets by one DuckDB query (a lake on an object store, and the reference in tests)."""
        aggs = ", ".join(f'min("{s}"), max("{s}"), avg(CAST("{s}" AS DOUBLE)), count("{s}")' for s in signals)
        sql = (f"SELECT (CAST(epoch(ts) AS BIGINT) - {t0}) // {width} AS b, {aggs}"
               f" FROM {self._source(files)}"
               f" WHERE vehicle = ? AND ts >= to_timestamp({t0}) AND ts < to_timestamp({t1}) GROUP BY b ORDER BY b")
        for b, *vals in self._run(sql, [vehicle]):
            out["t"].append(t0 + int(b) * width)
            for i, s in enumerate(signals):
                mn, mx, mean, n = vals[4 * i:4 * i + 4]
                d = out["signals"][s]
                d["min"].append(_num(mn))
                d["max"].append(_num(mx))
                d["mean"].append(None if mean is None or mean != mean else round(mean, 6))
                d["count"].append(n)

    def _read_columns(self, files: list[str], vehicle: str, signals: list[str]
                      ) -> dict[str, tuple[Any, dict[str, Any]]]:
        """Per file, the vehicle's seconds and the signals as float64 (NaN for null; a signal a
        file lacks is all NaN): one query with DuckDB's ``filename`` column (per file where a
        column of the lake is itself named ``filename``)."""
        import numpy as np
        import pyarrow.compute as pc

        have: dict[str, bool] = {}
        for f in files:
            have.update(self._schemas.get(f) or {})
        cols = ", ".join(f'CAST("{s}" AS DOUBLE)' if s in have else "CAST(NULL AS DOUBLE)" for s in signals)
        groups = [files] if "filename" not in have else [[f] for f in files]
        out: dict[str, tuple[Any, dict[str, Any]]] = {}
        for group in groups:
            src = self._source(group, extra=", filename = true" if len(groups) == 1 else "")
            name = "filename" if len(groups) == 1 else f"'{group[0].replace(chr(39), chr(39) * 2)}'"
            table = self._arrow(f"SELECT {name}, CAST(epoch(ts) AS BIGINT), {cols} FROM {src} WHERE vehicle = ?",
                                [vehicle])
            names = table.column(0)
            for f in group:
                part = table.filter(pc.equal(names, f)) if len(group) > 1 else table
                t = part.column(1).to_numpy().astype(np.int64, copy=False)
                out[f] = (t, {s: part.column(i + 2).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                              for i, s in enumerate(signals)})
        return out

    def _arrow(self, sql: str, params: list[Any]):
        def fetch(cur):
            rel = cur.sql(sql, params=params)
            return (getattr(rel, "to_arrow_table", None) or rel.arrow)()

        return self._query(fetch)

    def route(self, vehicle: str, t0: int, t1: int, lat: str = "Latitude", lon: str = "Longitude"
              ) -> list[tuple[int, float, float]]:
        """The vehicle's positions over [t0, t1], at most ``max_points`` (the first fix of each bucket)."""
        files = self.files(vehicle, t0, t1 + 1)
        if not files:
            return []
        cols = self.columns(files)
        if lat not in cols or lon not in cols:
            return []
        width = choose_step(t0, t1 + 1, None, self.max_points)
        sql = (f"SELECT min(CAST(epoch(ts) AS BIGINT)), arg_min(\"{lat}\", ts), arg_min(\"{lon}\", ts)"
               f" FROM {self._source(files)}"
               f" WHERE vehicle = ? AND ts >= to_timestamp({t0}) AND ts <= to_timestamp({t1})"
               f" AND \"{lat}\" IS NOT NULL AND \"{lon}\" IS NOT NULL"
               f" GROUP BY (CAST(epoch(ts) AS BIGINT) - {t0}) // {width} ORDER BY 1")
        return [(int(t), float(a), float(b)) for t, a, b in self._run(sql, [vehicle])]

    def _source(self, files: list[str], extra: str = "") -> str:
        """``read_parquet`` over the files; without schema unification and hive parsing (~15 % of a
        query) when every file has the same columns, ``vehicle`` among them (the bucket layout)."""
        kinds = {tuple(self._schemas[f]) if f in self._schemas else None for f in files}
        if len(kinds) == 1 and None not in kinds and "vehicle" in next(iter(kinds)):
            return f"read_parquet({_list(files)}{extra})"
        return f"read_parquet({_list(files)}, hive_partitioning = true, union_by_name = true{extra})"

    def _run(self, sql: str, params: list[Any]) -> list[tuple]:
        return self._query(lambda cur: cur.execute(sql, params).fetchall())

    def _query(self, fetch: Any) -> Any:
        """``fetch(cursor)`` on a cursor of its own; DuckDB's errors become :class:`SourceUnavailable`."""
        cur = self._cursor()
        try:
            return fetch(cur)
        except self._duckdb.Error as exc:
            raise SourceUnavailable(f"lake: query failed: {exc}") from None
        finally:
            cur.close()

    def close(self) -> None:
        self._con.close()


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _num(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v
