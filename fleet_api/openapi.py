"""The OpenAPI 3.1 description of ``/api/v1`` (served at ``/api/v1/openapi.json``).

``tests/test_api_openapi.py`` checks that its paths and methods are exactly the app's routes."""
from __future__ import annotations

from typing import Any


def _q(name: str, desc: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": desc,
            "schema": schema or {"type": "string"}}


def _p(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


PAGING = [_q("limit", "items per page (1..1000, default 100)", {"type": "integer"}),
          _q("cursor", "next_cursor of the previous page")]
_ERR = {"$ref": "#/components/responses/Error"}


def _op(summary: str, params: list[dict[str, Any]] | None = None, body: str | None = None,
        errors: tuple[int, ...] = (401, 429)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                                        **{str(c): _ERR for c in errors}}}
    if body:
        op["requestBody"] = {"required": True, "description": body, "content": {"application/json": {}}}
    return op


VEHICLE = _p("id", "masked vehicle id (16 hex digits); 404 when unknown or outside the token's scope")
TIME = "Unix seconds or ISO 8601"


def spec() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/vehicles": {"get": _op(
            "Vehicles with status (moving, parked, offline), last seen, position, model, fleet, plate;"
            " the raw VIN only for admin and vin scopes",
            [_q("status", "moving, parked or offline"), _q("fleet", "fleet name"), _q("model", "model"), *PAGING])},
        "/api/v1/vehicles/{id}/latest": {"get": _op(
            "Latest value and time of every signal, active DTCs, odometer, battery voltage", [VEHICLE],
            (401, 404, 429))},
        "/api/v1/vehicles/{id}/series": {"get": _op(
            "Any numeric signals over a time range, downsampled on the server: min/max/mean/count per step",
            [VEHICLE, _q("signals", "comma-separated signal names", required=True), _q("from", TIME),
             _q("to", TIME), _q("step", "bucket seconds (raised so that at most max_points come back)",
                                {"type": "integer"})], (400, 401, 404, 429))},
        "/api/v1/alerts": {"get": _op(
            "Alerts of the speed layer, newest first",
            [_q("state", "open, closed, acknowledged, unacknowledged or all"), _q("vehicle", "masked id"), *PAGING],
            (400, 401, 429))},
        "/api/v1/alerts/{id}/ack": {"post": _op("Acknowledge an alert", [_p("id", "alert id")], None,
                                                (401, 404, 429))},
        "/api/v1/trips": {"get": _op(
            "Trips (batch layer) with plate, fleet and driver, newest first",
            [_q("vehicle", "masked id"), _q("driver", "driver id"), _q("from", TIME), _q("to", TIME), *PAGING])},
        "/api/v1/trips/{id}": {"get": _op(
            "One trip: its figures, its route (GeoJSON LineString) and harsh events (GeoJSON Points)",
            [_p("id", "trip id")], (401, 404, 429))},
        "/api/v1/scores": {"get": _op(
            "Driver leaderboard of one period, best first, each score with its explanation",
            [_q("period", "day, month (default) or year"), _q("start", "period start date (default: latest)"),
             _q("fleet", "only drivers of this fleet's vehicles"), *PAGING])},
        "/api/v1/views/yearly": {"get": _op(
            "Kilometres per vehicle and year, rapid accelerations per driver and year, year-to-date totals",
            [_q("year", "year of the ytd totals (default: the latest with trips)", {"type": "integer"})])},
        "/api/v1/geofences": {"get": _op("Every geofence the rules engine uses (GeoJSON FeatureCollection)")},
        "/api/v1/geofences/{name}": {
            "put": _op("Create or replace a geofence (admin); the rules engine reads it from its geofences_file",
                       [_p("name", "fence name")], "a GeoJSON Feature or geometry (lon, lat), or "
                       "{\"circle\": {\"lat\", \"lon\", \"radius_m\"}}; optional hysteresis_m, speed_limit_kmh",
                       (400, 401, 403, 409, 429)),
            "delete": _op("Delete a geofence (admin)", [_p("name", "fence name")], None, (401, 403, 404, 409, 429))},
        "/api/v1/rules": {"get": _op("The deployment's rules and the fences they use")},
        "/api/v1/stream": {"get": {**_op("Server-Sent Events: 'alert' and 'position' events for the token's vehicles"),
                                   "responses": {"200": {"description": "an event stream",
                                                         "content": {"text/event-stream": {}}}, "401": _ERR}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                         "responses": {"200": {"description": "OK"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "dcm fleet API", "version": "1",
                 "description": "Bearer tokens with scopes (admin, read, fleet:<name>, vehicle:<masked id>, "
                                "driver:<id>); ids outside a token's scope answer 404."},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}}}}},
        },
    }
