"""``dcm sink compact``: merge the small files of each lake partition into one.

Per partition (crash-safe and idempotent, on a local folder or an object store):

1. *Recover*: a manifest ``_compaction-<h>.json`` whose output exists is a
   committed compaction: its inputs still present are deleted (roll
   forward). A manifest without its output is an intent that never
   committed: it is deleted and its inputs, all still present, stay.
2. *Merge*: the Parquet files older than ``min_age_s`` (never a file a
   running sink may still be writing) are read, unioned by column name (a
   newer schema's extra columns are null in older rows), rows of the same
   packet stored twice (same vehicle, boot id, seq and second; e.g. a
   publisher retry that a shared subscription handed to another worker) are
   kept once, and the result is sorted by time (by vehicle, then time, in the bucket layout).
3. *Commit*: the manifest (inputs, output) is written first, then the output
   ``compact-<h>.parquet`` (atomically: temp name + rename, or one object
   upload), then the inputs are deleted. ``<h>`` hashes the input names, so
   a re-run after a crash rebuilds the same file. The manifest stays; a sink
   redoing an interrupted batch reads it and skips files already merged.

A plain ``read_parquet('lake/**/*.parquet')`` reader running *during* step 3
may see a merged row twice for the moment between the output appearing and
the inputs being deleted; readers that need a consistent snapshot should
not run concurrently with compaction (or use a table format).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dcm_base.errors import ServiceError

from .lake import MANIFEST_PREFIX, Lake

log = logging.getLogger(__name__)


class CompactionError(ServiceError):
    """A partition could not be compacted."""


def compact_lake(lake: Lake, *, min_age_s: float = 3600.0, target_bytes: int = 128 << 20,
                 compression: str = "zstd") -> dict[str, Any]:
    """Compact every partition (merged files written with ``compression``); returns totals."""
    report = {"partitions": 0, "merged_files": 0, "outputs": 0, "rows": 0, "duplicate_rows": 0, "recovered": 0}
    for partition in lake.partitions():
        r = compact_partition(lake, partition, min_age_s=min_age_s, target_bytes=target_bytes,
                              compression=compression)
        report["partitions"] += 1
        for k in ("merged_files", "outputs", "rows", "duplicate_rows", "recovered"):
            report[k] += r[k]
    return report


def _recover(lake: Lake, partition: str, infos: list[pafs.FileInfo]) -> tuple[int, set[str]]:
    names = {i.base_name for i in infos}
    recovered, gone = 0, set()
    for info in infos:
        if not (info.base_name.startswith(MANIFEST_PREFIX) and info.base_name.endswith(".json")):
            continue
        manifest = json.loads(lake.read_bytes(f"{partition}/{info.base_name}"))
        if manifest["output"] in names:
            for name in manifest["inputs"]:
                if name in names:
                    lake.delete(f"{partition}/{name}")
                    gone.add(name)
                    recovered += 1
        else:
            lake.delete(f"{partition}/{info.base_name}")
            recovered += 1
    return recovered, gone


def compact_partition(lake: Lake, partition: str, *, min_age_s: float, target_bytes: int,
                      compression: str = "zstd") -> dict[str, int]:
    infos = lake.list_dir(partition)
    recovered, gone = _recover(lake, partition, infos)
    now = dt.datetime.now(dt.timezone.utc)
    files = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
             and i.base_name not in gone and _age(i, now) >= min_age_s]
    files.sort(key=lambda i: i.base_name)
    report = {"merged_files": 0, "outputs": 0, "rows": 0, "duplicate_rows": 0, "recovered": recovered}
    chunk: list[pafs.FileInfo] = []
    size = 0
    groups: list[list[pafs.FileInfo]] = []
    for info in files:
        if info.size >= target_bytes:
            continue  # already big enough
        if chunk and size + info.size > target_bytes:
            groups.append(chunk)
            chunk, size = [], 0
        chunk.append(info)
        size += info.size
    groups.append(chunk)
    for group in groups:
        if len(group) < 2:
            continue
        rows, dupes = _merge(lake, partition, [i.base_name for i in group], compression)
        report["merged_files"] += len(group)
        report["outputs"] += 1
        report["rows"] += rows
        report["duplicate_rows"] += dupes
    return report


def _age(info: pafs.FileInfo, now: dt.datetime) -> float:
    mtime = info.mtime
    if mtime is None:
        return float("inf")
    if mtime.tzinfo is None:
        mtime = mtime.replace(tzinfo=dt.timezone.utc)
    return (now - mtime).total_seconds()


def _merge(lake: Lake, partition: str, inputs: list[str], compression: str) -> tuple[int, int]:
    digest = hashlib.sha256("\n".join(sorted(inputs)).encode()).hexdigest()[:16]
    output = f"compact-{digest}.parquet"
    try:
        tables = [pq.read_table(lake.path(f"{partition}/{name}"), filesystem=lake.fs) for name in inputs]
        merged = pa.concat_tables([_plain(t) for t in tables], promote_options="permissive")
    except (OSError, pa.ArrowException) as exc:
        raise CompactionError(f"{partition}: {exc}") from exc
    before = merged.num_rows
    merged = _dedupe(merged)
    keys = [("vehicle", "ascending")] if "vehicle" in merged.column_names else []
    merged = merged.sort_by(keys + [("ts", "ascending"), ("boot_id", "ascending")])
    manifest = {"inputs": sorted(inputs), "output": output, "rows": merged.num_rows,
                "time": dt.datetime.now(dt.timezone.utc).isoformat()}
    lake.write_bytes(f"{partition}/{MANIFEST_PREFIX}{digest}.json", json.dumps(manifest).encode())
    out = lake.open_writer(f"{partition}/{output}", merged.schema, compression, live=False)
    try:
        if merged.num_rows:
            out.write(merged)
        out.close()
    except BaseException:
        out.abort()
        raise
    for name in inputs:
        lake.delete(f"{partition}/{name}")
    log.info("%s: %d files -> %s (%d rows, %d duplicates dropped)", partition, len(inputs), output,
             merged.num_rows, before - merged.num_rows)
    return merged.num_rows, before - merged.num_rows


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings, so files with different dictionaries concatenate."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), field.type.value_type))
    return table


def _dedupe(table: pa.Table) -> pa.Table:
    keys = [k for k in ("vehicle", "boot_id", "seq", "ts") if k in table.column_names]
    indexed = table.append_column("__row", pa.array(range(table.num_rows), type=pa.int64()))
    first = indexed.group_by(keys, use_threads=False).aggregate([("__row", "min")]).column("__row_min")
    if len(first) == table.num_rows:
        return table
    return table.take(first)
