"""Turn decoded packets into Parquet files of a Hive-partitioned data lake.

Layout::

    <root>/model=<model>/date=<YYYY-MM-DD>/vehicle=<masked id>/part-<batch>-<fingerprint>.parquet

One row per vehicle-second that has at least one value: ``ts`` (UTC
seconds), ``boot_id``, ``seq`` and one column per schema column holding
*physical* values (int64 where the DBC scaling keeps integers, else
float64), null where the signal was not seen in that second. The raw
vehicle id never reaches the lake: ``vehicle`` is a keyed HMAC of it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from minute_packet import MinutePacket, Schema

DAY = 86400


def mask_vehicle(secret: bytes, vehicle_id: str) -> str:
    """A stable pseudonym for a vehicle id (HMAC-SHA256, 16 hex digits)."""
    return hmac.new(secret, vehicle_id.encode(), hashlib.sha256).hexdigest()[:16]


def _safe(value: str) -> str:
    """A partition value that cannot escape its folder."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in value) or "_"


def packets_table(packets: list[MinutePacket], schema: Schema) -> pa.Table:
    """The rows of packets that share one schema, rows without any value dropped."""
    values = np.concatenate([p.values for p in packets], axis=1)
    present = np.concatenate([p.present for p in packets], axis=1)
    ts = np.concatenate([np.arange(p.start_time, p.start_time + p.rows, dtype=np.int64) for p in packets])
    seq = np.concatenate([np.full(p.rows, p.seq, dtype=np.int64) for p in packets])
    boot = [p.boot_id.hex() for p in packets for _ in range(p.rows)]
    keep = present.any(axis=0)
    arrays: dict[str, pa.Array] = {
        "ts": pa.array(ts[keep], type=pa.timestamp("s", tz="UTC")),
        "boot_id": pa.array([b for b, k in zip(boot, keep) if k], type=pa.string()).dictionary_encode(),
        "seq": pa.array(seq[keep]),
    }
    values, present = values[:, keep], present[:, keep]
    for c, col in enumerate(schema.columns):
        arrays[col.name] = pa.array(col.physical(values[c]), mask=~present[c])
    return pa.table(arrays)


def latest_values(packets: Iterable[MinutePacket], schema: Schema) -> dict[str, tuple[int, float | None]]:
    """Per column name, the last present value and its time over the given packets."""
    out: dict[str, tuple[int, float | None]] = {}
    for p in sorted(packets, key=lambda p: p.start_time):
        has = p.present.any(axis=1)
        last_idx = p.rows - 1 - np.argmax(p.present[:, ::-1], axis=1)
        for c in np.flatnonzero(has):
            col = schema.columns[c]
            value = col.physical(p.values[c, last_idx[c] : last_idx[c] + 1])[0]
            out[col.name] = (p.start_time + int(last_idx[c]), float(value))
    return out


def write_partitioned(
    root: Path, batch: int, table: pa.Table, *, model: str, vehicle: str, fingerprint: bytes
) -> list[str]:
    """Write a vehicle's table into its date partitions; returns the files' paths relative to root.

    File names depend only on (batch, fingerprint), so redoing a batch overwrites its files.
    """
    days = table["ts"].cast(pa.int64()).to_numpy() // DAY
    files = []
    for day in np.unique(days):
        part = table.filter(pa.array(days == day))
        date = dt.datetime.fromtimestamp(int(day) * DAY, dt.timezone.utc).date().isoformat()
        rel = Path(f"model={_safe(model)}") / f"date={date}" / f"vehicle={vehicle}" / f"part-{batch:09d}-{fingerprint.hex()}.parquet"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(part, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        files.append(str(rel))
    return files
