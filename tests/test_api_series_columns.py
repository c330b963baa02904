"""Series answered from the vehicle's columns kept in memory equal the SQL query's answers, on real
lakes written by a real sink (both layouts, several files, a packet stored twice, signals one model
lacks), and the column cache stays within its byte budget."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fleet_api.series import LakeReader, choose_step
from fleet_api.series_columns import ColumnCache, bucketise
from minute_packet.masking import mask_vehicle

from helpers.batch_lake import SECRET, T0, CraftedLake, drive, gap, idle, park, ramp, trace

SIGNALS = ["VehicleSpeed", "IgnitionState", "FuelVolume", "Odometer"]


@pytest.fixture(scope="module", params=["bucket", "vehicle"])
def lake(request, tmp_path_factory):
    world = CraftedLake(tmp_path_factory.mktemp(f"series-{request.param}"), layout=request.param)
    trip = [idle(20), ramp(30, 0, 70), drive(400, 70, 0.5), ramp(20, 70, 0), park(60)]
    pk = world.add("CAR-A", trace(T0 + 30, [*trip, gap(700), *trip, *trip]), files=3)
    world.store(pk[2:4], worker="w2")  # two packets stored twice: their rows weigh twice
    world.add("CAR-B", trace(T0 + 500, [*trip, *trip]), model="motion-car")  # no ignition, no fuel signals
    world.close()
    return world


def _sql(reader: LakeReader, vehicle: str, signals: list[str], t0: int, t1: int, step: int | None) -> dict:
    width = choose_step(t0, t1, step, reader.max_points)
    out = {"t": [], "signals": {s: {"min": [], "max": [], "mean": [], "count": []} for s in signals}}
    reader._series_sql(out, reader.files(vehicle, t0, t1), vehicle, signals, t0, t1, width)
    return out


def _assert_same(got: dict, want: dict) -> None:
    assert got["t"] == want["t"]
    for s, w in want["signals"].items():
        g = got["signals"][s]
        assert g["count"] == w["count"], s
        assert g["min"] == w["min"] and g["max"] == w["max"], s
        for a, b in zip(g["mean"], w["mean"], strict=True):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9, abs_tol=2e-6), s


@pytest.mark.parametrize("vin", ["CAR-A", "CAR-B"])
def test_columns_in_memory_answer_like_the_sql_query(lake, vin):
    reader = LakeReader(lake.lake)
    vid = mask_vehicle(SECRET, vin)
    asked = 0
    for t0, t1, step in [(T0, T0 + 86400, None), (T0 + 37, T0 + 3001, 1), (T0 + 100, T0 + 2900, 7),
                         (T0 - 600, T0 + 7200, 60), (T0 + 1234, T0 + 1300, 600), (T0 + 50_000, T0 + 60_000, None)]:
        # CAR-B has no ignition signal: in the bucket layout its rows hold it as null beside CAR-A's
        signals = SIGNALS if vin == "CAR-A" or lake.layout == "bucket" else ["VehicleSpeed", "Odometer"]
        got = reader.series(vid, signals, t0, t1, step)
        asked += 1
        _assert_same(got, _sql(reader, vid, signals, t0, t1, step))
    assert sum(reader.series(vid, ["VehicleSpeed"], T0, T0 + 86400)["signals"]["VehicleSpeed"]["count"]) > 1000
    cache = reader.column_cache
    assert cache.hits > 0 and cache.misses > 0  # later requests used what the first ones read


def test_a_second_range_over_the_same_files_reads_no_file(lake):
    reader = LakeReader(lake.lake)
    vid = mask_vehicle(SECRET, "CAR-A")
    reader.series(vid, ["VehicleSpeed"], T0, T0 + 86400)
    misses = reader.column_cache.misses
    reader._read_columns = None  # any read of a file would fail now: its columns are in memory
    again = reader.series(vid, ["VehicleSpeed"], T0 + 60, T0 + 7000, 30)
    assert reader.column_cache.misses == misses and sum(again["signals"]["VehicleSpeed"]["count"]) > 0


def test_the_column_cache_keeps_to_its_byte_budget_and_counts_evictions(lake):
    small = LakeReader(lake.lake, column_bytes=40_000)
    full = LakeReader(lake.lake)
    for vin in ("CAR-A", "CAR-B"):
        vid = mask_vehicle(SECRET, vin)
        for t0 in (T0, T0 + 500, T0 + 1000):
            _assert_same(small.series(vid, ["VehicleSpeed", "Odometer"], t0, t0 + 86400),
                         full.series(vid, ["VehicleSpeed", "Odometer"], t0, t0 + 86400))
            assert small.column_cache.bytes <= 40_000
    assert small.column_cache.evicted > 0 and full.column_cache.evicted == 0


def test_bucketise_edges():
    t = np.array([10, 11, 11, 12, 20, 29, 30], dtype=np.int64)
    v = {"x": np.array([1.0, np.nan, 3.0, 5.0, np.nan, 2.0, 9.0])}
    out = bucketise(t, v, 10, 30, 10)  # t1 is exclusive: 30 is left out
    assert out["t"] == [10, 20]
    assert out["signals"]["x"] == {"min": [1.0, 2.0], "max": [5.0, 2.0], "mean": [3.0, 2.0], "count": [3, 1]}
    only_null = bucketise(t[4:5], {"x": v["x"][4:5]}, 20, 30, 5)
    assert only_null["t"] == [20] and only_null["signals"]["x"] == {"min": [None], "max": [None], "mean": [None],
                                                                     "count": [0]}
    empty = bucketise(t, v, 100, 200, 10)
    assert empty["t"] == [] and empty["signals"]["x"]["count"] == []


def test_column_cache_lru_order():
    c = ColumnCache(max_bytes=3 * 80)
    for i in range(3):
        c.put(("f", (0, 0), "v", str(i)), np.zeros(10))
    assert c.get(("f", (0, 0), "v", "0")) is not None  # now the most recent
    c.put(("f", (0, 0), "v", "3"), np.zeros(10))
    assert c.get(("f", (0, 0), "v", "1")) is None and c.get(("f", (0, 0), "v", "0")) is not None
    assert c.evicted == 1 and c.bytes == 240
    c.put(("f", (0, 0), "v", "big"), np.zeros(100))  # larger than the budget: not kept, counted
    assert c.evicted == 2 and c.get(("f", (0, 0), "v", "big")) is None
