"""Driver scores 1-100: per trip (in the ``trips`` view) and per driver per day, month or year.

The formula (:func:`batch_layer.views_sql.score_columns`, documented with its sources in
``docs/batch-layer.md``) starts from Samsara's published score, *100 minus harsh events per
1,000 miles minus the percentage of time over the speed limit*, per 1,000 km here, with the
events weighted by kind and severity and the exposure made credible: ``credibility_km`` of
prior driving at ``prior_points`` is added to every distance (and ``credibility_s`` at
``prior_speeding_share`` to the moving time), so one event on a 2 km trip does not cost 500
points and a clean 2 km trip does not earn a perfect 100. :func:`explain` lists what each
score lost and why; :func:`driver_scores` rolls the per-day partials up, from summed exposure.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from .config import KINDS, SEVERITIES, BatchConfig
from .views_sql import rollup_sql


def explain(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Which events (and how much speeding) cost how many points, largest first.

    ``row`` is a ``trips`` row or a :func:`driver_scores` row; the points add up to
    ``100 - score`` before rounding and the 1..100 clamp."""
    items: list[dict[str, Any]] = []
    for k in KINDS:
        for s in SEVERITIES:
            n = int(row[f"n_{k}_{s}"] or 0)
            if n:
                items.append({"cause": k, "severity": s, "events": n, "points": round(float(row[f"pts_{k}_{s}"]), 2)})
    items.append({"cause": "speeding", "share": round(float(row["speeding_share"]), 4),
                  "points": round(float(row["pts_speeding"]), 2)})
    items.append({"cause": "exposure_prior", "distance_km": round(float(row["distance_km"] or 0.0), 2),
                  "points": round(float(row["pts_prior"]), 2)})
    return sorted(items, key=lambda i: -i["points"])


def driver_scores(driver_day: pa.Table, config: BatchConfig, period: str) -> pa.Table:
    """Scores per driver per ``period`` ("day", "month" or "year") from ``driver_day`` partials."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("driver_day", driver_day)
        rel = con.sql(rollup_sql(config, period))
        fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
        return fetch()
    finally:
        con.close()
