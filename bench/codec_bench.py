"""``dcm bench codec``: minute-packet size and speed on simulated driving of a DBC's vehicle,
beside two baselines measured in the same run: naive row JSON (zstd level 3) and raw 1 Hz CAN."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--dbc", type=Path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import zstandard

    import dbc as dbc_files
    from gateway.decoder import frame_key
    from gateway.sampler import Sampler
    from minute_packet import decode, encode, schema_from_dbc
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(args.dbc or dbc_files.REFERENCE_DBC)
    schema = schema_from_dbc(db)
    sampler = Sampler(db, schema, vehicle_id="WDD2040011A000001", model="reference-car", boot_id=bytes(16))
    packets = []
    raw_can_bytes = 0
    seen: set[tuple[int, int]] = set()
    start = 1_767_225_600.0
    for m in CanVehicle(db, seed=args.seed, start_time=start).frames(args.minutes * 60):
        key = frame_key(m.arbitration_id, m.is_extended_id)
        if (int(m.timestamp), key) not in seen:  # raw 1 Hz CAN: one frame per ID per second, 16 bytes each
            seen.add((int(m.timestamp), key))
            raw_can_bytes += 16
        packets += sampler.add(m.timestamp, key, m.data)
    packets += sampler.flush()
    full = [p for p in packets if p.rows == 60]
    names = [c.name for c in schema.columns]
    result: dict[str, Any] = {"dbc": (args.dbc or dbc_files.REFERENCE_DBC).name, "columns": len(names),
                              "full_minutes": len(full)}
    for level in (3, 19):
        t = time.perf_counter()
        blobs = [encode(p, level=level) for p in full]
        enc_us = (time.perf_counter() - t) / len(full) * 1e6
        result[f"bytes_per_vehicle_minute_level{level}"] = round(float(np.mean([len(b) for b in blobs])), 1)
        result[f"encode_us_level{level}"] = round(enc_us, 1)
    t = time.perf_counter()
    for b in blobs:
        decode(b)
    result["decode_us"] = round((time.perf_counter() - t) / len(full) * 1e6, 1)
    json_sizes = []
    cctx = zstandard.ZstdCompressor(level=3)
    for p in full:
        rows = []
        for r in range(p.rows):
            row = {"ts": p.start_time + r}
            for c, col in enumerate(schema.columns):
                if p.present[c, r]:
                    row[col.name] = col.physical(p.values[c, r : r + 1]).tolist()[0]
            rows.append(row)
        json_sizes.append(len(cctx.compress(json.dumps(rows).encode())))
    result["baseline_row_json_zstd_bytes"] = round(float(np.mean(json_sizes)), 1)
    result["baseline_raw_1hz_can_bytes"] = round(raw_can_bytes / (args.minutes), 1)
    return result
