"""Geofences with shapely: circles, polygons and polylines from WKT, GeoJSON or a centre and radius.

Each fence is projected once into a local metric plane (equirectangular around the fence's own
centre, exact enough for fences up to tens of kilometres); GNSS points are projected the same
way. Hysteresis: a vehicle is *inside* once it is at least ``hysteresis_m`` inside the boundary and
*outside* once it is at least ``hysteresis_m`` beyond it, so jitter on the boundary never flaps.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import shapely
from shapely import wkt as shapely_wkt
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from .errors import RulesConfigError

EARTH_RADIUS_M = 6_371_008.8
DEFAULT_HYSTERESIS_M = 25.0
DEFAULT_LINE_WIDTH_M = 30.0
INSIDE, OUTSIDE = "in", "out"


@dataclasses.dataclass(frozen=True, eq=False)
class Fence:
    """One geofence: ``geometry`` in lon/lat degrees, ``plane`` the same in local metres."""

    name: str
    geometry: BaseGeometry
    hysteresis_m: float = DEFAULT_HYSTERESIS_M
    speed_limit_kmh: float | None = None

    def __post_init__(self) -> None:
        c = self.geometry.centroid
        object.__setattr__(self, "_lat0", c.y)
        object.__setattr__(self, "_lon0", c.x)
        object.__setattr__(self, "_kx", math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(c.y)))
        object.__setattr__(self, "_ky", math.radians(1) * EARTH_RADIUS_M)
        plane = shapely.transform(self.geometry, lambda a: np.column_stack(self._xy(a[:, 0], a[:, 1])))
        if plane.geom_type in ("LineString", "MultiLineString"):
            plane = plane.buffer(DEFAULT_LINE_WIDTH_M / 2)
        inner = plane.buffer(-self.hysteresis_m) if self.hysteresis_m else plane
        outer = plane.buffer(self.hysteresis_m) if self.hysteresis_m else plane
        if inner.is_empty:  # smaller than the hysteresis band: its own area is "inside"
            inner = plane
        for g in (plane, inner, outer):
            shapely.prepare(g)
        object.__setattr__(self, "plane", plane)
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_outer", outer)

    def _xy(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        return ((lon - self._lon0) * self._kx, (lat - self._lat0) * self._ky)  # type: ignore[attr-defined]

    def point(self, lat: float, lon: float) -> Point:
        return Point(*self._xy(lon, lat))

    def contains(self, lat: float, lon: float) -> bool:
        """Plain membership, no hysteresis (used for the first fix and for speed limits)."""
        return bool(self.plane.covers(self.point(lat, lon)))  # type: ignore[attr-defined]

    def membership(self, previous: str | None, lat: float, lon: float) -> str:
        """``in`` or ``out`` after this fix, given the previous membership (None: unknown)."""
        p = self.point(lat, lon)
        if previous is None:
            return INSIDE if self.plane.covers(p) else OUTSIDE  # type: ignore[attr-defined]
        if previous == INSIDE:
            return INSIDE if self._outer.covers(p) else OUTSIDE  # type: ignore[attr-defined]
        return INSIDE if self._inner.covers(p) else OUTSIDE  # type: ignore[attr-defined]


def circle(lat: float, lon: float, radius_m: float) -> BaseGeometry:
    """A circle as a lon/lat polygon (64 segments per quarter)."""
    kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(lat))
    ky = math.radians(1) * EARTH_RADIUS_M
    disc = Point(0.0, 0.0).buffer(radius_m, quad_segs=64)
    return shapely.transform(disc, lambda a: np.column_stack((lon + a[:, 0] / kx, lat + a[:, 1] / ky)))


def fence_from_config(name: str, raw: Mapping[str, Any], where: str) -> Fence:
    """A :class:`Fence` from one ``[geofences.<name>]`` table: exactly one of ``wkt``, ``geojson``
    (a string or table; coordinates lon, lat) or ``circle = {lat, lon, radius_m}``."""
    given = [k for k in ("wkt", "geojson", "circle") if k in raw]
    if len(given) != 1:
        raise RulesConfigError(f"{where}: give exactly one of wkt, geojson, circle")
    key = given[0]
    try:
        if key == "wkt":
            geom = shapely_wkt.loads(raw["wkt"])
        elif key == "geojson":
            doc = raw["geojson"]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            if doc.get("type") == "Feature":
                doc = doc["geometry"]
            geom = shape(doc)
        else:
            c = raw["circle"]
            radius = float(c["radius_m"])
            if not radius > 0:
                raise ValueError("radius_m must be positive")
            geom = circle(float(c["lat"]), float(c["lon"]), radius)
    except RulesConfigError:
        raise
    except Exception as exc:  # shapely and json raise many types for bad input
        raise RulesConfigError(f"{where}.{key}: not a valid geometry: {exc}") from None
    if geom.is_empty or not geom.is_valid:
        raise RulesConfigError(f"{where}.{key}: the geometry is empty or invalid")
    if geom.geom_type not in ("Polygon", "MultiPolygon", "LineString", "MultiLineString"):
        raise RulesConfigError(f"{where}.{key}: a fence is a polygon or a line, not a {geom.geom_type}")
    b = geom.bounds
    if not (-180 <= b[0] <= b[2] <= 180 and -90 <= b[1] <= b[3] <= 90):
        raise RulesConfigError(f"{where}.{key}: coordinates are lon, lat in degrees")
    h = raw.get("hysteresis_m", DEFAULT_HYSTERESIS_M)
    limit = raw.get("speed_limit_kmh")
    if not isinstance(h, (int, float)) or isinstance(h, bool) or h < 0:
        raise RulesConfigError(f"{where}.hysteresis_m: must be a number >= 0")
    if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0):
        raise RulesConfigError(f"{where}.speed_limit_kmh: must be a positive number")
    unknown = set(raw) - {"wkt", "geojson", "circle", "hysteresis_m", "speed_limit_kmh"}
    if unknown:
        raise RulesConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return Fence(name, geom, float(h), float(limit) if limit is not None else None)
