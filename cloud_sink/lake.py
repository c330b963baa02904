"""The Parquet data lake: layout, storage root (local folder or object store) and file writing.

Layout (Hive partitions, readable by plain DuckDB/Spark/pyarrow)::

    <root>/model=<model>/date=<YYYY-MM-DD>/vehicle=<masked id>/part-<worker>-<batch>-<fingerprint>.parquet
    <root>/model=<model>/date=<YYYY-MM-DD>/vehicle_bucket=<nn>/part-<worker>-<batch>-<fingerprint>.parquet

The first ("vehicle" layout) gives every masked vehicle its own folder, for
small fleets; the second ("bucket" layout, the default) hashes masked ids into
``buckets`` folders and stores the masked id in a ``vehicle`` column, which
keeps files large for big fleets. The raw vehicle id never reaches the lake: the masked
id is a keyed HMAC of it. The root is a local path or any URI
``pyarrow.fs.FileSystem.from_uri`` understands (``file:///...``,
``s3://bucket/prefix?endpoint_override=...``).

File names depend only on (worker, batch, fingerprint), so redoing a batch
after a crash overwrites its files. On a local filesystem a file is written
under a temporary name, fsynced and renamed; on an object store the upload
itself is atomic.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from pathlib import Path

import faultpoints
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dcm_base.errors import InputError, ServiceError
from minute_packet.masking import lake_bucket, mask_vehicle  # noqa: F401  (mask_vehicle re-exported: the lake names partitions with it)

log = logging.getLogger(__name__)

DAY = 86400
LAYOUTS = ("vehicle", "bucket")
LAKE_DESCRIPTION = "_dcm_lake.json"  # the layout of a lake root, for readers (Lake.claim)
MANIFEST_PREFIX = "_compaction-"
# min/max statistics only where readers prune by them; signal columns skip them (~15 % faster writes)
STATS_COLUMNS = ("ts", "vehicle", "boot_id", "seq")
# Live files: Parquet data page v2 and dictionary encoding only on the id columns, whose few
# distinct values it squeezes (a dictionary on the signal columns cost about half the writer's
# CPU time for little size: measured with `dcm bench sink`); merged files (`dcm sink compact`)
# keep the writer's defaults, as they are written once and read for years.
DICTIONARY_COLUMNS = ("vehicle", "boot_id", "out_of_range")
WRITE_BATCH_ROWS = 65536
OUTPUT_BUFFER = 1 << 20  # bytes buffered per open lake file (one file is open at a time)


class LakeError(ServiceError):
    """A lake file cannot be written or read."""


class LakeRootError(InputError):
    """The lake root or layout is unusable (an unknown layout, a URI pyarrow cannot open)."""


def safe_value(value: str) -> str:
    """A partition value or name part that cannot escape its folder."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in value) or "_"


def date_of(day: int) -> str:
    return dt.datetime.fromtimestamp(day * DAY, dt.timezone.utc).date().isoformat()


class Lake:
    """A lake root plus its layout."""

    def __init__(self, root: str | Path, *, layout: str = "bucket", buckets: int = 64,
                 compression: str = "lz4") -> None:
        if layout not in LAYOUTS:
            raise LakeRootError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        root = str(root)
        try:
            if "://" in root:
                self.fs, base = pafs.FileSystem.from_uri(root)
            else:
                self.fs, base = pafs.LocalFileSystem(), str(Path(root).resolve())
        except (pa.ArrowInvalid, OSError) as exc:
            raise LakeRootError(f"lake root {root!r}: {exc}") from exc
        self.root = root
        self.base = base.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.layout = layout
        self.buckets = buckets
        self.compression = compression
        self._claimed = False  # _dcm_lake.json checked or written (claim)

    # -- layout ---------------------------------------------------------------------------------

    def part_key(self, masked: str) -> str:
        """The value of the last partition level for a masked vehicle id."""
        if self.layout == "vehicle":
            return masked
        return lake_bucket(masked, self.buckets)

    def claim(self) -> None:
        """Record the layout in ``<root>/_dcm_lake.json`` (``{"format": 1, "layout", "buckets"}``), so
        readers can find one vehicle's bucket; refuse a root that another layout or bucket count
        already wrote (its readers would miss files). Idempotent; every sink worker calls it."""
        want = {"format": 1, "layout": self.layout, "buckets": self.buckets if self.layout == "bucket" else None}
        try:
            raw = self.read_bytes(LAKE_DESCRIPTION)
        except FileNotFoundError:
            other = self._other_layout()
            if other:  # written before lakes recorded their layout, by a sink of the other one
                raise LakeRootError(f"lake root {self.root!r} holds {other} folders of the other layout;"
                                    f" this sink is configured for layout {self.layout!r}") from None
            if self.local:
                self.fs.create_dir(self.base, recursive=True)
            self.write_bytes(LAKE_DESCRIPTION, json.dumps(want).encode())
            self._claimed = True
            return  # another OSError (the store unreachable) goes to the caller: retried with the writes
        try:
            have = json.loads(raw)
        except ValueError as exc:
            raise LakeRootError(f"lake root {self.root!r}: unreadable {LAKE_DESCRIPTION}: {exc}") from None
        if not isinstance(have, dict) or (have.get("layout"), have.get("buckets")) != (want["layout"], want["buckets"]):
            raise LakeRootError(f"lake root {self.root!r} holds layout {have.get('layout') if isinstance(have, dict) else have!r}"
                                f" with buckets {have.get('buckets') if isinstance(have, dict) else None};"
                                f" this sink is configured for layout {self.layout!r}, buckets {want['buckets']}")
        self._claimed = True

    def _other_layout(self) -> str | None:
        """A partition folder name of the other layout under the first model and date found (three
        listings, whatever the lake's size), for a root written before it recorded its layout."""
        other = "vehicle_bucket=" if self.layout == "vehicle" else "vehicle="
        rel = ""
        for prefix in ("model=", "date="):
            found = sorted(i.base_name for i in self.list_dir(rel) if i.type == pafs.FileType.Directory
                           and i.base_name.startswith(prefix))
            if not found:
                return None
            rel = f"{rel}/{found[0]}" if rel else found[0]
        return next((i.base_name for i in self.list_dir(rel) if i.base_name.startswith(other)), None)

    def partition(self, model: str, day: int, part: str) -> str:
        level = "vehicle" if self.layout == "vehicle" else "vehicle_bucket"
        return f"model={safe_value(model)}/date={date_of(day)}/{level}={part}"

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    # -- files ----------------------------------------------------------------------------------

    def open_writer(self, rel: str, schema: pa.Schema, compression: str | None = None, *,
                    live: bool = True) -> LakeFile:
        """A new lake file; ``live`` files (the sink's batches) use the fast writer settings
        (data page v2, dictionaries on :data:`DICTIONARY_COLUMNS` only), others the defaults."""
        if not self._claimed:  # the store was unreachable when the sink started
            self.claim()
        return LakeFile(self, rel, schema, compression or self.compression, live=live)

    def list_dir(self, rel: str) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return self.fs.get_file_info(sel)

    def partitions(self) -> list[str]:
        """Every leaf partition folder (relative), found by walking the tree."""
        sel = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        dirs = {Path(i.path).parent.as_posix() for i in self.fs.get_file_info(sel)
                if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")}
        return sorted(os.path.relpath(d, self.base) if self.local else d[len(self.base) + 1:] for d in dirs)

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp" if self.local else target
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        if self.local:
            _fsync(tmp)
            self.fs.move(tmp, target)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def compacted_names(self, partition: str) -> set[str]:
        """File names of a partition already merged by a finished compaction (see ``compact``)."""
        names: set[str] = set()
        for info in self.list_dir(partition):
            if info.base_name.startswith(MANIFEST_PREFIX) and info.base_name.endswith(".json"):
                manifest = json.loads(self.read_bytes(f"{partition}/{info.base_name}"))
                if self.exists(f"{partition}/{manifest['output']}"):
                    names.update(manifest["inputs"])
        return names


def writer_options(schema: pa.Schema, compression: str, live: bool = True) -> dict[str, object]:
    """Keyword arguments of ``pyarrow.parquet.ParquetWriter`` for a lake file of ``schema``."""
    options: dict[str, object] = {"compression": compression,
                                  "write_statistics": [n for n in STATS_COLUMNS if n in schema.names]}
    if live:
        # write_batch_size: rows the writer encodes per call into a column (default 1,024), ~12 % less CPU
        options.update(data_page_version="2.0", use_dictionary=[n for n in DICTIONARY_COLUMNS if n in schema.names],
                       write_batch_size=WRITE_BATCH_ROWS)
    return options


class LakeFile:
    """One Parquet file being written row group by row group; :meth:`close` publishes it."""

    def __init__(self, lake: Lake, rel: str, schema: pa.Schema, compression: str, *, live: bool = True) -> None:
        self.lake, self.rel = lake, rel
        target = lake.path(rel)
        self._tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp" if lake.local else target
        if lake.local:
            lake.fs.create_dir(str(Path(target).parent), recursive=True)
        self._stream = None
        try:
            # a buffered stream: the Parquet writer's many small writes (pages, per-column metadata)
            # reach the file in OUTPUT_BUFFER pieces instead of one system call each
            self._stream = lake.fs.open_output_stream(self._tmp, buffer_size=OUTPUT_BUFFER)
            self._writer = pq.ParquetWriter(self._stream, schema, **writer_options(schema, compression, live))
        except (OSError, pa.ArrowException) as exc:
            if self._stream is not None:
                self._stream.close()
            raise LakeError(f"{target}: {exc}") from exc
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._stream.close()  # flushes the buffer
        faultpoints.hit("sink.write.before_rename")  # written and fsynced under its temporary name
        if self.lake.local:
            _fsync(self._tmp)
            self.lake.fs.move(self._tmp, self.lake.path(self.rel))
        faultpoints.hit("sink.write.renamed")

    def abort(self) -> None:
        try:
            try:
                self._writer.close()
            finally:
                self._stream.close()
        finally:
            self.lake.delete(self._tmp[len(self.lake.base) + 1:])


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
