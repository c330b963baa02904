"""The geofence store: the GeoJSON file the rules file names in ``geofences_file``.

The speed layer reads it with :func:`speed_layer.config.load_rules` (its fences join the rules
file's own ``[geofences]``); this module writes it. Every change is validated by the speed layer
itself: the fence through :func:`speed_layer.geo.fence_from_config`, then the whole rules file
through :func:`~speed_layer.config.load_rules` against the new file, and only then is the file
replaced (written to a temporary name, fsynced, renamed), so a rule worker never reads a half
file or a store its rules refuse. Running rule workers see the change within 5 s (``RulesService.maybe_reload``).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import shapely.geometry

from speed_layer.config import geofences_from_file, load_rules, rules_from_mapping
from speed_layer.geo import circle, fence_from_config

from .errors import BadRequest, Conflict, NotFound, SourceUnavailable

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _store_path(rules_path: Path) -> Path | None:
    import tomllib

    try:
        doc = tomllib.loads(rules_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SourceUnavailable(f"{rules_path}: cannot read the rules file: {exc}") from None
    gf = doc.get("geofences_file")
    if not isinstance(gf, str) or not gf:
        return None
    p = Path(gf)
    return p if p.is_absolute() else rules_path.parent / p


class GeofenceStore:
    def __init__(self, rules_path: Path | None) -> None:
        self.rules_path = rules_path
        self._lock = threading.Lock()

    def _path(self) -> Path:
        path = _store_path(self.rules_path) if self.rules_path else None
        if path is None:
            raise Conflict("no geofence store: the rules file (sources.rules) has no geofences_file")
        return path

    def _read(self, path: Path) -> dict[str, Any]:
        if not path.exists():
            return {"type": "FeatureCollection", "features": []}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"{path}: unreadable geofence store: {exc}") from None

    def all(self) -> dict[str, Any]:
        """Every fence the rules engine uses, as a FeatureCollection; ``properties.editable`` is
        false for fences written in the rules file itself."""
        if self.rules_path is None:
            return {"type": "FeatureCollection", "features": []}
        rules = load_rules(self.rules_path)
        path = _store_path(self.rules_path)
        stored = set(geofences_from_file(path, str(path))) if path else set()
        features = []
        for f in rules.fences:
            features.append({"type": "Feature", "geometry": shapely.geometry.mapping(f.geometry),
                             "properties": {"name": f.name, "hysteresis_m": f.hysteresis_m,
                                            "speed_limit_kmh": f.speed_limit_kmh, "editable": f.name in stored}})
        return {"type": "FeatureCollection", "features": features}

    def put(self, name: str, body: Any) -> dict[str, Any]:
        """Create or replace fence ``name`` from a GeoJSON Feature/geometry or ``{"circle": {...}}``."""
        if not name or len(name) > 64 or not set(name) <= _NAME_OK:
            raise BadRequest("name: 1..64 letters, digits, '_', '-' or '.'")
        if not isinstance(body, dict):
            raise BadRequest("body: a GeoJSON Feature, a geometry, or {\"circle\": {lat, lon, radius_m}}")
        props = dict(body.get("properties") or {}) if body.get("type") == "Feature" else {}
        for k in ("hysteresis_m", "speed_limit_kmh"):
            if k in body and body.get("type") != "Feature":
                props[k] = body[k]
        if "circle" in body:
            c = body["circle"]
            try:
                geometry = shapely.geometry.mapping(circle(float(c["lat"]), float(c["lon"]), float(c["radius_m"])))
            except (TypeError, KeyError, ValueError):
                raise BadRequest("circle: needs numbers lat, lon and radius_m") from None
        else:
            geometry = body.get("geometry") if body.get("type") in ("Feature", None) else body
        raw = {"geojson": geometry or {}, **{k: props[k] for k in ("hysteresis_m", "speed_limit_kmh")
                                             if props.get(k) is not None}}
        fence_from_config(name, raw, f"geofences.{name}")  # the speed layer's own validation (400 if bad)
        feature = {"type": "Feature", "geometry": json.loads(json.dumps(geometry)),
                   "properties": {"name": name, **{k: raw[k] for k in ("hysteresis_m", "speed_limit_kmh") if k in raw}}}
        with self._lock:
            path = self._path()
            doc = self._read(path)
            doc["features"] = [f for f in doc["features"] if f["properties"]["name"] != name] + [feature]
            self._replace(path, doc)
        return feature

    def delete(self, name: str) -> None:
        with self._lock:
            path = self._path()
            doc = self._read(path)
            kept = [f for f in doc["features"] if f["properties"]["name"] != name]
            if len(kept) == len(doc["features"]):
                inline = self.rules_path is not None and any(f.name == name for f in load_rules(self.rules_path).fences)
                if inline:
                    raise Conflict(f"geofence {name!r} is written in the rules file; change it there")
                raise NotFound(f"no geofence {name!r}")
            doc["features"] = kept
            self._replace(path, doc)

    def _replace(self, path: Path, doc: dict[str, Any]) -> None:
        import tomllib

        assert self.rules_path is not None
        tmp = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            # the whole rules file must load with the new store (e.g. no fence name in both places)
            rules = tomllib.loads(self.rules_path.read_text())
            rules["geofences_file"] = str(tmp.resolve())
            rules_from_mapping(rules, str(self.rules_path), self.rules_path.parent)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
