"""The alerts in the lake: a Parquet snapshot of a worker's alert table, vehicle ids masked.

``<lake>/alerts/worker=<k>/alerts.parquet`` holds every alert of worker k (its vehicles never
overlap another worker's), with the vehicle id replaced by the lake's keyed pseudonym
(:func:`minute_packet.masking.mask_vehicle`, the same key as the sink's, so alerts join the
telemetry). The file is rewritten whole, under a temporary name, fsynced and renamed (local
folders) or uploaded in one put (``pyarrow.fs`` URIs such as ``s3://``), so a reader sees the
previous snapshot or the new one, never a torn file. Query all workers with
``read_parquet('<lake>/alerts/*/*.parquet', hive_partitioning = true)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from minute_packet.masking import mask_vehicle


def _schema() -> Any:
    import pyarrow as pa  # only a worker that writes to the lake loads pyarrow

    return pa.schema([
        ("id", pa.string()), ("vehicle", pa.string()), ("rule", pa.string()), ("kind", pa.string()),
        ("status", pa.string()), ("start", pa.timestamp("s", tz="UTC")), ("end", pa.timestamp("s", tz="UTC")),
        ("details", pa.string()), ("acknowledged_at", pa.timestamp("ms", tz="UTC")),
    ])


def alerts_table(alerts: list[dict[str, Any]], secret: bytes) -> Any:
    """The alerts as a pyarrow table, vehicle ids masked."""
    import pyarrow as pa

    schema = _schema()
    cols: dict[str, list] = {f.name: [] for f in schema}
    for a in alerts:
        cols["id"].append(a["id"])
        cols["vehicle"].append(mask_vehicle(secret, a["vehicle"]))
        for k in ("rule", "kind", "status"):
            cols[k].append(a[k])
        cols["start"].append(a["start"])
        cols["end"].append(a["end"])
        cols["details"].append(json.dumps(a["details"], sort_keys=True))
        ack = a.get("acknowledged_at")
        cols["acknowledged_at"].append(None if ack is None else int(ack * 1000))
    return pa.table({name: pa.array(values, type=schema.field(name).type) for name, values in cols.items()},
                    schema=schema)


def export_alerts(alerts: list[dict[str, Any]], root: str | Path, worker: int, secret: bytes) -> str:
    """Write the snapshot; returns its path or URI."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    table = alerts_table(alerts, secret)
    root_s = str(root)
    if "://" in root_s and not root_s.startswith("file://"):
        fs, base = pafs.FileSystem.from_uri(root_s)
        folder = f"{base.rstrip('/')}/alerts/worker={worker}"
        fs.create_dir(folder, recursive=True)
        target = f"{folder}/alerts.parquet"
        with fs.open_output_stream(target) as out:
            pq.write_table(table, out, compression="zstd")
        return target
    base_path = Path(root_s[len("file://"):] if root_s.startswith("file://") else root_s)
    folder = base_path / "alerts" / f"worker={worker}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "alerts.parquet"
    tmp = folder / ".alerts.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(target)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return str(target)
