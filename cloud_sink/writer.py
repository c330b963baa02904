"""Staged packets → Parquet files, one numbered batch at a time.

A batch's packets arrive from staging in lake order, so the packets of one
output file (model, day, vehicle or bucket, fingerprint) are consecutive:
only one file is open at a time. Packets are read and decoded in chunks of
``chunk_packets`` into one table of about ``row_group_rows`` rows (plus at most one chunk),
sliced by partition and held until a row group of about ``row_group_rows`` rows is full,
which bounds memory however large the batch. Validated
packets (columns still encoded) come from a bounded cache filled at intake (evictions
counted) or are validated again from the staged bytes, and are decoded straight into the
chunk's column layout.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from minute_packet import PacketDecodeError, Schema
from minute_packet.codec import PacketInfo, validate

from .lake import DAY, Lake, LakeFile, safe_value
from .quarantine import Quarantine
from .staging import StagedPacket, Staging, StagingError
from .table import Latest, TableBuilder, merge_latest

log = logging.getLogger(__name__)


class ValidatedCache:
    """Packets validated at intake (not decoded yet) (:class:`PacketInfo`: header plus still-encoded columns,
    about 4x the wire size), kept for the writer; bounded, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.evicted = 0
        self._items: collections.OrderedDict[tuple[str, bytes, int], PacketInfo] = collections.OrderedDict()

    def put(self, packet: PacketInfo) -> None:
        if self.capacity <= 0:
            self.evicted += 1
            return
        self._items[packet.key] = packet
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            self.evicted += 1

    def pop(self, key: tuple[str, bytes, int]) -> PacketInfo | None:
        return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclasses.dataclass
class BatchResult:
    files: list[str]
    packets: int
    rows: int
    out_of_range: collections.Counter
    latest: Latest


class LakeWriter:
    """Writes staged batches of one worker into the lake."""

    def __init__(self, lake: Lake, staging: Staging, quarantine: Quarantine, *, worker_id: str,
                 schemas: dict[bytes, Schema], mask: Callable[[str], str], cache: ValidatedCache,
                 chunk_packets: int = 64, row_group_rows: int = 16384) -> None:
        self.lake, self.staging, self.quarantine = lake, staging, quarantine
        self.worker_id = safe_value(worker_id)
        self.schemas = schemas
        self.mask = mask
        self.cache = cache
        self.chunk_packets = chunk_packets
        self.row_group_rows = row_group_rows
        self._builders: dict[bytes, TableBuilder] = {}

    def builder(self, fingerprint: bytes) -> TableBuilder:
        b = self._builders.get(fingerprint)
        if b is None:
            b = self._builders[fingerprint] = TableBuilder(self.schemas[fingerprint])
        return b

    def write_batch(self, batch: int, redo: bool, staged: list[StagedPacket]) -> BatchResult:
        """Write one batch's files; the caller marks the batch finished with the result."""
        result = BatchResult([], 0, 0, collections.Counter(), {})
        bad: list[int] = []  # ids of staged packets rejected while writing
        i = 0
        while i < len(staged):
            key = (staged[i].model, staged[i].start_time // DAY, staged[i].fingerprint)
            j = i
            while j < len(staged) and (staged[j].model, staged[j].start_time // DAY, staged[j].fingerprint) == key:
                j += 1
            self._write_run(batch, redo, staged[i:j], result, bad)
            i = j
        if bad:
            self.staging.queue.drop(bad)
        return result

    def _decoded(self, staged: list[StagedPacket], schema: Schema,
                 bad: list) -> list[tuple[StagedPacket, PacketInfo]]:
        """The validated packets of a chunk: from the intake cache, else validated again from
        their staged bytes. Packets that fail (a corrupted staging row, or a parked packet whose
        schema turned out different) are quarantined and listed in ``bad``."""
        cached = [self.cache.pop(sp.key) for sp in staged]
        missing = [sp.id for sp, p in zip(staged, cached) if p is None]
        payloads = self.staging.queue.payloads(missing) if missing else {}
        out = []
        for sp, packet in zip(staged, cached):
            if packet is None:
                if sp.id not in payloads:
                    raise StagingError(f"packet {sp.key!r} is pending but its bytes are missing from staging")
                try:
                    packet = validate(payloads[sp.id])
                except PacketDecodeError as exc:  # intake checked it: only a corrupted staging row gets here
                    self.quarantine.put(exc.reason, f"staging/{sp.vehicle}", payloads[sp.id], exc.detail)
                    bad.append(sp.id)
                    continue
            if packet.columns != len(schema.columns):
                payload = payloads.get(sp.id) or self.staging.queue.payloads([sp.id]).get(sp.id, b"")
                self.quarantine.put("schema_mismatch", f"staging/{sp.vehicle}", payload,
                                    f"{packet.columns} columns, schema {sp.fingerprint.hex()} has"
                                    f" {len(schema.columns)}")
                bad.append(sp.id)
                continue
            out.append((sp, packet))
        return out

    def _write_run(self, batch: int, redo: bool, run: list[StagedPacket], result: BatchResult, bad: list) -> None:
        """Packets of one (model, day, fingerprint), ordered by partition: read and decoded in
        chunks of ``chunk_packets`` (small, so the decode stays in the CPU cache) into tables of
        about ``row_group_rows`` rows (large, so the per-column cost, ours and the Parquet
        writer's, is spread over many rows), sliced by partition and written as row groups of
        about ``row_group_rows`` rows. One file is open at a time."""
        model, day, fp = run[0].model, run[0].start_time // DAY, run[0].fingerprint
        name = f"part-{self.worker_id}-{batch:09d}-{fp.hex()}.parquet"
        builder = self.builder(fp)
        vehicle_column = self.lake.layout == "bucket"
        current: tuple[str, LakeFile | None] | None = None  # (partition key, open file or None = skip)
        pending: list[pa.Table] = []  # slices of the current partition not written yet
        pending_rows = 0

        def write_pending() -> None:
            nonlocal pending_rows
            if pending and current is not None and current[1] is not None:
                # one dictionary per column for the whole row group: with a new dictionary per chunk
                # the Parquet writer falls back to plain encoding for `vehicle` and `boot_id`
                current[1].write(pending[0] if len(pending) == 1 else pa.concat_tables(pending).unify_dictionaries())
            pending.clear()
            pending_rows = 0

        def switch(part: str, schema: pa.Schema) -> None:
            nonlocal current
            finish()
            partition = self.lake.partition(model, day, part)
            if redo and name in self.lake.compacted_names(partition):
                log.warning("batch %d: %s/%s was already compacted; not writing it again", batch, partition, name)
                current = (part, None)
            else:
                current = (part, self.lake.open_writer(f"{partition}/{name}", schema))

        def finish() -> None:
            nonlocal current
            write_pending()
            if current is not None and current[1] is not None:
                current[1].close()
                result.files.append(current[1].rel)
            current = None

        try:
            k = 0
            while k < len(run):
                # about a row group of packets per table (the per-column work is per table), read
                # and decoded chunk_packets at a time
                packets, masked, parts = [], [], []
                rows = 0
                while k < len(run) and rows < self.row_group_rows:
                    for sp, p in self._decoded(run[k:k + self.chunk_packets], builder.schema, bad):
                        packets.append(p)
                        masked.append(self.mask(sp.vehicle))
                        parts.append(sp.part)
                        rows += p.rows
                    k += self.chunk_packets
                if not packets:
                    continue
                built = builder.build(packets, masked, vehicle_column=vehicle_column, chunk=self.chunk_packets)
                a = 0
                while a < len(packets):
                    b = a
                    while b < len(packets) and parts[b] == parts[a]:
                        b += 1
                    if current is None or current[0] != parts[a]:
                        switch(parts[a], built.table.schema)
                    first_row = int(built.row_ends[a - 1]) if a else 0
                    piece = built.table.slice(first_row, int(built.row_ends[b - 1]) - first_row)
                    pending.append(piece)
                    pending_rows += piece.num_rows
                    if pending_rows >= self.row_group_rows:
                        write_pending()
                    a = b
                result.packets += len(packets)
                result.rows += built.table.num_rows
                merge_latest(result.latest, built.latest)
                for c in np.flatnonzero(built.out_of_range):
                    result.out_of_range[builder.names[c]] += int(built.out_of_range[c])
            finish()
        except BaseException:
            if current is not None and current[1] is not None:
                current[1].abort()
            raise
