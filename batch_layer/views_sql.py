"""The batch views, written once as SQL (DuckDB dialect; Spark gets them through sqlglot).

:func:`pipeline` returns the stages, in order, as ``(name, SELECT)`` pairs over two registered
inputs: ``lake`` (the lake's rows, any schema) and ``assignments`` (masked vehicle, driver,
validity interval in Unix seconds). The last four stages are the views the batch layer stores
per date: ``trips``, ``harsh_events``, ``vehicle_day`` and ``driver_day``; :func:`rollup_sql`
aggregates ``driver_day`` into scores per day, month or year and :func:`score_columns` is the
score formula both use. Pure functions: text in, text out; parameters are validated numbers.

Per vehicle-second (after dedupe) one window pass orders each vehicle's rows by time and gives each
row its neighbours' values (the only pass over every row); runs of consecutive active seconds are
then merged into trips on the small table of run starts and ends, and rows join their trip's span:

* **active**: ignition On/Start or engine cranking/running where the row has IgnitionState or
  EngineState (ignition-driven), else speed >= ``motion_speed_kmh`` (motion-driven);
* a **trip starts** at an active second whose previous active second is more than
  ``min_stop_duration_s`` earlier, or separated from it by a data gap (two rows more than
  ``max_gap_s`` apart), or that has none; a trip spans from its first to its last active second
  (short stops inside it are idle time) and is kept if it lasts ``min_trip_duration_s`` and covers
  ``min_trip_distance_m`` (odometer, else GNSS path);
* **harsh events** are runs of consecutive seconds whose longitudinal acceleration
  (Δspeed/Δt) or lateral acceleration (mean speed × Δheading/Δt) passes the light threshold,
  gated to speeds of at least ``gate_kmh``; an event's severity comes from its peak.
"""
from __future__ import annotations

from collections.abc import Iterable

from .config import KINDS, SEVERITIES, BatchConfig, ScoreParams

EARTH_RADIUS_M = 6_371_000.0

# lake column -> stage column; several lake columns are coalesced in order
SIGNALS: dict[str, tuple[str, ...]] = {
    "speed": ("VehicleSpeed", "GnssSpeed"),
    "odo": ("Odometer",),
    "lat": ("Latitude",),
    "lon": ("Longitude",),
    "heading": ("GnssHeading",),
    "ignition": ("IgnitionState",),
    "engine": ("EngineState",),
    "fuel_rate": ("FuelConsumptionRate",),
    "fuel_vol": ("FuelVolume",),
}
VIEWS = ("trips", "harsh_events", "vehicle_day", "driver_day")
COUNT_COLUMNS = tuple(f"n_{k}_{s}" for k in KINDS for s in SEVERITIES)


def _num(x: float) -> str:
    return repr(float(x))


def _isum(col: str) -> str:
    """An integer sum that stays BIGINT (DuckDB widens sum(BIGINT) to HUGEINT)."""
    return f"CAST(sum({col}) AS BIGINT) AS {col}"


def source_sql(columns: Iterable[str], use_ignition: bool = True) -> str:
    """Project the lake's columns onto the stage columns; missing ones become NULL."""
    have = set(columns)
    exprs = []
    for alias, names in SIGNALS.items():
        present = [f"CAST({n} AS DOUBLE)" for n in names if n in have]
        if alias in ("ignition", "engine") and not use_ignition:
            present = []
        if not present:
            exprs.append(f"CAST(NULL AS DOUBLE) AS {alias}")
        elif len(present) == 1:
            exprs.append(f"{present[0]} AS {alias}")
        else:
            exprs.append(f"coalesce({', '.join(present)}) AS {alias}")
    model = "CAST(model AS VARCHAR)" if "model" in have else "CAST(NULL AS VARCHAR)"
    return (f"SELECT CAST(vehicle AS VARCHAR) AS vehicle, CAST(epoch(ts) AS BIGINT) AS t, {model} AS model, "
            + ", ".join(exprs) + " FROM lake")


def _haversine(lat1: str, lon1: str, lat2: str, lon2: str) -> str:
    dlat, dlon = f"sin(radians({lat2} - {lat1}) / 2)", f"sin(radians({lon2} - {lon1}) / 2)"
    h = f"{dlat} * {dlat} + cos(radians({lat1})) * cos(radians({lat2})) * {dlon} * {dlon}"
    return f"2 * {_num(EARTH_RADIUS_M)} * asin(sqrt(least(1.0, {h})))"


def score_columns(p: ScoreParams, km: str = "distance_km", speeding_s: str = "speeding_s",
                  moving_s: str = "moving_s") -> list[str]:
    """The score formula as SELECT expressions over count columns ``n_<kind>_<severity>``.

    ``pts_<kind>_<severity> = per_km * w_kind * w_severity * n / (km + credibility_km)``,
    ``pts_prior = prior_points * credibility_km / (km + credibility_km)``,
    ``pts_speeding = speeding_weight * 100 * (speeding_s + prior_share * credibility_s) /
    (moving_s + credibility_s)``, ``score = clamp(round(100 - sum of pts), 1, 100)``."""
    den = f"({km} + {_num(p.credibility_km)})"
    cols, terms = [], []
    for k in KINDS:
        for s in SEVERITIES:
            name = f"pts_{k}_{s}"
            cols.append(f"{_num(p.per_km * p.weight(k, s))} * n_{k}_{s} / {den} AS {name}")
            terms.append(f"{_num(p.per_km * p.weight(k, s))} * n_{k}_{s} / {den}")
    prior = f"{_num(p.prior_points * p.credibility_km)} / {den}"
    speeding = (f"{_num(p.speeding_weight * 100.0)} * ({speeding_s} + {_num(p.prior_speeding_share * p.credibility_s)})"
                f" / ({moving_s} + {_num(p.credibility_s)})")
    cols.append(f"{prior} AS pts_prior")
    cols.append(f"{speeding} AS pts_speeding")
    total = " + ".join(terms + [prior, speeding])
    cols.append(f"CAST(greatest(1.0, least(100.0, round(100.0 - ({total})))) AS INTEGER) AS score")
    return cols


def _features(rows: str, active: str, gap: int, gate_kmh: float) -> str:
    """The one window pass over per-second rows ``rows`` (vid, t, mid and the signals): every row
    gets whether it is ``active`` (an expression over the signals), its neighbours' values
    (lag/lead over the vehicle's rows ordered by time) and what they imply. The accelerations are
    NULL below the harsh-event speed gate; ``dup`` marks a row sharing its second with another row
    of the vehicle."""
    gate = _num(gate_kmh)
    inputs = (f"SELECT vid, t, mid, speed, odo, lat, lon, heading, fuel_rate, fuel_vol, {active} AS active,"
              f" CASE WHEN ignition IS NOT NULL OR engine IS NOT NULL THEN 1 ELSE 0 END AS ign_mode"
              f" FROM ({rows}) AS r")
    return f"""
SELECT vid, t, mid, speed, odo, lat, lon, fuel_rate, fuel_vol, ign_mode, dt > {gap} AS is_gap,
       CASE WHEN dt = 1 AND greatest(speed, prev_speed) >= {gate} THEN (speed - prev_speed) / 3.6 END AS long_acc,
       CASE WHEN dt = 1 AND (speed + prev_speed) / 2 >= {gate} THEN (speed + prev_speed) / 7.2 * radians(CASE
            WHEN heading - prev_heading > 180 THEN heading - prev_heading - 360
            WHEN heading - prev_heading < -180 THEN heading - prev_heading + 360
            ELSE heading - prev_heading END) END AS lat_acc,
       CASE WHEN dt <= {gap} THEN {_haversine('prev_lat', 'prev_lon', 'lat', 'lon')} END AS seg_m,
       active AND (NOT coalesce(prev_active, FALSE) OR dt > {gap}) AS run_start,
       active AND (NOT coalesce(next_active, FALSE) OR next_t - t > {gap}) AS run_end,
       coalesce(dt = 0 OR next_t = t, FALSE) AS dup
FROM (SELECT *, t - lag(t) OVER w AS dt, lead(t) OVER w AS next_t,
             lag(speed) OVER w AS prev_speed, lag(heading) OVER w AS prev_heading,
             lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon,
             lag(active) OVER w AS prev_active, lead(active) OVER w AS next_active
      FROM ({inputs}) AS a
      WINDOW w AS (PARTITION BY vid ORDER BY t)) AS f"""


FEAT_COLUMNS = ("vid, t, mid, speed, odo, lat, lon, fuel_rate, fuel_vol, ign_mode, is_gap, long_acc, lat_acc,"
                " seg_m, run_start, run_end")
BUCKET_S = 600  # rows find their trip through (vehicle, t // BUCKET_S): an equi-join, not a range join


def pipeline(config: BatchConfig, columns: Iterable[str], days: Iterable[int] | None = None
             ) -> list[tuple[str, str]]:
    """The stages for the trip start days ``days`` (UTC day numbers; None: every day)."""
    tp, hp = config.trips, config.harsh
    gap, stop = tp.max_gap_s, tp.min_stop_duration_s
    day_filter = "TRUE" if days is None else (
        "start_t // 86400 IN (" + ", ".join(str(int(d)) for d in sorted(set(days))) + ")" if days else "FALSE")
    sig = [a for a in SIGNALS]
    stages: list[tuple[str, str]] = [("src", source_sql(columns, tp.use_ignition))]
    # integer keys for the vehicles and models (small): the per-second rows carry no strings
    stages.append(("keys", """
SELECT vehicle, model, CAST(dense_rank() OVER (ORDER BY vehicle) AS INTEGER) AS vid,
       CASE WHEN model IS NULL THEN NULL ELSE CAST(dense_rank() OVER (ORDER BY model) AS INTEGER) END AS mid
FROM (SELECT DISTINCT vehicle, model FROM src) AS d"""))
    stages.append(("vehicles", "SELECT DISTINCT vid, vehicle FROM keys"))
    stages.append(("models", "SELECT DISTINCT mid, model FROM keys WHERE mid IS NOT NULL"))
    keyed = ("SELECT k.vid, s.t, k.mid, " + ", ".join(f"s.{a}" for a in sig)
             + " FROM src AS s JOIN keys AS k ON k.vehicle = s.vehicle AND k.model IS NOT DISTINCT FROM s.model")
    active = (f"CASE WHEN ignition IS NOT NULL OR engine IS NOT NULL"
              f" THEN coalesce(ignition, 0) >= 2 OR coalesce(engine, 0) >= 1"
              f" ELSE coalesce(speed, 0) >= {_num(tp.motion_speed_kmh)} END")
    # the one pass over every row (one sort), straight from the lake: right for every vehicle
    # whose seconds are unique (the rule); a vehicle with two rows for one second is redone below
    stages.append(("raw", _features(keyed, active, gap, hp.gate_kmh)))
    stages.append(("dupv", "SELECT DISTINCT vid FROM raw WHERE dup"))
    # one row per vehicle-second for those vehicles: copies of a packet (same vehicle, boot, seq,
    # ts) collapse, two packets claiming one second merge column by column (minimum)
    sec = ("SELECT vid, t, min(mid) AS mid, " + ", ".join(f"min({a}) AS {a}" for a in sig)
           + f" FROM ({keyed}) AS k WHERE vid IN (SELECT vid FROM dupv) GROUP BY vid, t")
    stages.append(("feat_dup", _features(sec, active, gap, hp.gate_kmh)))
    stages.append(("feat", f"""
SELECT {', '.join('r.' + c.strip() for c in FEAT_COLUMNS.split(','))}
FROM raw AS r LEFT JOIN dupv AS d ON d.vid = r.vid WHERE d.vid IS NULL
UNION ALL SELECT {FEAT_COLUMNS} FROM feat_dup"""))
    # runs of consecutive active seconds (few rows), merged into trips across short stops
    stages.append(("marks", "SELECT vid, t, run_start, run_end, is_gap FROM feat WHERE run_start OR run_end OR is_gap"))
    stages.append(("runs", """
SELECT s.vid, s.rs, e.re, lag(e.re) OVER (PARTITION BY s.vid ORDER BY s.rs) AS prev_re
FROM (SELECT vid, t AS rs, row_number() OVER (PARTITION BY vid ORDER BY t) AS k FROM marks WHERE run_start) AS s
JOIN (SELECT vid, t AS re, row_number() OVER (PARTITION BY vid ORDER BY t) AS k FROM marks WHERE run_end) AS e
  ON e.vid = s.vid AND e.k = s.k"""))
    stages.append(("spans", f"""
SELECT vid, trip_seq, min(rs) AS start_t, max(re) AS end_t
FROM (SELECT vid, rs, re, sum(new_trip) OVER (PARTITION BY vid ORDER BY rs
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS trip_seq
      FROM (SELECT r.vid, r.rs, r.re,
                   CASE WHEN r.prev_re IS NULL OR r.rs - r.prev_re > {stop} OR count(g.t) > 0 THEN 1 ELSE 0 END
                     AS new_trip
            FROM runs AS r
            LEFT JOIN (SELECT vid, t FROM marks WHERE is_gap) AS g
              ON g.vid = r.vid AND g.t > r.prev_re AND g.t <= r.rs
            GROUP BY r.vid, r.rs, r.re, r.prev_re) AS n) AS q
GROUP BY vid, trip_seq"""))
    # each trip once per time bucket it touches (small), so rows find their trip by equality
    stages.append(("span_buckets", f"""
SELECT vid, trip_seq, start_t, end_t, b
FROM spans CROSS JOIN UNNEST(generate_series(start_t // {BUCKET_S}, end_t // {BUCKET_S})) AS u(b)"""))
    # every row of a trip, short stops included
    stages.append(("seg", f"""
SELECT f.*, s.trip_seq, s.start_t AS trip_start_t
FROM feat AS f JOIN span_buckets AS s ON s.vid = f.vid AND s.b = f.t // {BUCKET_S}
 AND f.t >= s.start_t AND f.t <= s.end_t"""))
    stages.append(("trip_raw", f"""
SELECT vid, trip_seq, min(mid) AS mid, min(t) AS start_t, max(t) AS end_t,
       arg_min(lat, t) FILTER (WHERE lat IS NOT NULL) AS start_lat,
       arg_min(lon, t) FILTER (WHERE lon IS NOT NULL) AS start_lon,
       arg_max(lat, t) FILTER (WHERE lat IS NOT NULL) AS end_lat,
       arg_max(lon, t) FILTER (WHERE lon IS NOT NULL) AS end_lon,
       max(odo) - min(odo) AS odo_km,
       sum(CASE WHEN t > trip_start_t THEN seg_m END) / 1000.0 AS gnss_km,
       count(*) FILTER (WHERE coalesce(speed, 0) < {_num(tp.idle_speed_kmh)}) AS idle_s,
       avg(speed) AS avg_speed_kmh, max(speed) AS max_speed_kmh,
       sum(fuel_rate) / 3600.0 AS fuel_from_rate_l,
       arg_min(fuel_vol, t) FILTER (WHERE fuel_vol IS NOT NULL)
         - arg_max(fuel_vol, t) FILTER (WHERE fuel_vol IS NOT NULL) AS fuel_from_level_l,
       count(*) FILTER (WHERE speed > {_num(tp.speed_limit_kmh)}) AS speeding_s,
       count(*) FILTER (WHERE speed >= {_num(tp.motion_speed_kmh)}) AS moving_s,
       max(ign_mode) AS ign_mode
FROM seg GROUP BY vid, trip_seq"""))
    stages.append(("trip_kept", f"""
SELECT r.*, v.vehicle, m.model, v.vehicle || '-' || CAST(r.start_t AS VARCHAR) AS trip_id,
       r.end_t - r.start_t AS duration_s, coalesce(r.odo_km, r.gnss_km, 0.0) AS distance_km
FROM trip_raw AS r JOIN vehicles AS v ON v.vid = r.vid LEFT JOIN models AS m ON m.mid = r.mid
WHERE r.end_t - r.start_t >= {tp.min_trip_duration_s}
  AND coalesce(r.odo_km, r.gnss_km, 0.0) * 1000.0 >= {_num(tp.min_trip_distance_m)} AND {day_filter}"""))
    sev: list[str] = []
    union: list[str] = []
    cand: list[str] = []
    for kind, expr in (("harsh_brake", "-long_acc"), ("rapid_accel", "long_acc"), ("sharp_turn", "abs(lat_acc)")):
        light, moderate, severe = hp.thresholds(kind)  # the speed gate is in long_acc and lat_acc
        union.append(f"SELECT vid, trip_seq, t, lat, lon, speed, '{kind}' AS kind, {expr} AS mag FROM ev_rows"
                     f" WHERE {expr} >= {_num(light)}")
        cand.append(f"{expr} >= {_num(light)}")
        sev.append(f"WHEN kind = '{kind}' AND peak >= {_num(severe)} THEN 'severe'"
                   f" WHEN kind = '{kind}' AND peak >= {_num(moderate)} THEN 'moderate'")
    # candidate seconds first (few), then the trips they fall in
    stages.append(("ev_rows", "SELECT f.*, s.trip_seq FROM (SELECT * FROM feat WHERE " + " OR ".join(cand) + ") AS f"
                   " JOIN spans AS s ON s.vid = f.vid AND f.t >= s.start_t AND f.t <= s.end_t"))
    stages.append(("ev_sec", " UNION ALL ".join(union)))
    stages.append(("ev_raw", f"""
SELECT vid, trip_seq, kind, start_t AS t, duration_s, peak, lat, lon, speed_kmh,
       CASE {' '.join(sev)} ELSE 'light' END AS severity
FROM (SELECT vid, min(trip_seq) AS trip_seq, kind, min(t) AS start_t, max(t) - min(t) + 1 AS duration_s,
             max(mag) AS peak, arg_min(lat, t) AS lat, arg_min(lon, t) AS lon, arg_min(speed, t) AS speed_kmh
      FROM (SELECT *, t - row_number() OVER (PARTITION BY vid, trip_seq, kind ORDER BY t) AS grp
            FROM ev_sec) AS g
      GROUP BY vid, trip_seq, kind, grp) AS e"""))
    counts = ", ".join(f"count(*) FILTER (WHERE kind = '{k}' AND severity = '{s}') AS n_{k}_{s}"
                       for k in KINDS for s in SEVERITIES)
    stages.append(("ev_counts", f"SELECT vid, trip_seq, {counts} FROM ev_raw GROUP BY vid, trip_seq"))
    ncols = ", ".join(f"coalesce(c.{n}, 0) AS {n}" for n in COUNT_COLUMNS)
    stages.append(("trip_base", f"""
SELECT k.trip_id, k.vehicle, a.driver, k.model, k.start_t, k.end_t, k.start_t // 86400 AS day,
       k.start_lat, k.start_lon, k.end_lat, k.end_lon, k.duration_s, k.idle_s, k.odo_km, k.gnss_km, k.distance_km,
       k.avg_speed_kmh, k.max_speed_kmh,
       CASE WHEN coalesce(k.fuel_from_rate_l, k.fuel_from_level_l) IS NOT NULL
            THEN greatest(0.0, coalesce(k.fuel_from_rate_l, k.fuel_from_level_l)) END AS fuel_l,
       k.speeding_s, k.moving_s,
       CASE WHEN k.moving_s > 0 THEN CAST(k.speeding_s AS DOUBLE) / k.moving_s ELSE 0.0 END AS speeding_share,
       CASE WHEN k.ign_mode = 1 THEN 'ignition' ELSE 'motion' END AS mode, {ncols}
FROM trip_kept AS k
LEFT JOIN ev_counts AS c ON c.vid = k.vid AND c.trip_seq = k.trip_seq
LEFT JOIN assignments AS a ON a.vehicle = k.vehicle AND k.start_t >= a.valid_from
     AND (a.valid_to IS NULL OR k.start_t < a.valid_to)"""))
    stages.append(("trips", "SELECT *, " + ", ".join(score_columns(config.score)) + " FROM trip_base"))
    stages.append(("harsh_events", """
SELECT k.trip_id, k.vehicle, a.driver, k.start_t // 86400 AS day, e.kind, e.severity, e.t, e.duration_s,
       e.peak AS peak_mps2, e.lat, e.lon, e.speed_kmh
FROM ev_raw AS e JOIN trip_kept AS k ON k.vid = e.vid AND k.trip_seq = e.trip_seq
LEFT JOIN assignments AS a ON a.vehicle = k.vehicle AND k.start_t >= a.valid_from
     AND (a.valid_to IS NULL OR k.start_t < a.valid_to)"""))
    sums = ", ".join(_isum(n) for n in COUNT_COLUMNS)
    stages.append(("vehicle_day", f"""
SELECT vehicle, day, min(model) AS model, count(*) AS trips, sum(distance_km) AS distance_km,
       sum(odo_km) AS odo_km, sum(gnss_km) AS gnss_km, {_isum('duration_s')}, {_isum('idle_s')},
       sum(fuel_l) AS fuel_l, {_isum('speeding_s')}, {_isum('moving_s')}, {sums}
FROM trips GROUP BY vehicle, day"""))
    stages.append(("driver_day", f"""
SELECT driver, day, count(*) AS trips, sum(distance_km) AS distance_km, {_isum('duration_s')},
       {_isum('speeding_s')}, {_isum('moving_s')}, {sums}
FROM trips WHERE driver IS NOT NULL GROUP BY driver, day"""))
    return stages


def rollup_sql(config: BatchConfig, period: str, source: str = "driver_day") -> str:
    """Driver scores per ``period`` (day, month or year) from per-day partials in ``source``.

    The score is computed from the period's summed exposure and counts (never averaged over
    trips), so a period's score weighs each kilometre and second alike."""
    if period not in ("day", "month", "year"):
        raise ValueError(f"period must be day, month or year, not {period!r}")
    date = "CAST(to_timestamp(day * 86400) AS DATE)"
    key = {"day": date, "month": f"date_trunc('month', {date})", "year": f"date_trunc('year', {date})"}[period]
    sums = ", ".join(_isum(n) for n in COUNT_COLUMNS)
    inner = (f"SELECT driver, CAST({key} AS DATE) AS period_start, {_isum('trips')}, sum(distance_km) AS distance_km,"
             f" {_isum('duration_s')}, {_isum('speeding_s')}, {_isum('moving_s')}, {sums}"
             f" FROM {source} GROUP BY driver, CAST({key} AS DATE)")
    return (f"SELECT *, CASE WHEN moving_s > 0 THEN CAST(speeding_s AS DOUBLE) / moving_s ELSE 0.0 END"
            f" AS speeding_share, {', '.join(score_columns(config.score))} FROM ({inner}) AS r"
            f" ORDER BY driver, period_start")
