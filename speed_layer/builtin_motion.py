"""Built-in rules on motion: speeding, harsh acceleration / braking / cornering, geofence enter/exit.

Harsh-event defaults are the passenger-car (class 1, up to 6,000 lb) thresholds GPS Insight
recommends: rapid acceleration 0.37 g, harsh braking 0.38 g, hard turning 0.38 g
(help.gpsinsight.com, "Defining Thresholds for Your Fleet"); Digital Matter's trackers default to a
higher 4.4 m/s² (0.45 g) for acceleration and braking and 5.5 m/s² for cornering. All overridable.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .geo import INSIDE, Fence
from .rules import CLOSED, MAX_GAP_S, OPEN, AlertChange, Episodes, Rule, Stepper

G = 9.80665
HARSH_DEFAULTS_G = {"harsh_acceleration": 0.37, "harsh_braking": 0.38, "harsh_cornering": 0.38}
HARSH_MIN_SPEED_KMH = 20.0
HARSH_MIN_INTERVAL_S = 10


class SpeedingRule(Rule):
    """Above the limit for at least ``min_duration_s`` seconds: one alert per episode.

    The limit at a second is the lowest ``speed_limit_kmh`` of the fences the vehicle is in, else
    the vehicle's own limit (``vehicle_limits``), else ``limit_kmh``; times ``multiplier``. The
    episode ends when the speed is at or below the limit minus ``hysteresis_kmh``. Details: peak
    speed (km/h), distance over the limit (km, from the speed), the limit."""

    kind = "speeding"
    required = ("speed",)
    optional = ("lat", "lon")

    def __init__(self, name: str, columns: Mapping[str, str], *, limit_kmh: float = 120.0,
                 multiplier: float = 1.0, min_duration_s: int = 10, hysteresis_kmh: float = 3.0,
                 vehicle_limits: Mapping[str, float] | None = None, fences: Sequence[Fence] = ()) -> None:
        super().__init__(name, columns)
        self.limit_kmh, self.multiplier, self.min_duration_s = limit_kmh, multiplier, min_duration_s
        self.hysteresis_kmh = hysteresis_kmh
        self.vehicle_limits = dict(vehicle_limits or {})
        self.fences = [f for f in fences if f.speed_limit_kmh is not None]

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        return _Speeding(self, self.vehicle_limits.get(vehicle, self.limit_kmh))


class _Speeding:
    def __init__(self, rule: SpeedingRule, limit: float) -> None:
        self.rule, self.limit = rule, limit

    def _limit(self, values: Mapping[str, float]) -> float:
        limit = self.limit
        lat, lon = values.get("lat"), values.get("lon")
        if lat is not None and lon is not None:
            for f in self.rule.fences:
                if f.speed_limit_kmh is not None and f.speed_limit_kmh < limit and f.contains(lat, lon):
                    limit = f.speed_limit_kmh
        return limit * self.rule.multiplier

    def _change(self, run: dict[str, Any], status: str) -> AlertChange:
        details = {"peak_kmh": run["peak"], "distance_km": round(run["dist"], 4), "limit_kmh": run["limit"]}
        return AlertChange(self.rule.name, self.rule.kind, str(run["start"]), status, run["start"],
                           run["last"] if status == CLOSED else None, details)

    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]:
        out: list[AlertChange] = []
        run = state.get("run")
        if run is not None and t - run["last"] > MAX_GAP_S:
            if run["open"]:
                out.append(self._change(run, CLOSED))
            del state["run"]
            run = None
        speed = values.get("speed")
        if speed is None:
            return out
        limit = self._limit(values)
        over = speed > limit or (run is not None and speed > limit - self.rule.hysteresis_kmh)
        if over:
            if run is None:
                run = state["run"] = {"start": t, "last": t, "peak": speed, "dist": 0.0, "limit": limit,
                                      "open": False}
            run["last"] = t
            run["peak"] = max(run["peak"], speed)
            run["limit"] = min(run["limit"], limit)
            run["dist"] += speed / 3600.0
            if not run["open"] and t - run["start"] + 1 >= self.rule.min_duration_s:
                run["open"] = True
                out.append(self._change(run, OPEN))
        elif run is not None:
            if run["open"]:
                out.append(self._change(run, CLOSED))
            del state["run"]
        return out


class HarshRule(Rule):
    """Harsh acceleration, braking or cornering from 1 Hz rows.

    Longitudinal acceleration is the change of speed over one second; lateral acceleration is
    speed × change of heading per second (heading wrapped to ±180°). Only rows one second apart
    and at ``min_speed_kmh`` or more count. An episode is a run of seconds at or beyond the
    threshold; a new one within ``min_interval_s`` of the previous episode's end extends it
    (debounce), so a jerky stop gives one alert. Details: peak in m/s² and g."""

    required = ("speed",)

    def __init__(self, name: str, columns: Mapping[str, str], *, kind: str, threshold_g: float | None = None,
                 min_speed_kmh: float = HARSH_MIN_SPEED_KMH, min_interval_s: int = HARSH_MIN_INTERVAL_S) -> None:
        super().__init__(name, columns)
        if kind not in HARSH_DEFAULTS_G:
            raise ValueError(f"unknown harsh kind {kind!r}")
        self.kind = kind
        self.threshold = (threshold_g if threshold_g is not None else HARSH_DEFAULTS_G[kind]) * G
        self.min_speed_kmh, self.min_interval_s = min_speed_kmh, min_interval_s
        if kind == "harsh_cornering":
            self.required = ("speed", "heading")

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        return _Harsh(self)


class _Harsh:
    def __init__(self, rule: HarshRule) -> None:
        self.rule = rule
        self.episodes = Episodes(rule.name, rule.kind, "peak_mps2", max_gap_s=rule.min_interval_s)

    def _accel(self, prev: Mapping[str, Any], t: int, speed: float, heading: float | None) -> float | None:
        if t - prev["t"] != 1 or min(speed, prev["v"]) < self.rule.min_speed_kmh:
            return None
        if self.rule.kind == "harsh_cornering":
            if heading is None or prev.get("h") is None:
                return None
            dh = (heading - prev["h"] + 180.0) % 360.0 - 180.0
            return abs(speed / 3.6 * math.radians(dh))
        a = (speed - prev["v"]) / 3.6
        return a if self.rule.kind == "harsh_acceleration" else -a

    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]:
        speed, heading = values.get("speed"), values.get("heading")
        prev = state.get("prev")
        if speed is None:
            state.pop("prev", None)
            return self.episodes.expire(state, t)
        a = self._accel(prev, t, speed, heading) if prev else None
        state["prev"] = {"t": t, "v": speed, "h": heading}
        out = self.episodes.expire(state, t)
        if a is not None and a >= self.rule.threshold:
            peak = round(a, 3)
            out += self.episodes.update(state, t, True, t - 1, peak)
            ep = state["ep"]
            ep["peak_g"] = round(ep["peak_mps2"] / G, 3)
        # a calm second does not close the episode at once: it closes after min_interval_s (debounce)
        return out


class GeofenceRule(Rule):
    """Enter and exit of each fence, with the fence's hysteresis; the first fix only sets the
    membership. Each transition is an alert of its own (kind ``geofence_enter``/``geofence_exit``,
    episode ``<fence>:<second>``), closed at once."""

    kind = "geofence"
    required = ("lat", "lon")

    def __init__(self, name: str, columns: Mapping[str, str], *, fences: Sequence[Fence],
                 events: tuple[str, ...] = ("enter", "exit")) -> None:
        super().__init__(name, columns)
        self.fences = list(fences)
        self.events = events

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        return _Geofence(self)


class _Geofence:
    def __init__(self, rule: GeofenceRule) -> None:
        self.rule = rule

    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]:
        lat, lon = values.get("lat"), values.get("lon")
        if lat is None or lon is None or (lat == 0 and lon == 0):
            return []
        out = []
        member = state.setdefault("m", {})
        for f in self.rule.fences:
            before = member.get(f.name)
            now = f.membership(before, lat, lon)
            member[f.name] = now
            if before is not None and now != before:
                event = "enter" if now == INSIDE else "exit"
                if event in self.rule.events:
                    out.append(AlertChange(self.rule.name, f"geofence_{event}", f"{f.name}:{event}:{t}", CLOSED,
                                           t, t, {"fence": f.name, "lat": lat, "lon": lon}))
        return out
