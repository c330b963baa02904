"""Trips and harsh events from crafted lakes written by a real sink: the segmentation boundaries
(minimal stop, data gap, minimal duration and distance, ignition vs motion), packet/file/midnight
boundaries, duplicates, and the per-trip figures against the crafted ground truth."""
from __future__ import annotations

import dataclasses

import duckdb
import pytest

from batch_layer.config import BatchConfig, TripParams
from batch_layer.engine import DuckDBEngine
from batch_layer.errors import LakeError
from batch_layer.lake_source import list_lake
from batch_layer.lambda_views import full_views
from helpers.batch_lake import SECRET, T0, CraftedLake, drive, gap, idle, park, ramp, trace
from minute_packet.masking import mask_vehicle


def _views(lake: CraftedLake, config: BatchConfig | None = None):
    lake.close()
    return full_views(DuckDBEngine(threads=1), list_lake(lake.lake), config or BatchConfig())


def _trips(lake, config=None):
    return _views(lake, config)["trips"].to_pylist()


def _with(**trips) -> BatchConfig:
    return BatchConfig(trips=dataclasses.replace(TripParams(), **trips))


TRIP = [idle(20), ramp(20, 0, 80), drive(400, 80), ramp(20, 80, 0), idle(30)]  # 490 s, ~9.8 km


def test_one_trip_across_packets_and_files_with_its_figures(tmp_path):
    lake = CraftedLake(tmp_path)
    pieces = [park(100), idle(20), ramp(20, 0, 80), drive(300, 80), ramp(10, 80, 0), idle(60),
              ramp(10, 0, 50), drive(200, 50), ramp(10, 50, 0), idle(10), park(600)]
    tr = trace(T0 + 17, pieces)  # starts mid-packet: trip rows span 12 packets
    pk = lake.add("CAR1", tr, files=4)  # ... written in 4 sink flushes: 4 files in the partition
    assert len(pk) == 23 and len(list((tmp_path / "lake").rglob("*.parquet"))) == 4
    (trip,) = _trips(lake)
    start, end = T0 + 17 + 100, T0 + 17 + 100 + 20 + 20 + 300 + 10 + 60 + 10 + 200 + 10 + 10 - 1
    assert (trip["start_t"], trip["end_t"], trip["duration_s"]) == (start, end, end - start)
    assert trip["vehicle"] == mask_vehicle(SECRET, "CAR1") and trip["mode"] == "ignition"
    assert trip["gnss_km"] == pytest.approx(tr.path_m / 1000, rel=1e-3)
    assert trip["odo_km"] == pytest.approx(tr.path_m / 1000, abs=0.11)  # the DBC's 0.1 km resolution
    assert trip["idle_s"] == 20 + 1 + 60 + 1 + 10  # standing with the engine on (ramps end on 0 km/h)
    assert trip["max_speed_kmh"] == pytest.approx(80.0)
    in_trip = (tr.t >= start) & (tr.t <= end)
    assert trip["avg_speed_kmh"] == pytest.approx(tr.values["VehicleSpeed"][in_trip].mean(), abs=0.01)
    assert trip["fuel_l"] == pytest.approx(tr.values["FuelConsumptionRate"][in_trip].sum() / 3600, abs=0.01)
    assert (trip["start_lat"], trip["start_lon"]) == pytest.approx((tr.at(start, "Latitude"), tr.at(start, "Longitude")))
    assert (trip["end_lat"], trip["end_lon"]) == pytest.approx((tr.at(end, "Latitude"), tr.at(end, "Longitude")))
    assert trip["speeding_s"] == 0 and trip["speeding_share"] == 0.0


@pytest.mark.parametrize("off, trips", [(250, 1), (299, 1), (300, 2), (600, 2)])
def test_a_stop_ends_the_trip_only_from_the_minimal_stop_duration(tmp_path, off, trips):
    lake = CraftedLake(tmp_path)
    lake.add("CAR1", trace(T0, [*TRIP, park(off), *TRIP]))  # ignition off for "off" seconds
    assert len(_trips(lake)) == trips


def test_a_data_gap_ends_a_trip_even_with_ignition_on(tmp_path):
    lake = CraftedLake(tmp_path)
    lake.add("CAR1", trace(T0, [*TRIP[:-1], drive(100, 80), gap(200), drive(400, 80), ramp(20, 80, 0)]))
    assert len(_trips(lake, _with(max_gap_s=180))) == 2
    lake2 = CraftedLake(tmp_path / "b")
    lake2.add("CAR1", trace(T0, [*TRIP[:-1], drive(100, 80), gap(200), drive(400, 80), ramp(20, 80, 0)]))
    assert len(_trips(lake2)) == 1  # Traccar's default gap (3,600 s) keeps it one trip


def test_minimal_duration_and_distance(tmp_path):
    lake = CraftedLake(tmp_path)
    short_time = [ramp(10, 0, 100), drive(200, 100), ramp(10, 100, 0)]  # 220 s, 6 km
    short_way = [idle(200), ramp(10, 0, 10), drive(70, 10), ramp(5, 10, 0), idle(100)]  # 385 s, ~230 m
    lake.add("CAR1", trace(T0, [*short_time, park(400), *short_way, park(400), *TRIP]))
    trips = _trips(lake)
    assert len(trips) == 1 and trips[0]["duration_s"] == 489
    lake3 = CraftedLake(tmp_path / "c")
    lake3.add("CAR1", trace(T0, [*short_time, park(400), *short_way, park(400), *TRIP]))
    assert len(_trips(lake3, _with(min_trip_duration_s=200, min_trip_distance_m=100))) == 3


def test_motion_driven_without_an_ignition_signal(tmp_path):
    lake = CraftedLake(tmp_path)
    # parked with the engine idling is invisible without ignition: the trip is the motion only
    lake.add("CAR1", trace(T0, [idle(100), *TRIP, idle(400), *TRIP]), model="motion-car")
    lake.add("CAR2", trace(T0, [idle(100), *TRIP, idle(400), *TRIP]))
    trips = _trips(lake)
    motion = [t for t in trips if t["mode"] == "motion"]
    ignition = [t for t in trips if t["mode"] == "ignition"]
    assert len(motion) == 2 and len(ignition) == 1  # idling for 400 s is part of the ignition trip
    assert motion[0]["start_t"] == T0 + 100 + 20  # the first second at >= 2 km/h
    assert motion[0]["idle_s"] == 0 and ignition[0]["idle_s"] > 400


def test_a_trip_across_midnight_belongs_to_its_start_day(tmp_path):
    lake = CraftedLake(tmp_path)
    lake.add("CAR1", trace(T0 + 86400 - 200, [*TRIP, park(400), *TRIP]), files=2)
    views = _views(lake)
    trips = views["trips"].to_pylist()
    assert [t["day"] for t in trips] == [T0 // 86400, T0 // 86400 + 1]
    assert trips[0]["end_t"] > T0 + 86400  # crosses midnight, one trip
    assert sorted(len(list(p.rglob("*.parquet"))) for p in (tmp_path / "lake").glob("model=*/date=*")) == [1, 2]


def test_packets_stored_twice_count_once(tmp_path):
    lake = CraftedLake(tmp_path)
    pk = lake.add("CAR1", trace(T0, TRIP))
    lake.store(pk[2:6], worker="w2")  # a publisher retry another sink worker stored again
    lake.close()
    rows = duckdb.connect().execute(f"SELECT count(*), count(DISTINCT ts) FROM read_parquet('{lake.lake}/**/*.parquet')")
    assert rows.fetchall() == [(len(pk) * 60 + 4 * 60 - (60 - 490 % 60) , len(pk) * 60 - (60 - 490 % 60))]
    once = _trips(lake)
    ref = CraftedLake(tmp_path / "ref")
    ref.add("CAR1", trace(T0, TRIP))
    assert _trips(ref) == once and len(once) == 1


def test_harsh_events_with_kind_severity_position_and_trip(tmp_path):
    lake = CraftedLake(tmp_path)
    tr = trace(T0, [idle(10), ramp(10, 0, 60), ramp(6, 60, 140), drive(200, 140),  # 13.3 km/h/s = 3.7 m/s2
                    ramp(3, 140, 72), drive(200, 72),  # -22.7 km/h/s = -6.3 m/s2 (moderate)
                    drive(6, 72, 14.0),  # 20 m/s x 0.244 rad/s = 4.9 m/s2 sharp turn (moderate)
                    drive(200, 72), ramp(10, 72, 15), drive(30, 15, 30.0),  # a tight turn at 15 km/h: gated out
                    ramp(5, 15, 0), idle(5)])
    lake.add("CAR1", tr)
    views = _views(lake)
    (trip,) = views["trips"].to_pylist()
    events = views["harsh_events"].to_pylist()
    kinds = [(e["kind"], e["severity"], e["duration_s"]) for e in events]
    assert kinds == [("rapid_accel", "moderate", 6), ("harsh_brake", "moderate", 3), ("sharp_turn", "moderate", 6)]
    assert all(e["trip_id"] == trip["trip_id"] for e in events)
    brake = events[1]
    assert brake["t"] == T0 + 226 and brake["peak_mps2"] == pytest.approx(68 / 3 / 3.6, rel=1e-3)
    assert (brake["lat"], brake["lon"]) == pytest.approx((tr.at(brake["t"], "Latitude"), tr.at(brake["t"], "Longitude")))
    assert trip["n_rapid_accel_moderate"] == trip["n_harsh_brake_moderate"] == trip["n_sharp_turn_moderate"] == 1
    assert trip["speeding_s"] == 201 and trip["speeding_share"] == pytest.approx(201 / trip["moving_s"])


def test_a_vehicle_without_trips_and_an_empty_lake(tmp_path):
    lake = CraftedLake(tmp_path)
    lake.add("CAR1", trace(T0, [park(600)]))
    views = _views(lake)
    assert all(t.num_rows == 0 for t in views.values())
    (tmp_path / "nothing").mkdir()
    empty = full_views(DuckDBEngine(threads=1), list_lake(str(tmp_path / "nothing")), BatchConfig())
    assert all(t.num_rows == 0 for t in empty.values())
    with pytest.raises(LakeError, match="cannot list"):
        list_lake(str(tmp_path / "missing"))
