"""Lambda views: refresh rewrites only the affected day partitions, the merge of batch and speed
views equals the batch computation over all data at any watermark, with late and duplicate packets
(a hypothesis property over arrival orders, duplicates and watermarks)."""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_layer.config import BatchConfig, TripParams
from batch_layer.engine import DuckDBEngine
from batch_layer.lake_source import date_of, list_lake
from batch_layer.lambda_views import BatchStore, full_views
from helpers.batch_compare import assert_views_equal
from helpers.batch_lake import T0, CraftedLake, drive, idle, park, ramp, trace

DAY0 = T0 // 86400
TRIP = [idle(20), ramp(20, 0, 80), drive(300, 80), ramp(3, 80, 50), drive(100, 50), ramp(20, 50, 0), idle(30)]


def _mtimes(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*.parquet")}


def test_refresh_rewrites_only_the_days_a_late_packet_touches(tmp_path):
    lake = CraftedLake(tmp_path)
    for d in range(6):
        lake.add("CAR1", trace(T0 + d * 86400 + 3600, TRIP))
        lake.add("CAR2", trace(T0 + d * 86400 + 7200, [*TRIP, park(400), *TRIP]))
    late = lake.packets("CAR3", trace(T0 + 2 * 86400 + 5000, TRIP))
    cfg, engine, store = BatchConfig(), DuckDBEngine(threads=1), BatchStore(tmp_path / "views")
    first = store.refresh(engine, list_lake(lake.lake), cfg, DAY0 + 5)
    assert first.recomputed_days == [date_of(DAY0 + d) for d in range(5)] and first.rows_written["trips"] == 15
    before = _mtimes(tmp_path / "views")
    again = store.refresh(engine, list_lake(lake.lake), cfg, DAY0 + 5)
    assert again.recomputed_days == [] and again.fresh_days == 5 and _mtimes(tmp_path / "views") == before
    lake.store(late)  # a packet of day 2 arriving after the refresh
    listing = list_lake(lake.lake)
    merged, sources = store.merged(engine, listing, cfg)
    assert sources["speed"] == [date_of(DAY0 + d) for d in (1, 2, 3, 5)]  # stale days and the day after the watermark
    assert_views_equal(merged, full_views(engine, listing, cfg))
    assert merged["trips"].num_rows == 19
    report = store.refresh(engine, listing, cfg, DAY0 + 5)
    assert report.recomputed_days == [date_of(DAY0 + d) for d in (1, 2, 3)]
    after = _mtimes(tmp_path / "views")
    untouched = {p: m for p, m in before.items() if f"date={date_of(DAY0)}" in str(p) or f"date={date_of(DAY0 + 4)}" in str(p)}
    assert untouched and all(after[p] == m for p, m in untouched.items())
    merged, sources = store.merged(engine, listing, cfg)
    assert sources["speed"] == [date_of(DAY0 + 5)]
    assert_views_equal(merged, full_views(engine, listing, cfg))
    # the watermark moves on: only the newly covered day is computed
    assert store.refresh(engine, listing, cfg, DAY0 + 6).recomputed_days == [date_of(DAY0 + 5)]
    # other parameters: everything is recomputed
    other = BatchConfig(trips=dataclasses.replace(TripParams(), min_stop_duration_s=100))
    full = store.refresh(engine, listing, other, DAY0 + 6)
    assert full.full and len(full.recomputed_days) == 6
    lake.close()


# -- the property -----------------------------------------------------------------------------

MODEL = "prop-car"
SEGMENT = st.tuples(st.sampled_from(["drive", "brake", "idle", "park", "gap"]), st.integers(1, 25))


def _rows(vehicle: str, start_min: int, segments: list[tuple[str, int]]) -> list[dict]:
    """Minute packets (60 rows each) of one vehicle: (minute, rows)."""
    packets, minute, lat, odo = [], start_min, 48.0, 1000.0
    for kind, minutes in segments:
        for _ in range(minutes):
            if kind != "gap":
                t = np.arange(minute * 60, minute * 60 + 60)
                if kind == "drive":
                    speed = np.full(60, 60.0)
                elif kind == "brake":
                    speed = np.concatenate([np.linspace(90, 40, 6), np.full(54, 40.0)])
                else:
                    speed = np.zeros(60)
                step = speed / 3.6
                lat_col = lat + np.cumsum(step) / 111_195.0
                odo_col = odo + np.cumsum(step) / 1000.0
                lat, odo = float(lat_col[-1]), float(odo_col[-1])
                on = 0.0 if kind == "park" else 2.0
                packets.append((minute, {"ts": t, "VehicleSpeed": speed, "Latitude": lat_col, "Longitude": np.full(60, 11.0),
                                         "GnssHeading": np.zeros(60), "Odometer": np.round(odo_col, 1),
                                         "IgnitionState": np.full(60, on), "EngineState": np.full(60, on)}))
            minute += 1
    return packets


def _write(root, batch: int, vehicle: str, seq_of: dict, packets) -> None:
    by_day: dict[int, list] = {}
    for minute, cols in packets:
        by_day.setdefault(minute * 60 // 86400, []).append((minute, cols))
    for day, items in by_day.items():
        n = 60 * len(items)
        table = pa.table({
            "ts": pa.array(np.concatenate([c["ts"] for _, c in items]) * 1_000_000, pa.timestamp("us", tz="UTC")),
            "boot_id": pa.array(["b00t"] * n), "seq": pa.array(np.repeat([seq_of[m] for m, _ in items], 60), pa.int64()),
            **{k: pa.array(np.concatenate([c[k] for _, c in items])) for k in items[0][1] if k != "ts"},
        })
        folder = root / f"model={MODEL}" / f"date={date_of(day)}" / f"vehicle={vehicle}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"part-w1-{batch:04d}.parquet")


NEAR_MIDNIGHT = st.builds(lambda day, off: day * 1440 + off, st.integers(1, 2), st.integers(-90, 30))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vehicles=st.lists(st.tuples(st.one_of(NEAR_MIDNIGHT, st.integers(0, 3 * 1440)),
                                   st.lists(SEGMENT, min_size=1, max_size=12)), min_size=1, max_size=3),
       arrival=st.data(), watermark=st.one_of(st.integers(1, 2), st.integers(0, 5)), refresh_after=st.integers(0, 3),
       chunk=st.sampled_from([1, 7]))
def test_merged_equals_the_full_computation_at_any_watermark(tmp_path_factory, vehicles, arrival, watermark,
                                                            refresh_after, chunk):
    root = tmp_path_factory.mktemp("prop")
    lake, store = root / "lake", BatchStore(root / "views")
    cfg = BatchConfig(trips=dataclasses.replace(TripParams(), min_trip_duration_s=120))
    engine = DuckDBEngine(threads=1)
    base = T0 // 60
    sends = []  # (batch, vehicle, packet)
    for v, (start, segments) in enumerate(vehicles):
        packets = _rows(f"v{v:015d}", base + start, segments)
        seq_of = {m: i for i, (m, _) in enumerate(packets)}
        for p in packets:
            batch = arrival.draw(st.integers(0, 3), label="batch")  # later batches: late packets
            sends.append((batch, v, seq_of, p))
            if arrival.draw(st.booleans(), label="duplicate") and arrival.draw(st.booleans()):
                sends.append((arrival.draw(st.integers(batch, 3), label="dup batch") + 4, v, seq_of, p))
    lake.mkdir()
    for batch in range(8):
        for v in range(len(vehicles)):
            mine = [p for b, vv, _, p in sends if b == batch and vv == v]
            if mine:
                seq_of = next(s for b, vv, s, _ in sends if vv == v)
                _write(lake, batch, f"v{v:015d}", seq_of, mine)
        if batch == refresh_after:
            store.refresh(engine, list_lake(str(lake)), cfg, DAY0 + watermark, chunk_days=chunk)
    listing = list_lake(str(lake))
    merged, sources = store.merged(engine, listing, cfg)
    assert_views_equal(merged, full_views(engine, listing, cfg))
    # ... which equals the computation over a lake that got every packet once, in order
    clean = root / "clean"
    clean.mkdir()
    for v in range(len(vehicles)):
        mine = sorted({p[0]: (s, p) for b, vv, s, p in sends if vv == v}.values(), key=lambda x: x[1][0])
        if mine:
            _write(clean, 0, f"v{v:015d}", mine[0][0], [p for _, p in mine])
    assert_views_equal(merged, full_views(engine, list_lake(str(clean)), cfg))
    # and after a refresh at the same watermark, everything before it comes from the batch side
    store.refresh(engine, listing, cfg, DAY0 + watermark, chunk_days=chunk)
    merged, sources = store.merged(engine, listing, cfg)
    assert all(dt.date.fromisoformat(d) >= dt.date.fromisoformat(date_of(DAY0 + watermark)) for d in sources["speed"])
    assert_views_equal(merged, full_views(engine, listing, cfg))
