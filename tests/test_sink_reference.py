"""The sink's lake against an independent reference, cell for cell.

The reference is written without any of the sink's decode or table code: each packet decoded by
``minute_packet.decode`` (the per-packet path), every cell converted by ``Column.physical``
(which mirrors cantools), rows and ``out_of_range`` built in plain Python, written with pyarrow.
DuckDB's ``EXCEPT ALL`` both ways must find no row of one missing from the other (so duplicates
count too), for both layouts, with small chunks and row groups (many chunks per row group and
row groups per file), with the intake cache and with every packet validated again from staging.
The latest state must equal the last present value of each signal per vehicle."""
from __future__ import annotations

import dataclasses
import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cloud_sink.config import SinkConfig
from cloud_sink.intake import Incoming
from cloud_sink.service import Sink
from dcm.broker import BrokerUrl
from minute_packet import Topics, decode, encode
from minute_packet.masking import mask_vehicle
from simulator.fleet_generator import FleetGenerator
from simulator.fleet_spec import FleetSpec

SECRET = b"reference-secret"
T0 = 1_767_225_600 + 23 * 3600 + 57 * 60  # the fleet's minutes cross midnight: two days


@pytest.fixture(scope="module")
def fleet():
    gen = FleetGenerator(FleetSpec(vehicles=9, duration_s=6 * 60, start_time=T0, seed=3))
    packets = [p for window in gen for p in window.packets]
    schemas = {s.fingerprint: s for s in gen.schemas.values()}
    # a few values beyond the DBC's range (flagged, stored as sent) and a vehicle's second copy
    out = []
    for i, p in enumerate(packets):
        if i % 7 == 0:
            schema = schemas[p.fingerprint]
            top = [np.array([(1 << min(col.bit_length, 63)) - 1], np.uint64) for col in schema.columns]
            c = next(k for k, col in enumerate(schema.columns) if col.kind == "uint" and col.maximum
                     and col.physical(top[k])[0] > col.maximum)
            values, present = p.values.copy(), p.present.copy()
            values[c, ::5], present[c, ::5] = top[c][0], True
            p = dataclasses.replace(p, values=values, present=present)
        out.append(p)
    return schemas, out + out[:5]  # the last five are duplicates: stored once


def _reference_rows(schemas, packets, layout: str) -> list[dict]:
    rows, seen = [], set()
    for p in packets:
        p = decode(encode(p))
        if p.key in seen:
            continue
        seen.add(p.key)
        schema = schemas[p.fingerprint]
        phys = [col.physical(p.values[c]) for c, col in enumerate(schema.columns)]
        masked = mask_vehicle(SECRET, p.vehicle_id)
        for r in range(p.rows):
            if not p.present[:, r].any():
                continue
            row = {"model": p.model, "ts": p.start_time + r, "boot_id": p.boot_id.hex(), "seq": p.seq}
            if layout == "bucket":
                row["vehicle"] = masked
            else:
                row["vehicle_masked"] = masked
            flags = []
            for c, col in enumerate(schema.columns):
                if not p.present[c, r]:
                    row[col.name] = None
                    continue
                value = phys[c][r].item()
                row[col.name] = value
                low, high = col.minimum, col.maximum
                if low == high == 0:  # a DBC range of [0, 0] means none
                    low = high = None
                if (low is not None and value < low) or (high is not None and value > high):
                    flags.append(col.name)
            row["out_of_range"] = flags
            rows.append(row)
    return rows


def _sink(tmp_path, layout: str, cache: int) -> Sink:
    return Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=tmp_path / "lake", state_path=tmp_path / "s.sqlite",
                           quarantine_dir=tmp_path / "q", vehicle_secret=SECRET, layout=layout, buckets=2,
                           chunk_packets=5, row_group_rows=700, validated_cache=cache, max_batch_packets=40))


def _differences(tmp_path, schemas, packets, layout: str) -> tuple[int, int, int, list[dict]]:
    """(lake rows, rows of the lake not in the reference, rows of the reference not in the lake,
    the reference rows), by DuckDB ``EXCEPT ALL``."""
    rows = _reference_rows(schemas, packets, layout)
    names = sorted({n for s in schemas.values() for n in (c.name for c in s.columns)})
    types = {c.name: pa.int64() if c.value_type == "int64" else pa.uint64() if c.value_type == "uint64" else pa.float64()
             for s in schemas.values() for c in s.columns}
    ident = "vehicle" if layout == "bucket" else "vehicle_masked"
    fields = [pa.field("model", pa.string()), pa.field("ts", pa.int64()), pa.field("boot_id", pa.string()),
              pa.field("seq", pa.int64()), pa.field(ident, pa.string())]
    fields += [pa.field(n, types[n]) for n in names] + [pa.field("out_of_range", pa.list_(pa.string()))]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), tmp_path / "reference.parquet")
    con = duckdb.connect()
    lake = f"read_parquet('{tmp_path / 'lake'}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
    vehicle = "vehicle" if layout == "bucket" else "vehicle AS vehicle_masked"
    cols = ", ".join(f'"{n}"' for n in names)
    con.execute(f"CREATE VIEW sink AS SELECT model, epoch(ts)::BIGINT AS ts, boot_id::VARCHAR AS boot_id, seq,"
                f" {vehicle}, {cols}, out_of_range FROM {lake}")
    con.execute(f"CREATE VIEW ref AS SELECT model, ts, boot_id, seq, {ident}, {cols}, out_of_range"
                f" FROM read_parquet('{tmp_path / 'reference.parquet'}')")
    if layout == "vehicle":  # the partition column agrees with the rows too
        assert con.execute(f"SELECT count(*) FROM {lake} WHERE date <> CAST(ts AS DATE)").fetchone()[0] == 0
    return (con.execute("SELECT count(*) FROM sink").fetchone()[0],
            con.execute("SELECT count(*) FROM (SELECT * FROM sink EXCEPT ALL SELECT * FROM ref)").fetchone()[0],
            con.execute("SELECT count(*) FROM (SELECT * FROM ref EXCEPT ALL SELECT * FROM sink)").fetchone()[0], rows)


@pytest.mark.parametrize("layout, cache", [("bucket", 1000), ("vehicle", 1000), ("bucket", 0)])
def test_the_lake_equals_the_reference_cell_for_cell(tmp_path, fleet, layout, cache):
    schemas, packets = fleet
    sink = _sink(tmp_path, layout, cache)
    topics = Topics()
    sink.ingest([Incoming(topics.schema(s.fingerprint), s.to_json(), 0, 1) for s in schemas.values()])
    for k in range(0, len(packets), 23):  # several commits and several batches
        sink.ingest([Incoming(topics.telemetry(p.vehicle_id), encode(p), i, 1) for i, p in enumerate(packets[k:k + 23])])
        if k % 46 == 0:
            sink.flush()
    sink.flush()
    assert sink.stats.duplicates == 5 and sink.stats.packets_written == len(packets) - 5
    assert sink.stats.out_of_range  # the injected values were flagged

    total, extra, missing, rows = _differences(tmp_path, schemas, packets, layout)
    assert (total, extra, missing) == (len(rows), 0, 0) and total > 0
    names = sorted({n for s in schemas.values() for n in (c.name for c in s.columns)})
    ident = ["vehicle" if layout == "bucket" else "vehicle_masked"]
    # latest state: per vehicle and signal, the last present (finite) value and its second
    want: dict[str, dict[str, tuple[int, float]]] = {}
    for row in sorted(rows, key=lambda r: r["ts"]):
        v = row[ident[-1]]
        for n in names:
            x = row.get(n)
            if x is not None and not (isinstance(x, float) and not math.isfinite(x)):
                want.setdefault(v, {})[n] = (row["ts"], x)
    assert set(want) == {mask_vehicle(SECRET, p.vehicle_id) for p in packets}
    for v, signals in want.items():
        got = sink.staging.latest.get(v)
        assert got == signals, v
    sink.staging.close()


def test_the_comparison_finds_one_changed_cell(tmp_path, fleet):
    """The comparison has teeth: one cell of the lake changed is one row found each way."""
    schemas, packets = fleet
    sink = _sink(tmp_path, "bucket", 1000)
    topics = Topics()
    sink.ingest([Incoming(topics.schema(s.fingerprint), s.to_json(), 0, 1) for s in schemas.values()])
    sink.ingest([Incoming(topics.telemetry(p.vehicle_id), encode(p), i, 1) for i, p in enumerate(packets[:20])])
    sink.flush()
    sink.staging.close()
    f = sorted((tmp_path / "lake").rglob("*.parquet"))[0]
    t = pq.read_table(f, partitioning=None)
    name = next(n for n in t.column_names if pa.types.is_floating(t.schema.field(n).type) and t.column(n).null_count == 0)
    col = t.column(name).to_numpy().copy()
    col[3] += 1.0
    pq.write_table(t.set_column(t.column_names.index(name), name, pa.array(col)), f)
    total, extra, missing, rows = _differences(tmp_path, schemas, packets[:20], "bucket")
    assert (total, extra, missing) == (len(rows), 1, 1)
