"""Ground truth for end-to-end checks: what the frames sent *should* look like in the lake.

:class:`FrameRecorder` keeps, per second of frame time, the last frame of
every ID (and of every multiplexer value); :meth:`FrameRecorder.expected`
decodes those with plain cantools, independently of the gateway's sampler
and the packet codec, giving the value every ``last`` column should hold.
:func:`compare` counts the cells where the lake disagrees.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import can
import pyarrow as pa
import pyarrow.dataset as ds

from dbc.frames import decode_frame
from minute_packet import Schema


class FrameRecorder:
    """Record frames as they are sent (thread-safe, memory bounded by seconds × IDs)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._by_id = {(m.frame_id, m.is_extended_frame): m for m in db.messages}
        self._frames: dict[tuple[int, int, bool, Any], bytes] = {}
        self._lock = threading.Lock()
        self.frames = 0

    def add(self, msg: can.Message) -> None:
        message = self._by_id.get((msg.arbitration_id, msg.is_extended_id))
        if message is None:
            return
        mux = None
        if message.is_multiplexed():
            try:
                decoded = decode_frame(message, bytes(msg.data), scaling=False)
            except Exception:
                return
            mux = tuple(sorted(decoded))  # the set of signals this frame carries identifies its mux branch
        key = (math.floor(msg.timestamp), msg.arbitration_id, msg.is_extended_id, mux)
        with self._lock:
            self._frames.pop(key, None)  # re-insert, so iteration order is the order last seen
            self._frames[key] = bytes(msg.data)
            self.frames += 1

    def expected(self, schema: Schema) -> dict[int, dict[str, float | int]]:
        """Per second, the value of every ``last`` column of the schema, from a direct cantools decode."""
        columns: dict[tuple[int, bool, str], str] = {
            (c.frame_id, c.extended, c.signal): c.name for c in schema.columns if c.aggregate == "last"
        }
        out: dict[int, dict[str, float | int]] = {}
        # entries are in the order their frame was last seen, so for a signal carried by several
        # mux branches the last frame of the second wins, as it does on the bus
        for (sec, fid, ext, _mux), data in self._frames.items():
            message = self._by_id[(fid, ext)]
            try:
                decoded = decode_frame(message, data, scaling=True)
            except Exception:  # the gateway cannot decode it either: nothing is expected
                continue
            for signal, value in decoded.items():
                name = columns.get((fid, ext, signal))
                if name is not None:  # a second is expected only with a value (a lake row has one)
                    out.setdefault(sec, {})[name] = value
        return out


def compare(expected: Mapping[int, Mapping[str, Any]], stored: Mapping[int, Mapping[str, Any]],
            columns: Iterable[str]) -> int:
    """Number of (second, column) cells where stored differs from expected (missing counts)."""
    mismatches = 0
    names = list(columns)
    for sec in expected.keys() | stored.keys():
        exp, got = expected.get(sec, {}), stored.get(sec, {})
        for name in names:
            a, b = exp.get(name), got.get(name)
            if a is None and b is None:
                continue
            if a is None or b is None or not (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))):
                mismatches += 1
    return mismatches


def read_lake_vehicle(lake: Path, masked: str) -> dict[int, dict[str, Any]]:
    """Rows of one (masked) vehicle read back from a lake of either layout with plain pyarrow:
    {second: {column: value}}, nulls left out."""
    if not lake.exists():
        return {}
    bucketed = next(lake.glob("*/*/vehicle_bucket=*"), None) is not None  # else a folder per vehicle
    last = ("vehicle_bucket", pa.string()) if bucketed else ("vehicle", pa.string())
    keys = pa.schema([("model", pa.string()), ("date", pa.string()), last])
    dataset = ds.dataset(lake, format="parquet", partitioning=ds.partitioning(keys, flavor="hive"))
    table = dataset.to_table(filter=ds.field("vehicle") == masked)
    table = table.drop_columns([c for c in ("model", "date", "vehicle", "vehicle_bucket", "boot_id", "seq")
                                if c in table.column_names])
    out: dict[int, dict[str, Any]] = {}
    for row in table.to_pylist():
        ts = row.pop("ts")
        out[int(ts.timestamp())] = {k: v for k, v in row.items() if v is not None}
    return out
