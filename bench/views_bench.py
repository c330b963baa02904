"""``dcm bench views``: batch views on a lake the fleet simulator wrote, DuckDB and Spark side by side.

The fleet (``--vehicles`` x ``--duration`` s, centred on midnight so the lake has two days) is
generated with the simulator's physics and stored by a real sink (bucket layout, no MQTT). While
generating, the bench records the simulator's own trips (its driving phases from their first
second in motion, and the distance integrated from its speed): the ground truth beside the
manifest's scenario events. Then:

* refresh of every view (trips, harsh events, vehicle-day, driver-day) with DuckDB: vehicle-seconds
  per second per engine thread;
* ``merged_equals_full``: watermark at the second day (day 1 from the batch Parquet, day 2 from the
  speed side), merged == the computation over all data;
* ``spark_equals_duckdb`` (and Spark's throughput), unless ``--no-spark``;
* accuracy: simulated trips found, total distance error, scenario harsh events found as a harsh
  event of that kind (moderate or severe) within 3 s in a trip of that vehicle, mean trip score per
  driver profile (calm must beat aggressive and teen).

The trip parameters follow the simulator (its parking lasts at least 60 s, so ``min_stop_duration_s``
is 30 instead of Traccar's 300; trips of 60 s and 100 m); everything else is the default.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_SECRET = b"bench-views-secret"
KIND = {"harsh_braking": "harsh_brake", "rapid_acceleration": "rapid_accel", "sharp_turn": "sharp_turn"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vehicles", type=int, default=200)
    p.add_argument("--duration", type=int, default=6 * 3600, help="simulated seconds (around midnight)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="DuckDB threads / Spark cores")
    p.add_argument("--no-spark", action="store_true", help="skip the Spark run")
    p.add_argument("--workdir", type=Path, help="keep the lake and views here (default: a temporary folder)")
    p.add_argument("--lake", help="time an existing lake instead (no generation, no accuracy figures)")


def _generate(spec, root: Path) -> tuple[list, dict[int, list[tuple[int, int, float]]], dict[str, Any]]:
    from cloud_sink.config import SinkConfig
    from cloud_sink.intake import Incoming
    from cloud_sink.service import Sink
    from dcm.broker import BrokerUrl
    from minute_packet import Topics, encode
    from simulator.fleet_generator import FleetGenerator
    from simulator.fleet_physics import DRIVING
    from simulator.fleet_signals import fleet_signals
    from simulator.manifest import ManifestRecorder

    gen = FleetGenerator(spec)
    topics = Topics()
    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=str(root / "lake"), state_path=root / "sink.sqlite",
                           quarantine_dir=root / "quarantine", vehicle_secret=BENCH_SECRET, client_id="bench",
                           roll_interval_s=10**6, layout="bucket", buckets=4, max_batch_packets=50_000))
    sink.ingest([Incoming(topics.schema(s.fingerprint), s.to_json(), 0, 1) for s in gen.schemas.values()])
    trips: dict[int, list] = {p.index: [] for p in gen.plans}
    open_trip: dict[int, list] = {}
    last = spec.end_time - 1
    for window in range(gen.windows):
        t0 = gen.window_start(window)
        for group in gen.groups:
            ph = group.physics
            for row in range(spec.interval_s):
                now = t0 + row
                v_before = ph.v.copy()
                ph.step(now)
                driving = ph.phase == DRIVING
                dist = (v_before + ph.v) / 2.0
                for local, plan in enumerate(group.plans):
                    cur = open_trip.get(plan.index)
                    if driving[local] and (cur is not None or ph.v[local] > 0):
                        # a trip is seen from its first second in motion (a driving phase may start
                        # standing): a trip cut by the end of the data is judged on what was driven
                        if cur is None:
                            open_trip[plan.index] = [now, now, float(dist[local])]
                        else:
                            cur[1] = now
                            cur[2] += float(dist[local])
                    elif cur is not None:
                        trips[plan.index].append(tuple(open_trip.pop(plan.index)))
                values = fleet_signals(ph)
                group.builder.set_row(row, values)
                ph.scenarios.observe(now, values, now == last)
            packets = group.builder.packets(t0, [window] * len(group.plans))
            sink.ingest([Incoming(topics.telemetry(p.vehicle_id), encode(p), i, 1) for i, p in enumerate(packets)])
        if window % 30 == 29:
            sink.flush()
    sink.flush()
    sink.staging.close()
    for index, cur in open_trip.items():
        trips[index].append(tuple(cur))
    recorder = ManifestRecorder(spec, gen.plans, {m: s.fingerprint for m, s in gen.schemas.items()})
    recorder.windows, recorder.complete = gen.windows, True
    return gen.plans, trips, recorder.to_json(gen.events())


def _equal(a: dict, b: dict) -> bool:
    import math

    for view in a:
        ta, tb = a[view], b[view]
        if ta.column_names != tb.column_names or ta.num_rows != tb.num_rows:
            return False
        for name in ta.column_names:
            for x, y in zip(ta.column(name).to_pylist(), tb.column(name).to_pylist()):
                if isinstance(x, float) and isinstance(y, float):
                    if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                        return False
                elif x != y:
                    return False
    return True


def _accuracy(plans, sim_trips, manifest, views, min_trip_s: int) -> dict[str, Any]:
    from minute_packet.masking import mask_vehicle

    trips = views["trips"].to_pylist()
    events = views["harsh_events"].to_pylist()
    by_vehicle: dict[str, list] = {}
    for t in trips:
        by_vehicle.setdefault(t["vehicle"], []).append(t)
    found = total = 0
    sim_km = found_km = 0.0
    per_vehicle_err = []
    for plan in plans:
        masked = mask_vehicle(BENCH_SECRET, plan.vehicle_id)
        mine = by_vehicle.get(masked, [])
        sims = [s for s in sim_trips[plan.index] if s[1] - s[0] >= min_trip_s and s[2] >= 100.0]
        for start, end, _ in sims:
            total += 1
            if any(t["start_t"] <= end and t["end_t"] >= start for t in mine):
                found += 1
        km_sim = sum(s[2] for s in sim_trips[plan.index]) / 1000.0
        km_found = sum(t["gnss_km"] or 0.0 for t in mine)
        sim_km += km_sim
        found_km += km_found
        if km_sim > 1.0:
            per_vehicle_err.append(abs(km_found - km_sim) / km_sim)
    expected_events = hit = 0
    for row in manifest["vehicles"]:
        ev = row.get("event")
        if not ev or ev["kind"] not in KIND:
            continue
        expected_events += 1
        masked = mask_vehicle(BENCH_SECRET, row["vehicle_id"])
        trip_ids = {t["trip_id"] for t in by_vehicle.get(masked, []) if t["start_t"] <= ev["t"] <= t["end_t"]}
        if any(e["vehicle"] == masked and e["kind"] == KIND[ev["kind"]] and e["severity"] != "light"
               and abs(e["t"] - ev["t"]) <= 3 and e["trip_id"] in trip_ids for e in events):
            hit += 1
    profile = {p.vehicle_id: p.profile for p in plans}
    masked_profile = {mask_vehicle(BENCH_SECRET, v): pr for v, pr in profile.items()}
    scores: dict[str, list[float]] = {}
    for t in trips:
        scores.setdefault(masked_profile[t["vehicle"]], []).append(t["score"])
    mean = {k: round(float(np.mean(v)), 1) for k, v in sorted(scores.items())}
    calm = mean.get("calm")
    return {
        "simulated_trips": total, "trips_found": found, "trips_found_share": round(found / total, 4) if total else None,
        "trips_reported": len(trips),
        "distance_km_simulated": round(sim_km, 2), "distance_km_found_gnss": round(found_km, 2),
        "distance_error_total": round(abs(found_km - sim_km) / sim_km, 5) if sim_km else None,
        "distance_error_max_vehicle": round(max(per_vehicle_err), 5) if per_vehicle_err else None,
        "scenario_harsh_events": expected_events, "scenario_harsh_events_found": hit,
        "mean_trip_score_by_profile": mean,
        "calm_scores_above_aggressive_and_teen": bool(calm is not None and all(
            calm > mean[p] for p in ("aggressive", "teen") if p in mean)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from batch_layer.config import BatchConfig, TripParams
    from batch_layer.engine import DuckDBEngine
    from batch_layer.lake_source import list_lake
    from batch_layer.lambda_views import BatchStore, full_views
    from simulator.fleet_spec import FleetSpec

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dcm-bench-views-"))
    workdir.mkdir(parents=True, exist_ok=True)
    midnight = 1_767_225_600 + 86400
    start = midnight - (args.duration // 2) // 60 * 60
    spec = FleetSpec(vehicles=args.vehicles, duration_s=args.duration, start_time=start, seed=args.seed)
    cfg = BatchConfig(trips=dataclasses.replace(TripParams(), min_stop_duration_s=30, min_trip_duration_s=60,
                                                min_trip_distance_m=100.0))
    try:
        shutil.rmtree(workdir / "views", ignore_errors=True)
        shutil.rmtree(workdir / "views-mid", ignore_errors=True)
        gen_s = 0.0
        lake = args.lake or str(workdir / "lake")
        if not args.lake:
            shutil.rmtree(workdir / "lake", ignore_errors=True)
            for f in workdir.glob("sink.sqlite*"):
                f.unlink()
            t = time.monotonic()
            plans, sim_trips, manifest = _generate(spec, workdir)
            gen_s = time.monotonic() - t
        listing = list_lake(lake)
        import duckdb

        rows = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{lake}/**/*.parquet')").fetchone()[0]
        days = listing.days
        engine = DuckDBEngine(threads=args.threads)
        store = BatchStore(workdir / "views")
        t, cpu = time.monotonic(), time.process_time()
        store.refresh(engine, listing, cfg, max(days) + 1, chunk_days=7)
        duck_s, duck_cpu = time.monotonic() - t, time.process_time() - cpu
        full = full_views(engine, listing, cfg)
        store_mid = BatchStore(workdir / "views-mid")
        store_mid.refresh(engine, listing, cfg, max(days))
        merged, _ = store_mid.merged(engine, listing, cfg)
        result: dict[str, Any] = {
            "vehicles": args.vehicles, "simulated_s": args.duration, "lake_days": len(days), "lake_files": len(listing.files),
            "vehicle_seconds": int(rows), "generate_and_store_s": round(gen_s, 1), "threads": args.threads,
            "duckdb_refresh_s": round(duck_s, 2), "duckdb_cpu_s": round(duck_cpu, 2),
            "vehicle_seconds_per_s_per_core": round(rows / duck_s / args.threads),
            "vehicle_seconds_per_cpu_s": round(rows / duck_cpu) if duck_cpu else None,
            "merged_equals_full": _equal(merged, full),
            "trips": full["trips"].num_rows, "harsh_events": full["harsh_events"].num_rows,
        }
        if not args.no_spark:
            from batch_layer.spark_engine import SparkEngine

            spark = SparkEngine(cores=args.threads)
            full_views(spark, listing, cfg, None)  # warm-up: JVM, code generation
            t = time.monotonic()
            on_spark = full_views(spark, listing, cfg)
            spark_s = time.monotonic() - t
            spark.close()
            result.update({"spark_s": round(spark_s, 2),
                           "spark_vehicle_seconds_per_s_per_core": round(rows / spark_s / args.threads),
                           "spark_equals_duckdb": _equal(on_spark, full)})
        else:
            result["spark_equals_duckdb"] = None
        if not args.lake:
            result.update(_accuracy(plans, sim_trips, manifest, full, cfg.trips.min_trip_duration_s))
        return result
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
