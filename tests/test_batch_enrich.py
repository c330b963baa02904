"""Enrichment: operational tables from CSV, a DuckDB database and SQLite, validated, joined to trips,
events and scores through the sink's keyed mask; the raw VIN never reaches a view."""
from __future__ import annotations

import sqlite3

import duckdb
import pyarrow as pa
import pytest

from batch_layer.config import BatchConfig
from batch_layer.engine import DuckDBEngine
from batch_layer.enrich import load_operational
from batch_layer.errors import EnrichmentError
from batch_layer.lake_source import list_lake
from batch_layer.lambda_views import full_views
from batch_layer.serving import Serving
from helpers.batch_lake import SECRET, T0, CraftedLake, drive, idle, park, ramp, trace
from minute_packet.masking import mask_vehicle

VIN1, VIN2 = "WDB1234561A000001", "WDB1234561A000002"
TRIP = [idle(20), ramp(20, 0, 80), drive(400, 80), ramp(5, 80, 55), drive(100, 55), ramp(20, 55, 0), idle(30)]
TABLES = {
    "vehicles": "vin,plate,model,fleet\n{v1},M-AB 123,reference-car,north\n{v2},B-CD 456,reference-car-2027,south\n",
    "devices": "device_id,vin,installed_from\ndcm-01,{v1},2025-06-01T00:00:00Z\ndcm-02,{v2},2025-06-01\n",
    "drivers": "driver_id,name\nD1,Ada\nD2,Bo\n",
    "assignments": "driver_id,vin,valid_from,valid_to\nD1,{v1},2025-12-01T00:00:00Z,2026-01-01T12:00:00Z\n"
                   "D2,{v1},2026-01-01T12:00:00Z,\nD2,{v2},2025-12-01,2026-01-01T06:00:00+01:00\n",
}


def _csv(folder, **override):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**TABLES, **override}.items():
        (folder / f"{name}.csv").write_text(text.format(v1=VIN1, v2=VIN2))
    return f"csv:{folder}"


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("enrich")
    lk = CraftedLake(root)
    lk.add(VIN1, trace(T0 + 3600, [*TRIP, park(600), ramp(3, 0, 0), *TRIP]))  # 01:00, D1's
    lk.add(VIN1, trace(T0 + 13 * 3600, TRIP))  # 13:00, after the hand-over to D2
    lk.add(VIN2, trace(T0 + 3600, TRIP))  # 01:00 UTC is 02:00+01:00: before D2's valid_to (05:00 UTC)
    lk.add(VIN2, trace(T0 + 8 * 3600, TRIP))  # unassigned by then
    lk.close()
    return lk


def test_trips_events_and_scores_go_to_the_driver_of_the_time(tmp_path, lake):
    ops = load_operational(_csv(tmp_path / "ops"), SECRET)
    assert ops.assignments.column("vehicle").to_pylist()[0] in (mask_vehicle(SECRET, VIN1), mask_vehicle(SECRET, VIN2))
    views = full_views(DuckDBEngine(threads=1), list_lake(lake.lake), BatchConfig(), ops)
    serving = Serving(views, BatchConfig(), ops)
    trips = serving.trips().to_pylist()
    got = [(t["plate"], t["fleet"], t["driver"], t["driver_name"], (t["start_t"] - T0) // 3600) for t in trips]
    assert got == [("M-AB 123", "north", "D1", "Ada", 1), ("B-CD 456", "south", "D2", "Bo", 1),
                   ("M-AB 123", "north", "D1", "Ada", 1), ("B-CD 456", "south", None, None, 8),
                   ("M-AB 123", "north", "D2", "Bo", 13)]
    assert all(e["driver"] is not None for e in views["harsh_events"].to_pylist() if e["vehicle"] == mask_vehicle(SECRET, VIN1))
    scores = serving.scores("day")
    assert [(s["driver"], s["name"], s["trips"]) for s in scores] == [("D1", "Ada", 2), ("D2", "Bo", 2)]
    km = serving.km_per_vehicle_year().to_pylist()
    assert sorted((r["plate"], r["year"], r["trips"]) for r in km) == [("B-CD 456", 2026, 2), ("M-AB 123", 2026, 3)]
    # the raw VIN is in no view and no enriched table
    for table in [*views.values(), ops.vehicles, ops.devices, ops.assignments, serving.trips()]:
        for col in table.columns:
            if pa.types.is_string(col.type):
                assert not {VIN1, VIN2} & set(col.to_pylist())


def test_a_duckdb_database_and_sqlite_give_the_same_tables(tmp_path):
    ref = load_operational(_csv(tmp_path / "csv"), SECRET)
    dbfile, sqfile = tmp_path / "ops.duckdb", tmp_path / "ops.sqlite"
    con = duckdb.connect(str(dbfile))
    sq = sqlite3.connect(sqfile)
    for name in TABLES:
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv(?, header = true, all_varchar = true)",
                    [str(tmp_path / "csv" / f"{name}.csv")])
        rows = con.execute(f"SELECT * FROM {name}").fetchall()
        cols = [d[0] for d in con.description]
        sq.execute(f"CREATE TABLE {name} ({', '.join(cols)})")
        sq.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(cols))})", rows)
    con.close()
    sq.commit()
    sq.close()
    for source in (str(dbfile), f"sqlite:{sqfile}"):
        ops = load_operational(source, SECRET)
        assert ops.assignments.equals(ref.assignments) and ops.digest() == ref.digest()
        assert ops.vehicles.column("plate").to_pylist() == ref.vehicles.column("plate").to_pylist()


@pytest.mark.parametrize("table, text, message", [
    ("assignments", "driver_id,vin,valid_from,valid_to\nD1,{v1},2026-01-01,2026-01-03\nD2,{v1},2026-01-02,\n",
     "rows 1 and 2: overlapping assignments"),
    ("assignments", "driver_id,vin,valid_from,valid_to\nD1,NOPE,2026-01-01,\n", "row 1: vin is not in vehicles"),
    ("assignments", "driver_id,vin,valid_from,valid_to\nD9,{v1},2026-01-01,\n", "row 1: driver_id 'D9' is not in drivers"),
    ("assignments", "driver_id,vin,valid_from,valid_to\nD1,{v1},yesterday,\n", "row 1: valid_from 'yesterday' is not an ISO"),
    ("assignments", "driver_id,vin,valid_from,valid_to\nD1,{v1},2026-01-02,2026-01-01\n", "valid_to is not after"),
    ("vehicles", "vin,plate,model\n{v1},X,Y\n", "vehicles: missing column fleet"),
    ("vehicles", "vin,plate,model,fleet\n{v1},X,Y,Z\n{v1},X,Y,Z\n", "the same vin appears twice"),
    ("devices", "device_id,vin,installed_from\nd,OTHER,2026-01-01\n", "devices row 1: vin is not in vehicles"),
])
def test_bad_operational_data_is_named(tmp_path, table, text, message):
    with pytest.raises(EnrichmentError, match=message):
        load_operational(_csv(tmp_path, **{table: text}), SECRET)


def test_missing_sources_and_key(tmp_path):
    with pytest.raises(EnrichmentError, match="no such file"):
        load_operational(f"csv:{tmp_path}", SECRET)
    with pytest.raises(EnrichmentError, match="no such database file"):
        load_operational(str(tmp_path / "nope.duckdb"), SECRET)
    with pytest.raises(EnrichmentError, match="at least 8 bytes"):
        load_operational(_csv(tmp_path / "x"), b"short")
