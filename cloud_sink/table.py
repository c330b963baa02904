"""Decoded minute packets → one Arrow table, vectorised over columns.

One row per vehicle-second with at least one value: ``ts`` (UTC seconds),
``boot_id``, ``seq``, optionally ``vehicle`` (the masked id, in the bucket
layout), one column per schema column holding *physical* values (int64
where the DBC scaling keeps integers, else float64; null where the signal
was not seen) and ``out_of_range``: the names of the columns whose value in
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

TS_TYPE = pa.timestamp("s", tz="UTC")


@dataclasses.dataclass(frozen=True)
class _Group:
    index: np.ndarray  # schema column indices
    kind: str
    integer: bool
    scale: np.ndarray
    offset: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray


@dataclasses.dataclass
class Built:
    """A built table plus what the writer needs besides it."""

    table: pa.Table
    out_of_range: np.ndarray  # per schema column, flagged values
    latest: list[tuple[str, str, int, float | None]]  # (masked vehicle, signal, ts, value)


def _bound(value: float | None, default: float) -> float:
    return default if value is None else float(value)


class TableBuilder:
    """Builds lake tables for one schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names = [c.name for c in schema.columns]
        self._names_arrow = pa.array(self.names, type=pa.string())
        keys: dict[tuple[str, bool], list[int]] = {}
        for i, col in enumerate(schema.columns):
            keys.setdefault((col.kind, col.integer_valued), []).append(i)
        self.groups: list[_Group] = []
        for (kind, integer), idx in keys.items():
            cols = [schema.columns[i] for i in idx]
            ranged = [c.minimum is not None and c.maximum is not None and c.minimum == c.maximum == 0 for c in cols]
            self.groups.append(_Group(
                index=np.array(idx),
                kind=kind,
                integer=integer,
                scale=np.array([int(c.scale) if integer else float(c.scale) for c in cols],
                               dtype=np.int64 if integer else np.float64)[:, None],
                offset=np.array([int(c.offset) if integer else float(c.offset) for c in cols],
                                dtype=np.int64 if integer else np.float64)[:, None],
                # a DBC range of [0, 0] means "not given"
                minimum=np.array([-np.inf if r else _bound(c.minimum, -np.inf) for c, r in zip(cols, ranged)])[:, None],
                maximum=np.array([np.inf if r else _bound(c.maximum, np.inf) for c, r in zip(cols, ranged)])[:, None],
            ))

    def _physical(self, g: _Group, raw: np.ndarray) -> np.ndarray:
        if g.kind == "int":
            numbers = raw.view(np.int64)
        elif g.kind == "uint":
            numbers = raw
        elif g.kind == "f32":
            numbers = raw.astype(np.uint32).view(np.float32)
        else:
            numbers = raw.view(np.float64)
        if g.integer:
            out = numbers.astype(np.int64)
            if (g.scale != 1).any():
                out *= g.scale
            if (g.offset != 0).any():
                out += g.offset
            return out
        out = numbers.astype(np.float64)
        if (g.scale != 1).any():
            out *= g.scale
        if (g.offset != 0).any():
            out += g.offset
        return out

    def build(self, packets: Sequence[MinutePacket], masked: Sequence[str], *, vehicle_column: bool) -> Built:
        """Rows of ``packets`` (one schema, sorted by vehicle then time; ``masked[i]`` is packet i's id)."""
        ncol = len(self.names)
        rows = np.array([p.rows for p in packets], dtype=np.int64)
        n = int(rows.sum())
        ends = np.cumsum(rows)
        starts = ends - rows
        values = np.concatenate([p.values for p in packets], axis=1) if len(packets) > 1 else packets[0].values
        present = np.concatenate([p.present for p in packets], axis=1) if len(packets) > 1 else packets[0].present
        ts = np.repeat(np.array([p.start_time for p in packets], dtype=np.int64) - starts, rows) + np.arange(n)
        physical: list[np.ndarray] = []
        oor = np.zeros((ncol, n), dtype=bool)
        for g in self.groups:
            phys = self._physical(g, values[g.index])
            physical.append(phys)
            flagged = (phys < g.minimum) | (phys > g.maximum)
            flagged &= present[g.index]
            oor[g.index] = flagged
        latest = self._latest(packets, masked, starts, ends, ts, present, physical)
        keep = present.any(axis=0)
        if not keep.all():
            present, oor, ts = present[:, keep], oor[:, keep], ts[keep]
            physical = [p[:, keep] for p in physical]
        m = int(keep.sum())
        packet_of_row = np.repeat(np.arange(len(packets)), rows)[keep]
        arrays: dict[str, pa.Array] = {"ts": pa.array(ts, type=TS_TYPE)}
        if vehicle_column:
            arrays["vehicle"] = _dictionary([masked[i] for i in range(len(packets))], packet_of_row)
        arrays["boot_id"] = _dictionary([p.boot_id.hex() for p in packets], packet_of_row)
        arrays["seq"] = pa.array(np.array([p.seq for p in packets], dtype=np.int64)[packet_of_row])
        columns: list[pa.Array | None] = [None] * ncol
        for g, phys in zip(self.groups, physical):
            valid = present[g.index]
            bits = np.packbits(valid, axis=1, bitorder="little")
            nulls = m - valid.sum(axis=1)
            typ = pa.int64() if g.integer else pa.float64()
            phys = np.ascontiguousarray(phys)
            for j, c in enumerate(g.index):
                validity = pa.py_buffer(bits[j]) if nulls[j] else None
                columns[c] = pa.Array.from_buffers(typ, m, [validity, pa.py_buffer(phys[j])], null_count=int(nulls[j]))
        for name, arr in zip(self.names, columns):
            arrays[name] = arr
        arrays["out_of_range"] = self._flags(oor)
        return Built(pa.table(arrays), oor.sum(axis=1), latest)

    def _flags(self, oor: np.ndarray) -> pa.Array:
        counts = oor.sum(axis=0)
        offsets = np.zeros(len(counts) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        if offsets[-1] == 0:
            names = pa.array([], type=pa.string())
        else:
            _, cols = np.nonzero(oor.T)
            names = self._names_arrow.take(pa.array(cols))
        return pa.ListArray.from_arrays(pa.array(offsets), names)

    def _latest(self, packets: Sequence[MinutePacket], masked: Sequence[str], starts: np.ndarray,
                ends: np.ndarray, ts: np.ndarray, present: np.ndarray,
                physical: list[np.ndarray]) -> list[tuple[str, str, int, float | None]]:
        out: list[tuple[str, str, int, float | None]] = []
        i = 0
        while i < len(packets):
            j = i
            while j + 1 < len(packets) and masked[j + 1] == masked[i]:
                j += 1
            a, b = int(starts[i]), int(ends[j])
            sub_ts = ts[a:b]
            order = np.argsort(sub_ts, kind="stable")
            for g, phys in zip(self.groups, physical):
                pres = present[g.index, a:b][:, order]
                has = pres.any(axis=1)
                if not has.any():
                    continue
                last = pres.shape[1] - 1 - np.argmax(pres[:, ::-1], axis=1)
                vals = phys[:, a:b][:, order][np.arange(len(g.index)), last]
                times = sub_ts[order][last]
                for k in np.flatnonzero(has):
                    out.append((masked[i], self.names[g.index[k]], int(times[k]), float(vals[k])))
            i = j + 1
        return out


def _dictionary(labels: list[str], index: np.ndarray) -> pa.Array:
    """A dictionary-encoded string column from per-packet labels and each row's packet index."""
    uniq, inverse = np.unique(np.array(labels, dtype=object), return_inverse=True)
    return pa.DictionaryArray.from_arrays(pa.array(inverse[index].astype(np.int32)), pa.array(list(uniq), pa.string()))
