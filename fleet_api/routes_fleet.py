"""Routes over the value layer: alerts (speed layer), trips, scores and yearly views (batch layer),
geofences and rules."""
from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from .access import Access
from .errors import BadRequest, Forbidden, NotFound, SourceUnavailable
from .keys import ALERTS, CONFIG, GEOFENCES, LAKE, VIEWS
from .middleware import ACCESS
from .paging import decode_cursor, encode_cursor, iso, limit_of, page, time_of

routes = web.RouteTableDef()


# -- alerts ---------------------------------------------------------------------------------------

@routes.get("/api/v1/alerts")
async def alerts(request: web.Request) -> web.Response:
    access: Access = request[ACCESS]
    q = request.query
    catalog = request.app[VIEWS].snapshot.catalog
    wanted: list[str] | None = None
    if q.get("vehicle"):
        wanted = [q["vehicle"]] if access.sees_vehicle(q["vehicle"], catalog) else []
    elif not access.everything:
        known = set(request.app[VIEWS].snapshot.vehicles) | set(catalog.fleet_of) | set(access.vehicles)
        for d in access.drivers:
            known |= set(catalog.vehicles_of_driver.get(d, ()))
        wanted = access.filter_vehicles(known, catalog)
    cur = decode_cursor(q)
    if cur is not None and (len(cur) != 2 or not isinstance(cur[0], int) or not isinstance(cur[1], str)):
        raise BadRequest("cursor: not a cursor of this list")
    limit = limit_of(q)
    rows = await asyncio.to_thread(request.app[ALERTS].list, q.get("state", "all"), wanted,
                                   tuple(cur) if cur else None, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return web.json_response({"items": rows, "next_cursor": encode_cursor([rows[-1]["start"], rows[-1]["id"]])
                              if more and rows else None})


@routes.post("/api/v1/alerts/{id}/ack")
async def ack(request: web.Request) -> web.Response:
    access: Access = request[ACCESS]
    reader = request.app[ALERTS]
    found = await asyncio.to_thread(reader.get, request.match_info["id"])
    if found is None or not access.sees_vehicle(found[1]["vehicle"], request.app[VIEWS].snapshot.catalog):
        raise NotFound(f"no alert {request.match_info['id']}")
    path, alert = found
    changed = await asyncio.to_thread(reader.acknowledge, path, alert["id"])
    _, alert = await asyncio.to_thread(reader.get, alert["id"]) or (path, alert)
    return web.json_response({"acknowledged": changed, "alert": alert})


# -- trips ----------------------------------------------------------------------------------------

def _trip_json(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "start": iso(t["start_t"]), "end": iso(t["end_t"])}


@routes.get("/api/v1/trips")
async def trips(request: web.Request) -> web.Response:
    access: Access = request[ACCESS]
    snap = request.app[VIEWS].require()
    q = request.query
    t0, t1 = time_of(q, "from"), time_of(q, "to")
    out = []
    for t in snap.trips:
        if q.get("vehicle") and t["vehicle"] != q["vehicle"]:
            continue
        if q.get("driver") and t["driver"] != q["driver"]:
            continue
        if (t0 is not None and t["start_t"] < t0) or (t1 is not None and t["start_t"] >= t1):
            continue
        if access.sees_trip(t["vehicle"], t["driver"], snap.catalog):
            out.append(t)
    out.sort(key=lambda t: (-t["start_t"], t["trip_id"]))  # newest first
    body = page(out, lambda t: [-t["start_t"], t["trip_id"]], q)
    body["items"] = [_trip_json(t) for t in body["items"]]
    return web.json_response(body)


@routes.get("/api/v1/trips/{id}")
async def trip(request: web.Request) -> web.Response:
    """The trip, its route as a GeoJSON LineString and its harsh events as Points (a FeatureCollection)."""
    access: Access = request[ACCESS]
    snap = request.app[VIEWS].require()
    t = snap.trip_index.get(request.match_info["id"])
    if t is None or not access.sees_trip(t["vehicle"], t["driver"], snap.catalog):
        raise NotFound(f"no trip {request.match_info['id']}")
    lake = request.app[LAKE]
    route = await asyncio.to_thread(lake.route, t["vehicle"], t["start_t"], t["end_t"]) if lake else []
    events = await asyncio.to_thread(snap.serving.trip_events, t["trip_id"])
    features: list[dict[str, Any]] = [{
        "type": "Feature", "geometry": {"type": "LineString", "coordinates": [[lon, lat] for _, lat, lon in route]},
        "properties": {"kind": "route", "times": [ts for ts, _, _ in route]}}]
    for e in events:
        if e["lat"] is None or e["lon"] is None:
            continue
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [e["lon"], e["lat"]]},
                         "properties": {**e, "kind": e["kind"], "time": iso(e["t"])}})
    return web.json_response({"trip": _trip_json(t), "route": {"type": "FeatureCollection", "features": features},
                              "events": events})


# -- scores and views -----------------------------------------------------------------------------

@routes.get("/api/v1/scores")
async def scores(request: web.Request) -> web.Response:
    """The leaderboard of one period (``start``, default the latest): best score first, each with
    its explanation."""
    access: Access = request[ACCESS]
    snap = request.app[VIEWS].require()
    q = request.query
    period = q.get("period", "month")
    if period not in snap.scores:
        raise BadRequest("period: day, month or year")
    rows = [r for r in snap.scores[period] if access.sees_driver(r["driver"], snap.catalog)]
    if q.get("fleet"):
        fleet = q["fleet"]
        rows = [r for r in rows if any(snap.catalog.fleet_of.get(v) == fleet
                                       for v in snap.catalog.vehicles_of_driver.get(r["driver"], ()))]
    starts = sorted({r["period_start"] for r in rows})
    start = q.get("start") or (starts[-1] if starts else None)
    rows = sorted((r for r in rows if r["period_start"] == start), key=lambda r: (-r["score"], r["driver"]))
    ranked = [{**r, "rank": i + 1} for i, r in enumerate(rows)]
    body = page(ranked, lambda r: [r["rank"]], q)
    return web.json_response({"period": period, "start": start, "periods": starts, **body})


@routes.get("/api/v1/views/yearly")
async def yearly(request: web.Request) -> web.Response:
    """Kilometres and trips per vehicle and year, rapid accelerations per driver and year, and the
    year-to-date totals of the caller's trips."""
    access: Access = request[ACCESS]
    snap = request.app[VIEWS].require()
    cat = snap.catalog
    km = [r for r in snap.km_year if access.sees_vehicle(r["vehicle"], cat)]
    accels = [r for r in snap.accels_year if access.sees_driver(r["driver"], cat)]
    raw = request.query.get("year")
    if raw:
        if not raw.isdigit():
            raise BadRequest("year: a year such as 2026")
        year = int(raw)
    elif snap.trips:
        year = dt.datetime.fromtimestamp(max(t["start_t"] for t in snap.trips), dt.timezone.utc).year
    else:
        year = dt.datetime.now(dt.timezone.utc).year
    mine = [t for t in snap.trips if access.sees_trip(t["vehicle"], t["driver"], cat)
            and dt.datetime.fromtimestamp(t["start_t"], dt.timezone.utc).year == year]
    events = sum(v for t in mine for k, v in t.items() if k.startswith("n_") and isinstance(v, int))
    ytd = {"year": year, "trips": len(mine), "distance_km": round(sum(t["distance_km"] or 0 for t in mine), 3),
           "vehicles": len({t["vehicle"] for t in mine}), "drivers": len({t["driver"] for t in mine if t["driver"]}),
           "harsh_events": events, "driving_h": round(sum(t["duration_s"] or 0 for t in mine) / 3600, 2)}
    return web.json_response({"km_per_vehicle_year": km, "rapid_accels_per_driver_year": accels, "ytd": ytd})


# -- geofences and rules --------------------------------------------------------------------------

@routes.get("/api/v1/geofences")
async def geofences(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(request.app[GEOFENCES].all))


def _admin(request: web.Request) -> None:
    if not request[ACCESS].admin:
        raise Forbidden("changing geofences needs an admin token")


@routes.put("/api/v1/geofences/{name}")
async def put_geofence(request: web.Request) -> web.Response:
    _admin(request)
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body: not JSON") from None
    feature = await asyncio.to_thread(request.app[GEOFENCES].put, request.match_info["name"], body)
    return web.json_response(feature)


@routes.delete("/api/v1/geofences/{name}")
async def delete_geofence(request: web.Request) -> web.Response:
    _admin(request)
    await asyncio.to_thread(request.app[GEOFENCES].delete, request.match_info["name"])
    return web.json_response({"deleted": request.match_info["name"]})


@routes.get("/api/v1/rules")
async def rules(request: web.Request) -> web.Response:
    from speed_layer.config import load_rules

    path = request.app[CONFIG].rules
    if path is None:
        raise SourceUnavailable("no rules file configured (sources.rules)")
    cfg = await asyncio.to_thread(load_rules, path)
    items = []
    for r in cfg.rules:
        item: dict[str, Any] = {"name": r.name, "kind": r.kind, "type": type(r).__name__,
                                "signals": dict(r.columns)}
        if getattr(r, "condition", None):
            item["condition"] = r.condition
        items.append(item)
    return web.json_response({"rules": items, "geofences": [f.name for f in cfg.fences], "hold_s": cfg.hold_s})
