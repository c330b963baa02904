"""``dcm bench sink``: packets/s per core through the sink's own code path (validate + dedupe in
SQLite staging + decode + Arrow table + Parquet lake + latest state), beside a naive baseline in
the same run: the **same packets, all of them, in the same layout** as row-per-sample JSON,
decoded by ``json.loads`` and written by ``Table.from_pylist`` through the same Parquet writer
settings, one file per partition and batch (so ``speedup_vs_baseline`` compares like with like).

Packets (``--source``):

- ``reference``: ``gateway.sampler.Sampler`` over ``simulator.can_vehicle.CanVehicle`` frames
  (``--minutes`` distinct minutes) replicated over ``--vehicles`` ids and
  ``--packets-per-vehicle`` seqs (the replicated minutes flatter Parquet compression);
- ``fleet``: the fleet simulator's packet mode, every packet distinct (``--vehicles`` vehicles
  of two models for ``--packets-per-vehicle`` minutes: one realistic roll).

Packets are encoded before timing. ``--layout both`` measures the two layouts on the same
packets in one run. A short warm-up run precedes the measured ones. "Per core" divides by the
process CPU time (all threads, user and system), not by wall time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

T0 = 1_767_225_600
SECRET = b"bench-secret"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=("reference", "fleet"), default="reference")
    p.add_argument("--vehicles", type=int, default=200)
    p.add_argument("--packets-per-vehicle", type=int, default=15, help="minutes per vehicle (15 = one 15-min roll)")
    p.add_argument("--minutes", type=int, default=3, help="reference source: distinct simulated minutes to replicate")
    p.add_argument("--batch", type=int, default=3000, help="packets per lake batch")
    p.add_argument("--layout", choices=("vehicle", "bucket", "both"), default="bucket")
    p.add_argument("--buckets", type=int, default=4, help="bucket layout: vehicle buckets per model and day")
    p.add_argument("--compression", default="lz4", help="Parquet codec of live files (lz4, snappy, zstd, none)")
    p.add_argument("--chunk", type=int, default=64, help="packets decoded and tabled at once while writing")
    p.add_argument("--row-group-rows", type=int, default=16384, help="rows per Parquet row group")
    p.add_argument("--no-baseline", action="store_true", help="skip the (slow) JSON baseline")
    p.add_argument("--seed", type=int, default=11)


def _reference_packets(args: argparse.Namespace) -> tuple[dict[bytes, Any], list]:
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
    return {schema.fingerprint: schema}, out


def _fleet_packets(args: argparse.Namespace) -> tuple[dict[bytes, Any], list]:
    from simulator.fleet_generator import FleetGenerator
    from simulator.fleet_spec import FleetSpec

    gen = FleetGenerator(FleetSpec(vehicles=args.vehicles, duration_s=args.packets_per_vehicle * 60,
                                   start_time=T0 + 8 * 3600, seed=args.seed))
    packets = [p for window in gen for p in window.packets]
    return {s.fingerprint: s for s in gen.schemas.values()}, packets


def _sink(args: argparse.Namespace, layout: str, root: Path, cache: int) -> Any:
    from cloud_sink.config import SinkConfig
    from cloud_sink.service import Sink
    from dcm.broker import BrokerUrl

    return Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=root / "lake", state_path=root / "s.sqlite",
                           quarantine_dir=root / "q", vehicle_secret=SECRET, layout=layout,
                           buckets=args.buckets, chunk_packets=args.chunk, validated_cache=cache,
                           row_group_rows=args.row_group_rows,
                           compression=args.compression, max_batch_packets=args.batch))


def _pipeline(args: argparse.Namespace, layout: str, schemas: dict[bytes, Any], blobs: list[tuple[str, bytes]], *,
              cache: int, root: Path) -> dict[str, float]:
    from cloud_sink.intake import Incoming
    from minute_packet import Topics

    sink = _sink(args, layout, root, cache)
    sink.ingest([Incoming(Topics().schema(s.fingerprint), s.to_json(), 0, 1) for s in schemas.values()])
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
    sink's writer settings and row groups, into memory: the part no sink code can remove."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_sink.lake import writer_options

    tables = [pq.read_table(f, partitioning=None) for f in files]
    t = time.process_time()
    for table in tables:
        w = pq.ParquetWriter(pa.BufferOutputStream(), table.schema, **writer_options(table.schema, args.compression))
        w.write_table(table, row_group_size=args.row_group_rows)
        w.close()
    return time.process_time() - t


def _documents(schemas: dict[bytes, Any], packets: list) -> list[tuple[Any, bytes]]:
    """Each packet as the naive format's message: a JSON array of one object per vehicle-second."""
    docs = []
    for p in packets:
        schema = schemas[p.fingerprint]
        phys = [col.physical(p.values[c]).tolist() for c, col in enumerate(schema.columns)]
        rows = [{"ts": p.start_time + r, "boot_id": p.boot_id.hex(), "seq": p.seq,
                 **{col.name: phys[c][r] for c, col in enumerate(schema.columns) if p.present[c, r]}}
                for r in range(p.rows)]
        docs.append((p, json.dumps(rows).encode()))
    return docs


def _baseline(args: argparse.Namespace, layout: str, docs: list[tuple[Any, bytes]], root: Path) -> dict[str, float]:
    """The JSON documents decoded and written in ``layout``: per batch, rows grouped by lake
    partition (and schema), one file each, the same writer settings as the sink's lake."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_sink.lake import DAY, Lake, writer_options
    from cloud_sink.mask_cache import MaskCache

    lake, mask = Lake(root / "baseline", layout=layout, buckets=args.buckets), MaskCache(SECRET)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(docs), args.batch):
        parts: dict[tuple[str, int, str, bytes], list] = {}
        for p, doc in docs[start:start + args.batch]:
            masked = mask(p.vehicle_id)
            rows = json.loads(doc)
            if layout == "bucket":
                for r in rows:
                    r["vehicle"] = masked
            parts.setdefault((p.model, p.start_time // DAY, lake.part_key(masked), p.fingerprint), []).extend(rows)
        for (model, day, part, fp), rows in parts.items():
            folder = Path(lake.path(lake.partition(model, day, part)))
            folder.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pylist(rows)
            pq.write_table(table, folder / f"part-{start}-{fp.hex()}.parquet", row_group_size=args.row_group_rows,
                           **writer_options(table.schema, args.compression))
    return {"cpu_s": time.process_time() - t_cpu, "wall_s": time.perf_counter() - t_wall}


def _measure(args: argparse.Namespace, layout: str, schemas: dict[bytes, Any], blobs: list,
             docs: list | None, tmp: Path) -> dict[str, Any]:
    n = len(blobs)
    # a short run first, so the measured ones see a warm process (imports, caches, heap), as a
    # long-running sink does
    _pipeline(args, layout, schemas, blobs[:min(n, 1000)], cache=args.batch, root=tmp / "warm-up")
    main = _pipeline(args, layout, schemas, blobs, cache=args.batch, root=tmp / "cached")
    again = _pipeline(args, layout, schemas, blobs, cache=0, root=tmp / "redecode")
    out: dict[str, Any] = {
        "layout": layout,
        "packets_per_s_per_core": round(n / main["cpu_s"]),
        "packets_per_s_wall": round(n / main["wall_s"]),
        "intake_us_per_packet": round(main["ingest_cpu_s"] / n * 1e6, 1),
        "parquet_floor_us_per_packet": round(main["parquet_floor_cpu_s"] / n * 1e6, 1),
        "write_us_per_packet": round((main["cpu_s"] - main["ingest_cpu_s"]) / n * 1e6, 1),
        "packets_per_s_per_core_redecode": round(n / again["cpu_s"]),
        "files": main["files"], "rows": main["rows"],
        "lake_bytes_per_packet": round(main["lake_bytes"] / n, 1),
    }
    if docs is not None:
        base = _baseline(args, layout, docs, tmp)
        out["baseline_packets"] = n
        out["baseline_packets_per_s_per_core"] = round(n / base["cpu_s"])
        out["speedup_vs_baseline"] = round(out["packets_per_s_per_core"] / out["baseline_packets_per_s_per_core"], 1)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dcm.allocator import keep_freed_memory
    from minute_packet import Topics, decode, encode

    tuned = keep_freed_memory()  # as `dcm sink` does at start

    schemas, packets = (_fleet_packets if args.source == "fleet" else _reference_packets)(args)
    blobs = [(Topics().telemetry(p.vehicle_id), encode(p)) for p in packets]
    n = len(blobs)
    t = time.process_time()
    for _, b in blobs[:500]:
        decode(b)
    decode_us = (time.process_time() - t) / min(n, 500) * 1e6
    result: dict[str, Any] = {"source": args.source, "packets": n,
                              "vehicles": len({p.vehicle_id for p in packets}),
                              "schemas": len(schemas), "columns": max(len(s.columns) for s in schemas.values()),
                              "batch": args.batch, "compression": args.compression,
                              "bytes_per_packet": round(sum(len(b) for _, b in blobs) / n, 1),
                              "decode_us": round(decode_us, 1), "allocator_tuned": tuned}
    docs = None if args.no_baseline else _documents(schemas, packets)
    if docs is not None:
        result["baseline_json_bytes_per_packet"] = round(sum(len(d) for _, d in docs) / n)
    layouts = ("vehicle", "bucket") if args.layout == "both" else (args.layout,)
    with tempfile.TemporaryDirectory(prefix="dcm-bench-sink-") as tmp:
        measured = {lay: _measure(args, lay, schemas, blobs, docs, Path(tmp) / lay) for lay in layouts}
    if args.layout == "both":
        result["layout"] = "both"
        result["layouts"] = measured
    else:
        result.update(measured[args.layout])
    return result
