"""``dcm views``, ``dcm trips``, ``dcm scores``: the batch layer's command line (:mod:`batch_layer`).

::

    dcm views refresh --lake LAKE --views DIR [--watermark YYYY-MM-DD] [--ops SRC --secret-file KEY] [--json]
    dcm views show km-per-vehicle-year|rapid-accels-per-driver-year|avg-speed-per-trip|trips-per-day --lake ... --views ...
    dcm trips --lake LAKE --views DIR [--vehicle VIN --secret-file KEY] [--driver D] [--since DATE] [--events] [--json]
    dcm scores --lake LAKE --views DIR --ops SRC --secret-file KEY [--period day|month|year] [--driver D] [--json]

Every query merges the materialised batch days with the speed side (the same SQL over the lake for
the days after the watermark or changed since the last refresh). Tables for people, ``--json`` for
machines; ``views refresh`` shows a progress bar on stderr unless ``--json`` or ``--no-progress``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from dcm_base.errors import InputError

SHOW = ("km-per-vehicle-year", "rapid-accels-per-driver-year", "avg-speed-per-trip", "trips-per-day")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lake", required=True, help="lake root: a folder or a pyarrow.fs URI")
    p.add_argument("--views", type=Path, required=True, help="folder of the materialised batch views")
    p.add_argument("--config", type=Path, help="batch-layer TOML (trips, harsh, score weights)")
    p.add_argument("--ops", help="operational tables: csv:<folder>, a DuckDB file, sqlite:<file>, postgres:<dsn>")
    p.add_argument("--secret-file", type=Path, help="the sink's masking key (to join VINs and --vehicle)")
    p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb")
    p.add_argument("--threads", type=int, help="engine threads (default: one per core)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_views_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("views", help="batch views: refresh the materialised days, show yearly figures")
    p.add_argument("action", choices=("refresh", "show"))
    p.add_argument("name", nargs="?", choices=SHOW, help="show: which view")
    _common(p)
    p.add_argument("--watermark", help="materialise days before this date (default: the lake's newest day)")
    p.add_argument("--chunk-days", type=int, default=7, help="days computed per engine run")
    p.add_argument("--no-progress", action="store_true")
    return p


def add_trips_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("trips", help="trips with distance, duration, speeds, fuel, harsh events and score")
    _common(p)
    p.add_argument("--vehicle", help="a VIN (masked with --secret-file) or a masked vehicle id")
    p.add_argument("--driver")
    p.add_argument("--since", type=dt.date.fromisoformat, help="first start date (YYYY-MM-DD)")
    p.add_argument("--until", type=dt.date.fromisoformat, help="start dates before this one")
    p.add_argument("--events", action="store_true", help="list each trip's harsh events with positions")
    p.add_argument("--limit", type=int, default=0, help="at most this many trips (0: all)")
    return p


def add_scores_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("scores", help="driver scores 1-100 per day, month or year, with explanations")
    _common(p)
    p.add_argument("--period", choices=("day", "month", "year"), default="month")
    p.add_argument("--driver")
    p.add_argument("--explain", action="store_true", help="table output: add what cost the points")
    return p


def _secret(args: argparse.Namespace) -> bytes | None:
    if not args.secret_file:
        return None
    try:
        return args.secret_file.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"--secret-file: {args.secret_file}: {exc.strerror or exc}") from None


def _context(args: argparse.Namespace):
    from batch_layer.config import load_config
    from batch_layer.enrich import empty_operational, load_operational
    from batch_layer.lake_source import list_lake
    from batch_layer.lambda_views import BatchStore

    config = load_config(args.config)
    key = _secret(args)
    if args.ops:
        if key is None:
            raise InputError("--ops needs --secret-file (VINs are joined through the sink's keyed mask)")
        ops = load_operational(args.ops, key)
    else:
        ops = empty_operational()
    listing = list_lake(args.lake)
    return config, ops, listing, BatchStore(args.views), key


def _engine(args: argparse.Namespace):
    if args.engine == "spark":
        from batch_layer.spark_engine import SparkEngine

        return SparkEngine(cores=args.threads)
    from batch_layer.engine import DuckDBEngine

    return DuckDBEngine(threads=args.threads)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) if v[:1].isdigit() or v[:1] == "-" else v.ljust(w) for v, w in zip(r, widths))
              for r in cells]
    return "\n".join(lines)


def _print(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str], extra: dict | None = None) -> None:
    if args.json:
        print(json.dumps({**(extra or {}), "rows": rows}, default=str, indent=1))
    else:
        print(_table(rows, columns) if rows else "(none)")


def _merged(args, config, ops, listing, store):
    from batch_layer.serving import Serving

    engine = _engine(args)
    try:
        views, sources = store.merged(engine, listing, config, ops)
    finally:
        engine.close()
    return Serving(views, config, ops), sources


def _refresh(args, config, ops, listing, store) -> int:
    from batch_layer.lake_source import date_of, day_of

    if args.watermark:
        try:
            watermark = day_of(args.watermark)
        except ValueError:
            raise InputError(f"--watermark: {args.watermark!r} is not a date (YYYY-MM-DD)") from None
    else:
        watermark = max(listing.days) if listing.days else day_of(dt.datetime.now(dt.timezone.utc).date())
    bar = None
    show = not args.json and not args.no_progress

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not show or total == 0:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="day", desc="views refresh", file=sys.stderr, dynamic_ncols=True)
        bar.n = done
        bar.refresh()

    engine = _engine(args)
    try:
        report = store.refresh(engine, listing, config, watermark, ops, chunk_days=max(1, args.chunk_days),
                               progress=progress)
    finally:
        engine.close()
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        days = report.recomputed_days
        span = f"{days[0]}..{days[-1]}" if days else "none"
        print(f"views refreshed up to {date_of(watermark)} (exclusive): {len(days)} days recomputed ({span}),"
              f" {report.fresh_days} fresh; trips written {report.rows_written['trips']}"
              f"{' (full: parameters or assignments changed)' if report.full and days else ''}")
    return 0


def _show(args, serving) -> int:
    name = args.name
    if name is None:
        raise InputError(f"views show: name one of {', '.join(SHOW)}")
    table = {"km-per-vehicle-year": serving.km_per_vehicle_year, "rapid-accels-per-driver-year":
             serving.rapid_accels_per_driver_year, "avg-speed-per-trip": serving.avg_speed_per_trip,
             "trips-per-day": serving.trips_per_day}[name]()
    rows = table.to_pylist()
    _print(args, rows, table.column_names, {"view": name})
    return 0


def _trips(args, serving, key) -> int:
    from minute_packet.masking import mask_vehicle

    vehicle = args.vehicle
    if vehicle and key is not None and not (len(vehicle) == 16 and all(c in "0123456789abcdef" for c in vehicle)):
        vehicle = mask_vehicle(key, vehicle)
    rows = serving.trips(vehicle=vehicle, driver=args.driver, since=args.since, until=args.until).to_pylist()
    if args.limit:
        rows = rows[: args.limit]
    from batch_layer.scoring import explain

    for r in rows:
        r["start"] = dt.datetime.fromtimestamp(r["start_t"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        r["events"] = sum(v for k, v in r.items() if k.startswith("n_"))
        if args.events or args.json:
            r["harsh_events"] = serving.trip_events(r["trip_id"])
        if args.json:
            r["explanation"] = explain(r)
    columns = ["start", "plate", "vehicle", "driver", "duration_s", "distance_km", "gnss_km", "idle_s",
               "avg_speed_kmh", "max_speed_kmh", "fuel_l", "events", "speeding_share", "score"]
    if args.json:
        _print(args, rows, columns)
        return 0
    print(_table(rows, columns) if rows else "(no trips)")
    if args.events:
        for r in rows:
            for e in r["harsh_events"]:
                when = dt.datetime.fromtimestamp(e["t"], dt.timezone.utc).strftime("%H:%M:%S")
                print(f"  {r['trip_id']}  {when}  {e['kind']:<11} {e['severity']:<8} {e['peak_mps2']:.1f} m/s2"
                      f"  at {e['lat']:.5f},{e['lon']:.5f}  {e['speed_kmh']:.0f} km/h")
    return 0


def _scores(args, serving) -> int:
    rows = serving.scores(args.period)
    if args.driver:
        rows = [r for r in rows if r["driver"] == args.driver]
    if args.json:
        _print(args, rows, [], {"period": args.period})
        return 0
    for r in rows:
        r["why"] = "; ".join(f"{i['cause']}{' ' + i['severity'] if 'severity' in i else ''}"
                             f"{' x' + str(i['events']) if 'events' in i else ''}: -{i['points']:.1f}"
                             for i in r["explanation"] if i["points"] >= 0.05)
    cols = ["driver", "name", "period_start", "score", "trips", "distance_km", "speeding_share"]
    print(_table(rows, cols + (["why"] if args.explain else [])) if rows else "(no scores: no driver assignments?)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Errors propagate: :func:`dcm.cli.main` turns them into a message and an exit code."""
    config, ops, listing, store, key = _context(args)
    if args.command == "views" and args.action == "refresh":
        return _refresh(args, config, ops, listing, store)
    serving, _ = _merged(args, config, ops, listing, store)
    if args.command == "views":
        return _show(args, serving)
    if args.command == "trips":
        return _trips(args, serving, key)
    return _scores(args, serving)
