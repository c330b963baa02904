"""Lambda views: per-day batch partitions up to a watermark, speed partitions after it, an exact merge.

Every stored view (:data:`~batch_layer.views_sql.VIEWS`) is partitioned by the UTC day its trip
started. A day's partition depends only on the lake rows of that day and the days either side
(trips last less than a day), so :class:`BatchStore` records, per materialised day, a fingerprint
of the lake files of days ``d-1..d+1``.

* :meth:`BatchStore.refresh` materialises the days before the watermark whose fingerprint changed
  (late or duplicate packets, compaction, a new day), or all of them when the parameters or the
  driver assignments changed; nothing else is rewritten.
* :meth:`BatchStore.merged` serves each day from exactly one side: the stored partition if the day
  is before the watermark and still fresh, else the speed side, which runs the same SQL over the
  lake now. Days are replaced, never added to, so nothing is counted twice or missed.

Layout: ``<root>/<view>/date=<YYYY-MM-DD>/part-0.parquet`` and ``<root>/_state.json``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import BatchConfig
from .engine import Engine
from .enrich import Operational, empty_operational
from .errors import BatchLayerError
from .lake_source import LakeListing, date_of
from .views_sql import VIEWS, pipeline

log = logging.getLogger(__name__)

STATE_VERSION = 1
SORT_KEYS = {"trips": ["vehicle", "start_t"], "harsh_events": ["vehicle", "t", "kind"],
             "vehicle_day": ["vehicle", "day"], "driver_day": ["driver", "day"]}
Progress = Callable[[int, int], None]


def context_days(days: Iterable[int]) -> set[int]:
    """The lake days a set of trip-start days needs: each day and the days either side."""
    return {d + k for d in days for k in (-1, 0, 1)}


def normalise(table: pa.Table, view: str) -> pa.Table:
    """Engine-neutral types (int64, float64, string) and a stable row order."""
    cols = []
    for field in table.schema:
        t = field.type
        if pa.types.is_integer(t) or pa.types.is_boolean(t):
            target = pa.int64()
        elif pa.types.is_decimal(t) and t.scale == 0:
            target = pa.int64()
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            target = pa.float64()
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            target = pa.string()
        else:
            target = t
        cols.append(pa.field(field.name, target))
    out = table.cast(pa.schema(cols))
    keys = [k for k in SORT_KEYS[view] if k in out.column_names]
    return out.sort_by([(k, "ascending") for k in keys]) if keys and out.num_rows else out


def compute(engine: Engine, listing: LakeListing, config: BatchConfig, assignments: pa.Table,
            days: Iterable[int] | None) -> dict[str, pa.Table]:
    """Run the view SQL for the trip-start ``days`` (None: all) and return each view, normalised."""
    want = None if days is None else set(days)
    files = listing.files if want is None else listing.files_for(context_days(want))
    if want is not None and not want:
        files = []
    columns = engine.load_lake([f.path for f in files])
    engine.load_table("assignments", assignments)
    out = engine.run(pipeline(config, columns, want), VIEWS)
    return {v: normalise(out[v], v) for v in VIEWS}


def _concat(parts: list[pa.Table], view: str) -> pa.Table:
    parts = [p for p in parts if p is not None]
    if not parts:
        raise BatchLayerError(f"{view}: nothing to merge")
    schema = parts[0].schema
    out = pa.concat_tables([p.select(schema.names).cast(schema) for p in parts])
    return normalise(out, view)


@dataclasses.dataclass
class RefreshReport:
    watermark: str
    recomputed_days: list[str]
    fresh_days: int
    rows_written: dict[str, int]
    full: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BatchStore:
    """Materialised batch views on local disk (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.state_path = self.root / "_state.json"

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"version": STATE_VERSION, "watermark_day": None, "config": None, "operational": None, "days": {}}
        try:
            st = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            raise BatchLayerError(f"{self.state_path}: unreadable batch state: {exc}") from None
        if st.get("version") != STATE_VERSION:
            raise BatchLayerError(f"{self.state_path}: batch state version {st.get('version')}, expected {STATE_VERSION}")
        return st

    def _save(self, st: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def _partition(self, view: str, day: int) -> Path:
        return self.root / view / f"date={date_of(day)}"

    def fresh_days(self, listing: LakeListing, config: BatchConfig, ops: Operational) -> set[int]:
        """Materialised days before the watermark whose lake inputs and parameters are unchanged."""
        st = self.state()
        if st["config"] != config.digest() or st["operational"] != ops.digest() or st["watermark_day"] is None:
            return set()
        w = st["watermark_day"]
        return {int(d) for d, fp in st["days"].items()
                if int(d) < w and fp == listing.fingerprint(context_days([int(d)]))}

    # -- refresh -----------------------------------------------------------------------------
    def refresh(self, engine: Engine, listing: LakeListing, config: BatchConfig, watermark_day: int,
                ops: Operational | None = None, chunk_days: int = 7, progress: Progress | None = None
                ) -> RefreshReport:
        """Materialise every stale day before ``watermark_day``; leave fresh partitions untouched."""
        ops = ops or empty_operational()
        st = self.state()
        full = st["config"] != config.digest() or st["operational"] != ops.digest()
        if full:
            for view in VIEWS:
                shutil.rmtree(self.root / view, ignore_errors=True)
            st = {"version": STATE_VERSION, "watermark_day": None, "config": config.digest(),
                  "operational": ops.digest(), "days": {}}
        known = {int(d) for d in st["days"]}
        candidates = sorted(d for d in set(listing.days) | known if d < watermark_day)
        stale = [d for d in candidates if st["days"].get(str(d)) != listing.fingerprint(context_days([d]))]
        for d in list(known):
            if d >= watermark_day:  # the watermark moved back: the speed side serves these now
                self._drop(d)
                st["days"].pop(str(d), None)
        rows = {v: 0 for v in VIEWS}
        total = len(stale)
        if progress:
            progress(0, total)
        for i in range(0, total, chunk_days):
            chunk = stale[i:i + chunk_days]
            out = compute(engine, listing, config, ops.assignments, chunk)
            for d in chunk:
                for view in VIEWS:
                    part = out[view].filter(pc.equal(out[view].column("day"), d))
                    rows[view] += part.num_rows
                    self._write(view, d, part)
                st["days"][str(d)] = listing.fingerprint(context_days([d]))
            st["watermark_day"] = watermark_day
            self._save(st)
            if progress:
                progress(min(total, i + chunk_days), total)
        st["watermark_day"] = watermark_day
        self._save(st)
        log.info("refresh: %d days recomputed, %d fresh", total, len(candidates) - total)
        return RefreshReport(date_of(watermark_day), [date_of(d) for d in stale], len(candidates) - total, rows, full)

    def _drop(self, day: int) -> None:
        for view in VIEWS:
            shutil.rmtree(self._partition(view, day), ignore_errors=True)

    def _write(self, view: str, day: int, table: pa.Table) -> None:
        folder = self._partition(view, day)
        if table.num_rows == 0:
            shutil.rmtree(folder, ignore_errors=True)
            return
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".part-0.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, folder / "part-0.parquet")

    def read(self, view: str, days: Iterable[int]) -> list[pa.Table]:
        out = []
        for d in sorted(days):
            f = self._partition(view, d) / "part-0.parquet"
            if f.exists():
                out.append(pq.read_table(f))
        return out

    # -- serving -----------------------------------------------------------------------------
    def merged(self, engine: Engine, listing: LakeListing, config: BatchConfig, ops: Operational | None = None
               ) -> tuple[dict[str, pa.Table], dict[str, list[str]]]:
        """Every view over all data: fresh batch days from Parquet, every other day from the speed side.

        Returns the views and which days came from where (``batch``, ``speed``)."""
        ops = ops or empty_operational()
        batch = self.fresh_days(listing, config, ops)
        speed = sorted(set(listing.days) - batch)
        computed = compute(engine, listing, config, ops.assignments, speed)
        views = {}
        for v in VIEWS:
            views[v] = _concat([computed[v]] + [normalise(t, v) for t in self.read(v, batch)], v)
        return views, {"batch": [date_of(d) for d in sorted(batch)], "speed": [date_of(d) for d in speed]}


def full_views(engine: Engine, listing: LakeListing, config: BatchConfig, ops: Operational | None = None
               ) -> dict[str, pa.Table]:
    """The batch computation over all data at once (what the merge must equal)."""
    ops = ops or empty_operational()
    return compute(engine, listing, config, ops.assignments, None)
