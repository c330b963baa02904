"""Routes over vehicles: the list with status, the latest state, time series, and the live stream."""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

from speed_layer.catalog import REFERENCE_COLUMNS

from .access import Access
from .errors import BadRequest, NotFound, SourceUnavailable
from .keys import ALERTS, CLOCK, CONFIG, COUNTERS, HUB, LAKE, LIMITER, STATE, VEHICLE_LIST, VIEWS
from .middleware import ACCESS
from .paging import iso, page, time_of
from .state import Summary

routes = web.RouteTableDef()
DTC_SLOTS = tuple(REFERENCE_COLUMNS[f"dtc{i}"] for i in range(4))
MOVING_FRESH_S = 120  # a speed older than this says nothing about moving now


def now_of(app: web.Application) -> float:
    return app[CLOCK]()


def status_of(app: web.Application, s: Summary | None) -> str:
    """offline (nothing for offline_after_s), moving (a recent speed >= moving_kmh) or parked."""
    cfg = app[CONFIG]
    now = now_of(app)
    if s is None or now - s.ts > cfg.offline_after_s:
        return "offline"
    sp = s.speed
    if sp is not None and sp[1] is not None and sp[1] >= cfg.moving_kmh and now - sp[0] <= MOVING_FRESH_S:
        return "moving"
    return "parked"


def vehicle_json(app: web.Application, vehicle: str, s: Summary | None, access: Access) -> dict[str, Any]:
    snap = app[VIEWS].snapshot
    ops = snap.vehicles.get(vehicle, {})
    speed = s.speed if s else None
    return {"id": vehicle, "status": status_of(app, s), "last_seen": iso(s.ts) if s else None,
            "model": ops.get("model") or snap.lake_models.get(vehicle), "fleet": ops.get("fleet"),
            "plate": ops.get("plate"), "vin": snap.vins.get(vehicle) if access.vin else None,
            "position": s.position if s else None,
            "speed_kmh": speed[1] if speed else None}


def visible(request: web.Request, vehicle: str) -> str:
    """The vehicle id if the caller may see it; 404 otherwise (unknown and out of scope alike)."""
    access: Access = request[ACCESS]
    if not re.fullmatch(r"[0-9a-f]{16}", vehicle) or not access.sees_vehicle(vehicle, request.app[VIEWS].snapshot.catalog):
        raise NotFound(f"no vehicle {vehicle}")
    return vehicle


def _all_vehicles(app: web.Application, vins: bool) -> list[dict[str, Any]]:
    """Every vehicle rendered, kept for the current second (a status depends on the clock) until the
    latest state or the views change: a request then only filters it by its scope."""
    snap, state = app[VIEWS].snapshot, app[STATE]
    key = (int(now_of(app)), state.version, snap.computed_at, vins)
    cache = app[VEHICLE_LIST]
    if cache.get("key") != key:
        summaries = state.summaries()
        who = Access("list", vin=vins)
        cache["items"] = [vehicle_json(app, v, summaries.get(v), who) for v in sorted(set(summaries) | set(snap.vehicles))]
        cache["key"] = key
    return cache["items"]


@routes.get("/api/v1/vehicles")
async def vehicles(request: web.Request) -> web.Response:
    app = request.app
    access: Access = request[ACCESS]
    snap = app[VIEWS].snapshot
    items = [i for i in _all_vehicles(app, access.vin) if access.sees_vehicle(i["id"], snap.catalog)]
    q = request.query
    for key in ("status", "fleet", "model"):
        if q.get(key):
            items = [i for i in items if i[key] == q[key]]
    return web.json_response(page(items, lambda i: [i["id"]], q))


@routes.get("/api/v1/vehicles/{id}/latest")
async def latest(request: web.Request) -> web.Response:
    vehicle = visible(request, request.match_info["id"])
    signals = await asyncio.to_thread(request.app[STATE].latest, vehicle)
    if not signals and vehicle not in request.app[VIEWS].snapshot.vehicles:
        raise NotFound(f"no vehicle {vehicle}")
    s = request.app[STATE].summaries().get(vehicle)
    dtcs = sorted({int(signals[d][1]) for d in DTC_SLOTS if d in signals and signals[d][1]})
    count = signals.get(REFERENCE_COLUMNS["dtc_count"])
    return web.json_response({
        **vehicle_json(request.app, vehicle, s, request[ACCESS]),
        "active_dtcs": dtcs if count is None else dtcs[:max(0, int(count[1] or 0))],
        "odometer_km": signals["Odometer"][1] if "Odometer" in signals else None,
        "battery_v": signals[REFERENCE_COLUMNS["voltage"]][1] if REFERENCE_COLUMNS["voltage"] in signals else None,
        "signals": {n: {"ts": iso(t), "value": v} for n, (t, v) in sorted(signals.items())}})


@routes.get("/api/v1/vehicles/{id}/series")
async def series(request: web.Request) -> web.Response:
    vehicle = visible(request, request.match_info["id"])
    q = request.query
    signals = [s for s in q.get("signals", "").split(",") if s]
    now = int(now_of(request.app))
    t1 = time_of(q, "to", now + 1)
    t0 = time_of(q, "from", t1 - 3600)
    step = q.get("step")
    if step is not None and (not step.isdigit() or int(step) < 1):
        raise BadRequest("step: a whole number of seconds >= 1")
    lake = request.app[LAKE]
    if lake is None:
        raise SourceUnavailable("no lake configured (sources.lake)")
    out = await asyncio.to_thread(lake.series, vehicle, signals, t0, t1, int(step) if step else None)
    return web.json_response(out)


@routes.get("/api/v1/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``alert`` and ``position`` events (JSON data) for the caller's vehicles."""
    hub = request.app[HUB]
    sub = hub.subscribe(request[ACCESS])
    if sub is None:
        raise SourceUnavailable("too many open streams")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        await resp.write(b": connected\n\n")
        while True:
            try:
                event, data = await asyncio.wait_for(sub.queue.get(), timeout=15)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
    return resp


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    app = request.app
    views = app[VIEWS]
    return web.json_response({
        "ok": True, "views_ready": views.ready.is_set(), "views_error": views.error, "time": time.time(),
        "vehicles": len(app[STATE].summaries()), "streams": len(app[HUB].subscribers),
        "counters": {**app[COUNTERS], "rate_limited_keys_evicted": app[LIMITER].evicted,
                     "stream_dropped": app[HUB].dropped,
                     "series_cache_hits": app[LAKE].cache_hits if app[LAKE] else 0,
                     "series_cache_evicted": app[LAKE].cache_evicted if app[LAKE] else 0,
                     **_column_cache(app)},
        "alert_stores": len(app[ALERTS].paths)})


def _column_cache(app: web.Application) -> dict[str, int]:
    c = app[LAKE].column_cache if app[LAKE] else None
    return {"series_columns_bytes": c.bytes if c else 0, "series_columns_hits": c.hits if c else 0,
            "series_columns_evicted": c.evicted if c else 0}
