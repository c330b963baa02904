"""``dcm bench sink``: packets/s per core through the sink's own code path (decode + validate +
dedupe in SQLite staging + Arrow table + Parquet lake), on packets of the reference vehicle, beside
a naive baseline (row-per-sample JSON decoded and written with the same Parquet writer) in the same
run.

Realistic packets come from ``gateway.sampler.Sampler`` over ``simulator.can_vehicle.CanVehicle``
frames (``--minutes`` distinct minutes), replicated over ``--vehicles`` ids and
``--packets-per-vehicle`` seqs and encoded once before timing. A short warm-up run precedes the
measured ones. "Per core" divides by the process CPU time (all threads, user and system), not by
wall time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

T0 = 1_767_225_600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vehicles", type=int, default=200)
    p.add_argument("--packets-per-vehicle", type=int, default=15, help="seqs per vehicle (15 = one 15-min roll)")
    p.add_argument("--minutes", type=int, default=3, help="distinct simulated minutes to replicate")
    p.add_argument("--batch", type=int, default=3000, help="packets per lake batch")
    p.add_argument("--layout", choices=("vehicle", "bucket"), default="vehicle")
    p.add_argument("--buckets", type=int, default=4, help="bucket layout: vehicle buckets per model and day")
    p.add_argument("--compression", default="snappy", help="Parquet codec of live files (snappy, zstd, lz4, none)")
    p.add_argument("--chunk", type=int, default=64, help="packets decoded and tabled at once while writing")
    p.add_argument("--row-group-rows", type=int, default=32768, help="rows per Parquet row group")
    p.add_argument("--baseline-packets", type=int, default=300)
    p.add_argument("--seed", type=int, default=11)


def _packets(args: argparse.Namespace) -> tuple[Any, Any, list]:
    import dataclasses

    import dbc as dbc_files
    from gateway.decoder import frame_key
    from gateway.sampler import Sampler
    from minute_packet import schema_from_dbc
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(dbc_files.REFERENCE_DBC)
    schema = schema_from_dbc(db)
    sampler = Sampler(db, schema, vehicle_id="TEMPLATE", model="reference-car", boot_id=bytes(16))
    minutes = []
    for m in CanVehicle(db, seed=args.seed, start_time=float(T0)).frames(args.minutes * 60 + 1):
        minutes += sampler.add(m.timestamp, frame_key(m.arbitration_id, m.is_extended_id), m.data)
    minutes = [p for p in minutes if p.rows == 60] or minutes
    out = []
    for s in range(args.packets_per_vehicle):
        for v in range(args.vehicles):
            t = minutes[(s + v) % len(minutes)]
            out.append(dataclasses.replace(t, vehicle_id=f"BENCH{v:07d}", boot_id=v.to_bytes(16, "big"), seq=s,
                                           start_time=T0 + 60 * s))
    return db, schema, out


def _pipeline(args: argparse.Namespace, schema: Any, blobs: list[tuple[str, bytes]], *, cache: int,
              root: Path) -> dict[str, float]:
    from cloud_sink.config import SinkConfig
    from cloud_sink.intake import Incoming
    from cloud_sink.service import Sink
    from dcm.broker import BrokerUrl

    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=root / "lake", state_path=root / "s.sqlite",
                           quarantine_dir=root / "q", vehicle_secret=b"bench-secret", layout=args.layout,
                           buckets=args.buckets, chunk_packets=args.chunk, validated_cache=cache,
                           row_group_rows=args.row_group_rows,
                           compression=args.compression, max_batch_packets=args.batch))
    from minute_packet import Topics

    sink.ingest([Incoming(Topics().schema(schema.fingerprint), schema.to_json(), 0, 1)])
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    ingest_cpu = 0.0
    for start in range(0, len(blobs), args.batch):
        c0 = time.process_time()
        chunk = blobs[start:start + args.batch]
        for k in range(0, len(chunk), 500):
            sink.ingest([Incoming(t, b, i, 1) for i, (t, b) in enumerate(chunk[k:k + 500])])
        ingest_cpu += time.process_time() - c0
        sink.flush()
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    assert sink.stats.packets_written == len(blobs), sink.stats
    files = list((root / "lake").rglob("*.parquet"))
    sink.staging.close()
    return {"cpu_s": cpu, "wall_s": wall, "ingest_cpu_s": ingest_cpu, "files": len(files),
            "lake_bytes": sum(f.stat().st_size for f in files), "rows": sink.stats.rows_written,
            "parquet_floor_cpu_s": _parquet_floor(files, args)}


def _parquet_floor(files: list[Path], args: argparse.Namespace) -> float:
    """CPU time pyarrow alone needs to write the lake's rows again, file by file, with the
    sink's settings and row groups, into memory: the part of the sink's time no sink code can
    remove."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_sink.lake import STATS_COLUMNS

    tables = [pq.read_table(f, partitioning=None) for f in files]
    t = time.process_time()
    for table in tables:
        w = pq.ParquetWriter(pa.BufferOutputStream(), table.schema, compression=args.compression,
                             write_statistics=[n for n in STATS_COLUMNS if n in table.schema.names])
        w.write_table(table, row_group_size=args.row_group_rows)
        w.close()
    return time.process_time() - t


def _baseline(schema: Any, packets: list, root: Path, batch: int, compression: str) -> dict[str, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = []
    for p in packets:
        phys = [col.physical(p.values[c]).tolist() for c, col in enumerate(schema.columns)]
        rows = [{"ts": p.start_time + r, "vehicle": p.vehicle_id, "boot_id": p.boot_id.hex(), "seq": p.seq,
                 **{col.name: phys[c][r] for c, col in enumerate(schema.columns) if p.present[c, r]}}
                for r in range(p.rows)]
        docs.append((p.vehicle_id, json.dumps(rows).encode()))
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(docs), batch):
        by_vehicle: dict[str, list] = {}
        for vehicle, doc in docs[start:start + batch]:
            by_vehicle.setdefault(vehicle, []).extend(json.loads(doc))
        for vehicle, rows in by_vehicle.items():
            folder = root / "baseline" / f"vehicle={vehicle}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{start}.parquet", compression=compression)
    return {"cpu_s": time.process_time() - t_cpu, "wall_s": time.perf_counter() - t_wall,
            "json_bytes_per_packet": sum(len(d) for _, d in docs) / len(docs)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dcm.allocator import keep_freed_memory
    from minute_packet import decode, encode

    tuned = keep_freed_memory()  # as `dcm sink` does at start

    _, schema, packets = _packets(args)
    from minute_packet import Topics

    blobs = [(Topics().telemetry(p.vehicle_id), encode(p)) for p in packets]
    n = len(blobs)
    t = time.process_time()
    for _, b in blobs[:500]:
        decode(b)
    decode_us = (time.process_time() - t) / min(n, 500) * 1e6
    result: dict[str, Any] = {"packets": n, "vehicles": args.vehicles, "columns": len(schema.columns),
                              "layout": args.layout, "batch": args.batch, "compression": args.compression,
                              "bytes_per_packet": round(sum(len(b) for _, b in blobs) / n, 1),
                              "decode_us": round(decode_us, 1), "allocator_tuned": tuned}
    with tempfile.TemporaryDirectory(prefix="dcm-bench-sink-") as tmp:
        # a short run first, so the measured ones see a warm process (imports, caches, heap), as a
        # long-running sink does
        _pipeline(args, schema, blobs[:min(n, 1000)], cache=args.batch, root=Path(tmp) / "warm-up")
        main = _pipeline(args, schema, blobs, cache=args.batch, root=Path(tmp) / "cached")
        again = _pipeline(args, schema, blobs, cache=0, root=Path(tmp) / "redecode")
        k = min(args.baseline_packets, n)
        base = _baseline(schema, packets[:k], Path(tmp), args.batch, args.compression)
    result.update({
        "packets_per_s_per_core": round(n / main["cpu_s"]),
        "packets_per_s_wall": round(n / main["wall_s"]),
        "intake_us_per_packet": round(main["ingest_cpu_s"] / n * 1e6, 1),
        "parquet_floor_us_per_packet": round(main["parquet_floor_cpu_s"] / n * 1e6, 1),
        "write_us_per_packet": round((main["cpu_s"] - main["ingest_cpu_s"]) / n * 1e6, 1),
        "packets_per_s_per_core_redecode": round(n / again["cpu_s"]),
        "files": main["files"], "rows": main["rows"],
        "lake_bytes_per_packet": round(main["lake_bytes"] / n, 1),
        "baseline_packets": k,
        "baseline_packets_per_s_per_core": round(k / base["cpu_s"]),
        "baseline_json_bytes_per_packet": round(base["json_bytes_per_packet"]),
    })
    result["speedup_vs_baseline"] = round(result["packets_per_s_per_core"] / result["baseline_packets_per_s_per_core"], 1)
    return result
