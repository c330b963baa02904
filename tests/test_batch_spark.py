"""The same view SQL on Spark (PySpark local mode, sqlglot-translated) and on DuckDB gives identical
views on the same lake; days materialised by Spark are served next to DuckDB's speed side."""
from __future__ import annotations

import pyarrow as pa
import pytest

from batch_layer.config import BatchConfig
from batch_layer.engine import DuckDBEngine
from batch_layer.enrich import ASSIGNMENTS_SCHEMA, Operational
from batch_layer.lake_source import list_lake
from batch_layer.lambda_views import BatchStore, full_views
from batch_layer.spark_engine import SparkEngine, to_spark_sql
from batch_layer.views_sql import pipeline
from helpers.batch_compare import assert_views_equal
from helpers.batch_lake import SECRET, T0, CraftedLake, drive, gap, idle, park, ramp, trace
from minute_packet.masking import mask_vehicle

TRIP = [idle(20), ramp(20, 0, 80), ramp(3, 80, 130), drive(200, 135), ramp(3, 135, 60), drive(8, 60, 15.0),
        drive(200, 60), ramp(20, 60, 0), idle(30)]


@pytest.fixture(scope="module")
def spark():
    engine = SparkEngine(cores=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark")
    lk = CraftedLake(root)
    lk.add("CAR1", trace(T0 + 86400 - 300, [*TRIP, park(400), *TRIP, gap(5000), *TRIP]), files=3)
    lk.add("CAR2", trace(T0 + 3600, [*TRIP, idle(200), *TRIP]), model="motion-car")
    pk = lk.add("CAR3", trace(T0 + 2 * 86400 + 600, [*TRIP, park(100), *TRIP]))
    lk.store(pk[3:5], worker="w2")  # stored twice
    lk.close()
    return lk


def _ops() -> Operational:
    a = pa.table({"vehicle": [mask_vehicle(SECRET, "CAR1"), mask_vehicle(SECRET, "CAR3")], "driver": ["D1", "D2"],
                  "valid_from": [T0 - 86400, T0], "valid_to": [None, T0 + 10 * 86400]}, schema=ASSIGNMENTS_SCHEMA)
    return Operational(pa.table({"vehicle": a.column("vehicle")}), pa.table({"vehicle": a.column("vehicle")}),
                       pa.table({"driver": ["D1", "D2"]}), a)


def test_every_stage_translates_to_spark_sql():
    for name, sql in pipeline(BatchConfig(), ["vehicle", "ts", "model", "VehicleSpeed", "IgnitionState"]):
        out = to_spark_sql(sql)
        assert "epoch(" not in out.lower() and "arg_min" not in out.lower(), name


def test_spark_and_duckdb_give_identical_views(spark, lake):
    listing, cfg, ops = list_lake(lake.lake), BatchConfig(), _ops()
    duck = full_views(DuckDBEngine(threads=1), listing, cfg, ops)
    on_spark = full_views(spark, listing, cfg, ops)
    assert duck["trips"].num_rows == 5 and duck["harsh_events"].num_rows >= 15 and duck["driver_day"].num_rows >= 2
    assert_views_equal(duck, on_spark)


def test_days_materialised_by_spark_merge_with_duckdb(spark, lake, tmp_path):
    listing, cfg, ops = list_lake(lake.lake), BatchConfig(), _ops()
    store = BatchStore(tmp_path / "views")
    report = store.refresh(spark, listing, cfg, T0 // 86400 + 2, ops)
    assert len(report.recomputed_days) == 2
    duck = DuckDBEngine(threads=1)
    merged, sources = store.merged(duck, listing, cfg, ops)
    assert len(sources["batch"]) == 2 and sources["speed"]
    assert_views_equal(merged, full_views(duck, listing, cfg, ops))
