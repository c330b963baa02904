"""The query API over merged views: trips, harsh events, scores and yearly figures, enriched.

:class:`Serving` takes the merged per-day views (:meth:`BatchStore.merged
<batch_layer.lambda_views.BatchStore.merged>` or :func:`~batch_layer.lambda_views.full_views`)
and the masked operational tables, and answers the questions of issue 13 with DuckDB over Arrow:
kilometres per vehicle per year, rapid accelerations per driver per year, average speed per trip,
trips per day and driver scores. Vehicles come back with plate, model and fleet, drivers with
their name; the raw VIN is never here.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from .config import SEVERITIES, BatchConfig
from .enrich import Operational, empty_operational
from .scoring import driver_scores, explain
from .views_sql import COUNT_COLUMNS

_DATE = "CAST(to_timestamp(day * 86400) AS DATE)"


class Serving:
    def __init__(self, views: dict[str, pa.Table], config: BatchConfig, ops: Operational | None = None) -> None:
        self.views, self.config = views, config
        self.ops = ops or empty_operational()

    def _sql(self, sql: str) -> pa.Table:
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for name, t in self.views.items():
                con.register(name, t)
            vehicles = self.ops.vehicles
            for col in ("plate", "model", "fleet"):
                if col not in vehicles.column_names:
                    vehicles = vehicles.append_column(col, pa.nulls(vehicles.num_rows, pa.string()))
            con.register("vehicles", vehicles.select(["vehicle", "plate", "model", "fleet"]))
            drivers = self.ops.drivers
            if "name" not in drivers.column_names:
                drivers = drivers.append_column("name", pa.nulls(drivers.num_rows, pa.string()))
            con.register("drivers", drivers.select(["driver", "name"]))
            rel = con.sql(sql)
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
            return fetch()
        finally:
            con.close()

    def trips(self, vehicle: str | None = None, driver: str | None = None, since: dt.date | None = None,
              until: dt.date | None = None) -> pa.Table:
        """Trips with plate, fleet and driver name; filters by masked vehicle, driver, start date."""
        where = ["TRUE"]
        if vehicle:
            where.append(f"t.vehicle = '{vehicle.replace(chr(39), '')}'")
        if driver:
            where.append(f"t.driver = '{driver.replace(chr(39), '')}'")
        if since:
            where.append(f"t.day >= {(since - dt.date(1970, 1, 1)).days}")
        if until:
            where.append(f"t.day < {(until - dt.date(1970, 1, 1)).days}")
        return self._sql(f"SELECT t.*, {_DATE.replace('day', 't.day')} AS date, v.plate, v.fleet, v.model AS vehicle_model,"
                         f" d.name AS driver_name FROM trips t LEFT JOIN vehicles v ON v.vehicle = t.vehicle"
                         f" LEFT JOIN drivers d ON d.driver = t.driver WHERE {' AND '.join(where)}"
                         f" ORDER BY t.start_t, t.vehicle")

    def trip_events(self, trip_id: str) -> list[dict[str, Any]]:
        """The harsh events of one trip with their positions (for the journey map)."""
        return self._sql(f"SELECT kind, severity, t, duration_s, peak_mps2, lat, lon, speed_kmh FROM harsh_events"
                         f" WHERE trip_id = '{trip_id.replace(chr(39), '')}' ORDER BY t").to_pylist()

    def km_per_vehicle_year(self) -> pa.Table:
        return self._sql(f"SELECT d.vehicle, v.plate, v.fleet, year({_DATE}) AS year, CAST(sum(trips) AS BIGINT) AS trips,"
                         f" sum(distance_km) AS distance_km, sum(gnss_km) AS gnss_km FROM vehicle_day d"
                         f" LEFT JOIN vehicles v ON v.vehicle = d.vehicle GROUP BY ALL ORDER BY year, d.vehicle")

    def rapid_accels_per_driver_year(self) -> pa.Table:
        cols = ", ".join(f"CAST(sum(n_rapid_accel_{s}) AS BIGINT) AS {s}" for s in SEVERITIES)
        total = " + ".join(f"n_rapid_accel_{s}" for s in SEVERITIES)
        return self._sql(f"SELECT d.driver, r.name, year({_DATE}) AS year, CAST(sum({total}) AS BIGINT) AS rapid_accels,"
                         f" {cols}, sum(distance_km) AS distance_km FROM driver_day d"
                         f" LEFT JOIN drivers r ON r.driver = d.driver GROUP BY ALL ORDER BY year, d.driver")

    def avg_speed_per_trip(self) -> pa.Table:
        return self._sql("SELECT trip_id, vehicle, driver, start_t, duration_s, distance_km, avg_speed_kmh,"
                         " CASE WHEN duration_s > 0 THEN distance_km * 3600.0 / duration_s END AS distance_speed_kmh,"
                         " max_speed_kmh FROM trips ORDER BY start_t, vehicle")

    def trips_per_day(self) -> pa.Table:
        return self._sql(f"SELECT {_DATE} AS date, CAST(sum(trips) AS BIGINT) AS trips,"
                         f" count(DISTINCT vehicle) AS vehicles, sum(distance_km) AS distance_km"
                         f" FROM vehicle_day GROUP BY ALL ORDER BY date")

    def scores(self, period: str) -> list[dict[str, Any]]:
        """Driver scores per day, month or year, each with its explanation and the driver's name."""
        names = dict(zip(self.ops.drivers.column("driver").to_pylist(),
                         self.ops.drivers.column("name").to_pylist())) if "name" in self.ops.drivers.column_names else {}
        rows = driver_scores(self.views["driver_day"], self.config, period).to_pylist()
        out = []
        for r in rows:
            events = {n: r[n] for n in COUNT_COLUMNS if r[n]}
            out.append({"driver": r["driver"], "name": names.get(r["driver"]), "period": period,
                        "period_start": r["period_start"].isoformat(), "score": r["score"], "trips": r["trips"],
                        "distance_km": round(r["distance_km"], 3), "speeding_share": round(r["speeding_share"], 4),
                        "events": events, "explanation": explain(r)})
        return out
