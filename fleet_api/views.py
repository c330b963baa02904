"""The batch layer's views and the operational tables, computed off the request path and cached.

:meth:`ViewCache.refresh` lists the lake (:func:`batch_layer.lake_source.list_lake`), and when its
files changed recomputes the views (:meth:`BatchStore.merged <batch_layer.lambda_views.BatchStore.merged>`
over materialised views when configured, else :func:`~batch_layer.lambda_views.full_views`), wraps
them in :class:`batch_layer.serving.Serving` and keeps the answers the routes filter: every trip,
the scores per period, the yearly figures. It runs in a thread from the app's background task;
requests read the last finished :class:`Snapshot` (one attribute swap), so they never wait for it.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from typing import Any

from .access import Catalog
from .config import ApiConfig
from .errors import SourceUnavailable

log = logging.getLogger(__name__)

PERIODS = ("day", "month", "year")
_MODEL = re.compile(r"(?:^|/)model=([^/]+)/")
_VEHICLE = re.compile(r"(?:^|/)vehicle=([0-9a-f]{16})/")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    serving: Any  # batch_layer.serving.Serving, or None without a lake
    trips: list[dict[str, Any]]
    trip_index: dict[str, dict[str, Any]]
    scores: dict[str, list[dict[str, Any]]]
    km_year: list[dict[str, Any]]
    accels_year: list[dict[str, Any]]
    catalog: Catalog
    vehicles: dict[str, dict[str, Any]]  # masked id -> plate, model, fleet (operational tables)
    drivers: dict[str, str | None]  # driver id -> name
    lake_models: dict[str, str]  # masked id -> model of its newest lake files
    vins: dict[str, str]  # masked id -> raw VIN (operational tables; shown to vin scopes only)
    fingerprint: str
    computed_at: float


def _empty() -> Snapshot:
    return Snapshot(None, [], {}, {p: [] for p in PERIODS}, [], [], Catalog(), {}, {}, {}, {}, "", 0.0)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, float) and v != v:
            v = None
        out[k] = v
    return out


class ViewCache:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.snapshot = _empty()
        self.ready = threading.Event()
        self.error: str | None = None
        self.refreshes = 0
        self._lock = threading.Lock()

    def require(self) -> Snapshot:
        if not self.ready.is_set():
            raise SourceUnavailable(self.error or "the batch views are still being computed")
        return self.snapshot

    def _operational(self):
        from batch_layer.enrich import empty_operational, load_operational

        if not self.config.operational:
            return empty_operational()
        return load_operational(self.config.operational, self.config.secret)

    def refresh(self, force: bool = False) -> bool:
        """Recompute when the lake changed (or ``force``); True when a new snapshot was made."""
        from batch_layer.config import load_config
        from batch_layer.engine import DuckDBEngine
        from batch_layer.lake_source import LakeListing, list_lake
        from batch_layer.lambda_views import BatchStore, full_views
        from batch_layer.serving import Serving

        with self._lock:
            t_begin = time.monotonic()
            listing = list_lake(self.config.lake) if self.config.lake else LakeListing("", ())
            fingerprint = listing.fingerprint(listing.days)
            if not force and self.ready.is_set() and fingerprint == self.snapshot.fingerprint:
                return False
            config = load_config(self.config.batch_config)
            ops = self._operational()
            engine = DuckDBEngine(threads=2)
            try:
                if self.config.batch_views:
                    views, _ = BatchStore(self.config.batch_views).merged(engine, listing, config, ops)
                else:
                    views = full_views(engine, listing, config, ops)
            finally:
                engine.close()
            serving = Serving(views, config, ops)
            trips = [_plain(t) for t in serving.trips().to_pylist()]
            scores = {p: serving.scores(p) for p in PERIODS}
            vehicles = {r["vehicle"]: {"plate": r.get("plate"), "model": r.get("model"), "fleet": r.get("fleet")}
                        for r in ops.vehicles.to_pylist()}
            drivers = {r["driver"]: r.get("name") for r in ops.drivers.to_pylist()}
            by_driver: dict[str, set[str]] = {}
            by_vehicle: dict[str, set[str]] = {}
            for a in ops.assignments.to_pylist():
                by_driver.setdefault(a["driver"], set()).add(a["vehicle"])
                by_vehicle.setdefault(a["vehicle"], set()).add(a["driver"])
            catalog = Catalog({v: d["fleet"] for v, d in vehicles.items()},
                              {k: frozenset(v) for k, v in by_driver.items()},
                              {k: frozenset(v) for k, v in by_vehicle.items()})
            models: dict[str, tuple[int, str]] = {}
            for f in listing.files:
                m, v = _MODEL.search(f.rel), _VEHICLE.search(f.rel)
                if m and v and f.day >= models.get(v.group(1), (-1, ""))[0]:
                    models[v.group(1)] = (f.day, m.group(1))
            for t in trips:  # the bucket layout has no vehicle folders: the trips know the model
                if t["vehicle"] not in models and t.get("model"):
                    models[t["vehicle"]] = (0, t["model"])
            self.snapshot = Snapshot(
                serving, trips, {t["trip_id"]: t for t in trips}, scores,
                [_plain(r) for r in serving.km_per_vehicle_year().to_pylist()],
                [_plain(r) for r in serving.rapid_accels_per_driver_year().to_pylist()],
                catalog, vehicles, drivers, {k: v[1] for k, v in models.items()}, dict(ops.vins), fingerprint,
                time.time())
            self.refreshes += 1
            self.error = None
            self.ready.set()
            log.info("views: %d trips from %d lake files in %.1f s", len(trips), len(listing.files),
                     time.monotonic() - t_begin)
            return True
