"""Decoded minute packets → one Arrow table, vectorised over columns.

One row per vehicle-second with at least one value: ``ts`` (UTC seconds),
``boot_id``, ``seq``, optionally ``vehicle`` (the masked id, in the bucket
layout), one column per schema column holding *physical* values (of the
column's ``value_type``: int64 or uint64 where the DBC scaling keeps
integers, else float64; null where the signal was not seen) and ``out_of_range``: the names of the columns whose value in
that row lies outside the DBC's ``[minimum, maximum]`` (empty list when all
are in range). Values are stored as sent, flagged, never clipped.

Physical values are computed per group of columns that share a conversion
(one numpy expression per group instead of one per column) and every Arrow
column is made zero-copy from a row of the resulting matrix plus a packed
validity bitmap.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from minute_packet import MinutePacket, Schema
from minute_packet.codec import PacketInfo
from minute_packet.columns import fill, fill_many

TS_TYPE = pa.timestamp("s", tz="UTC")
_ARROW_TYPES = {"int64": pa.int64(), "uint64": pa.uint64(), "float64": pa.float64()}
Latest = dict[str, dict[str, tuple[int, float]]]


@dataclasses.dataclass(frozen=True)
class _Group:
    index: np.ndarray  # schema column indices
    kind: str
    value_type: str  # int64, uint64 or float64 (Column.value_type)
    scale: np.ndarray
    offset: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @property
    def integer(self) -> bool:
        return self.value_type != "float64"

    @property
    def scaled(self) -> bool:
        return bool((self.scale != 1).any())

    @property
    def offset_any(self) -> bool:
        return bool((self.offset != 0).any())

    @property
    def checked(self) -> bool:
        return bool(np.isfinite(self.minimum).any() or np.isfinite(self.maximum).any())


@dataclasses.dataclass
class Built:
    """A built table plus what the writer needs besides it."""

    table: pa.Table
    out_of_range: np.ndarray  # per schema column, flagged values
    latest: Latest  # masked vehicle -> signal -> (ts, value)
    row_ends: np.ndarray  # per packet, the end of its rows in the table (rows without values dropped)


def _bound(value: float | None, default: float) -> float:
    return default if value is None else float(value)


class TableBuilder:
    """Builds lake tables for one schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names = [c.name for c in schema.columns]
        self._names_arrow = pa.array(self.names, type=pa.string())
        self._names_object = np.array(self.names, dtype=object)
        # columns sharing a conversion: raw kind, integer-valued, and whether a scale or offset
        # applies at all (most integer signals have neither, so their values are used as decoded)
        keys: dict[tuple[str, str, bool, bool], list[int]] = {}
        for i, col in enumerate(schema.columns):
            keys.setdefault((col.kind, col.value_type, col.scale != 1, col.offset != 0), []).append(i)
        self.groups: list[_Group] = []
        for (kind, value_type, _, _), idx in keys.items():
            cols = [schema.columns[i] for i in idx]
            unset = [c.minimum is not None and c.maximum is not None and c.minimum == c.maximum == 0 for c in cols]
            integer = value_type != "float64"
            dtype = np.dtype(value_type)
            self.groups.append(_Group(
                index=np.array(idx),
                kind=kind,
                value_type=value_type,
                scale=np.array([int(c.scale) if integer else float(c.scale) for c in cols], dtype=dtype)[:, None],
                offset=np.array([int(c.offset) if integer else float(c.offset) for c in cols], dtype=dtype)[:, None],
                # a DBC range of [0, 0] means "not given"
                minimum=np.array([-np.inf if r else _bound(c.minimum, -np.inf) for c, r in zip(cols, unset)])[:, None],
                maximum=np.array([np.inf if r else _bound(c.maximum, np.inf) for c, r in zip(cols, unset)])[:, None],
            ))
        # chunk matrices hold the columns group by group: row r is schema column order[r], so a
        # group's raw values are one contiguous block of rows (no gather copy per group)
        order = np.concatenate([g.index for g in self.groups])
        self._row_of = np.empty(len(order), dtype=np.int64)
        self._row_of[order] = np.arange(len(order))
        # integer columns whose values may not fit a float64 exactly: (group, row in group, column)
        self._wide = [(b, j, int(c)) for b, g in enumerate(self.groups) if g.integer
                      for j, c in enumerate(g.index) if schema.columns[c].bit_length > 53]
        bounds = np.cumsum([0] + [len(g.index) for g in self.groups])
        self._blocks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def _physical(self, g: _Group, raw: np.ndarray) -> np.ndarray:
        """Physical values of a group from its raw rows (a block of the chunk's own matrix, so
        converted in place where the type allows)."""
        if g.integer:  # int or uint raw values whose physical values fit value_type exactly
            out = raw.view(np.dtype(g.value_type))  # two's complement bits: astype for int and uint alike
        elif g.kind in ("int", "uint"):
            numbers = raw.view(np.int64) if g.kind == "int" else raw
            if g.scaled:  # converted and scaled in one pass (the same float64 arithmetic)
                out = np.multiply(numbers, g.scale, dtype=np.float64)
                if g.offset_any:
                    out += g.offset
                return out
            out = numbers.astype(np.float64)
        elif g.kind == "f32":
            out = raw.astype(np.uint32).view(np.float32).astype(np.float64)
        else:
            out = raw.view(np.float64)
        if g.scaled:
            out *= g.scale
        if g.offset_any:
            out += g.offset
        return out

    def build(self, packets: Sequence[PacketInfo | MinutePacket], masked: Sequence[str], *,
              vehicle_column: bool, chunk: int = 16) -> Built:
        """Rows of ``packets`` (one schema, grouped by vehicle and in time order within a vehicle;
        ``masked[i]`` is packet i's masked vehicle id). Inspected packets are decoded straight
        into the table's matrices ``chunk`` packets at a time (no per-packet matrices, no
        concatenation)."""
        ncol = len(self.names)
        rows = np.array([p.rows for p in packets], dtype=np.int64)
        n = int(rows.sum())
        ends = np.cumsum(rows)
        starts = ends - rows
        row_of = self._row_of  # matrices hold schema column c in row row_of[c] (group order)
        many = fill_many(list(packets), row_of, chunk=chunk) if all(isinstance(p, PacketInfo) for p in packets) else None
        if many is not None:  # the usual case: minute packets of 60 rows, decoded as one
            values, present = many
        else:
            values = np.empty((ncol, n), dtype=np.uint64)
            present = np.empty((ncol, n), dtype=bool)
        for p, a, b in zip(packets if many is None else (), starts.tolist(), ends.tolist()):
            if isinstance(p, PacketInfo):
                fill(p, values[:, a:b], present[:, a:b], row_of)
            else:
                values[row_of, a:b] = p.values
                present[row_of, a:b] = p.present
        ts = np.repeat(np.array([p.start_time for p in packets], dtype=np.int64) - starts, rows) + np.arange(n)
        physical: list[np.ndarray] = []
        oor: np.ndarray | None = None  # in schema column order
        for g, block in zip(self.groups, self._blocks):
            phys = self._physical(g, values[block])
            physical.append(phys)
            if g.checked:
                # cheap screen: only columns whose extremes leave the range need the per-value mask
                suspect = np.flatnonzero((phys.min(axis=1) < g.minimum[:, 0]) | (phys.max(axis=1) > g.maximum[:, 0]))
                if len(suspect):
                    sub = phys[suspect]
                    flagged = (sub < g.minimum[suspect]) | (sub > g.maximum[suspect])
                    flagged &= present[block][suspect]
                    if oor is None:
                        oor = np.zeros((ncol, n), dtype=bool)
                    oor[g.index[suspect]] = flagged
        latest = self._latest(masked, starts, ends, ts, present, physical)
        keep = present.any(axis=0)
        all_kept = bool(keep.all())
        if not all_kept:
            present, ts = present[:, keep], ts[keep]
            oor = oor[:, keep] if oor is not None else None
            physical = [p[:, keep] for p in physical]
        m = int(keep.sum())
        packet_of_row = np.repeat(np.arange(len(packets)), rows)
        if not all_kept:
            packet_of_row = packet_of_row[keep]
        row_ends = np.searchsorted(packet_of_row, np.arange(len(packets)), side="right")
        arrays: dict[str, pa.Array] = {"ts": pa.Array.from_buffers(TS_TYPE, m, [None, pa.py_buffer(ts)])}
        if vehicle_column:
            arrays["vehicle"] = _dictionary(list(masked), packet_of_row)
        arrays["boot_id"] = _dictionary([p.boot_id.hex() for p in packets], packet_of_row)
        arrays["seq"] = pa.array(np.array([p.seq for p in packets], dtype=np.int64)[packet_of_row])
        columns: list[pa.Array | None] = [None] * ncol
        for g, block, phys in zip(self.groups, self._blocks, physical):
            bits = np.packbits(present[block], axis=1, bitorder="little")
            counts = np.bitwise_count(bits).sum(axis=1, dtype=np.int64)  # padding bits are zero
            typ = _ARROW_TYPES[g.value_type]
            phys = np.ascontiguousarray(phys)
            for j, c in enumerate(g.index):
                nulls = m - int(counts[j])
                validity = pa.py_buffer(bits[j]) if nulls else None
                columns[c] = pa.Array.from_buffers(typ, m, [validity, pa.py_buffer(phys[j])], null_count=nulls)
        for name, arr in zip(self.names, columns):
            arrays[name] = arr
        arrays["out_of_range"] = self._flags(oor, m)
        counts = oor.sum(axis=1) if oor is not None else np.zeros(ncol, dtype=np.int64)
        return Built(pa.table(arrays), counts, latest, row_ends)

    def _flags(self, oor: np.ndarray | None, m: int) -> pa.Array:
        offsets = np.zeros(m + 1, dtype=np.int32)
        if oor is None:
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array([], type=pa.string()))
        np.cumsum(oor.sum(axis=0), out=offsets[1:])
        _, cols = np.nonzero(oor.T)
        return pa.ListArray.from_arrays(pa.array(offsets), self._names_arrow.take(pa.array(cols)))

    def _latest(self, masked: Sequence[str], starts: np.ndarray, ends: np.ndarray, ts: np.ndarray,
                present: np.ndarray, physical: list[np.ndarray]) -> Latest:
        """Per vehicle, each column's last present value and its time (rows are in time order
        per vehicle; ``present`` rows in group order). A column is looked up in the vehicle's
        last packet first; only columns absent there are searched in its earlier rows."""
        seg = [0] + [i for i in range(1, len(masked)) if masked[i] != masked[i - 1]] + [len(masked)]
        ncol = present.shape[0]
        cols = np.arange(ncol)
        last = np.empty((ncol, len(seg) - 1), dtype=np.int64)  # (group rows, vehicles), -1 = never present
        for v in range(len(seg) - 1):
            first_row, tail, b = int(starts[seg[v]]), int(starts[seg[v + 1] - 1]), int(ends[seg[v + 1] - 1])
            rev = present[:, tail:b][:, ::-1]
            idx = np.argmax(rev, axis=1)  # first present value from the end
            found = rev[cols, idx]
            last[:, v] = np.where(found, b - 1 - idx, -1)
            if tail > first_row and not found.all():
                missing = np.flatnonzero(~found)
                rev = present[missing, first_row:tail][:, ::-1]
                idx = np.argmax(rev, axis=1)
                last[missing, v] = np.where(rev[np.arange(len(missing)), idx], tail - 1 - idx, -1)
        values = np.empty((ncol, len(seg) - 1), dtype=np.float64)
        for block, phys in zip(self._blocks, physical):
            values[block] = np.take_along_axis(phys, np.maximum(last[block], 0), axis=1)
        last, values = last[self._row_of], values[self._row_of]  # back to schema column order
        times = ts[np.maximum(last, 0)]
        has = (last >= 0) & np.isfinite(values)  # NaN/inf (float signals) cannot be JSON: not a "latest value"
        out: Latest = {}
        for v in range(len(seg) - 1):
            sel = has[:, v]
            out[masked[seg[v]]] = dict(zip(self._names_object[sel].tolist(),
                                           zip(times[sel, v].tolist(), values[sel, v].tolist())))
        for block, row, c in self._wide:  # integers beyond float64's 2^53: the exact value, not a rounding
            phys = physical[block]
            for v in range(len(seg) - 1):
                i = int(last[c, v])
                if i >= 0:
                    out[masked[seg[v]]][self.names[c]] = (int(times[c, v]), int(phys[row, i]))
        return out


def merge_latest(into: Latest, more: Latest) -> None:
    """Fold ``more`` into ``into``, keeping per vehicle and signal the later value."""
    for vehicle, signals in more.items():
        have = into.get(vehicle)
        if have is None:
            into[vehicle] = dict(signals)
        elif min(t for t, _ in signals.values()) >= max(t for t, _ in have.values()):
            have.update(signals)  # the usual case: newer data, no comparison per signal
        else:
            for name, (t, value) in signals.items():
                if name not in have or t >= have[name][0]:
                    have[name] = (t, value)


def _dictionary(labels: list[str], index: np.ndarray) -> pa.Array:
    """A dictionary-encoded string column from per-packet labels and each row's packet index
    (dictionary in order of first appearance)."""
    codes: dict[str, int] = {}
    per_packet = np.array([codes.setdefault(label, len(codes)) for label in labels], dtype=np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(per_packet[index]), pa.array(list(codes), pa.string()))
