"""Scenario injection for the vectorised fleet model: steering overrides and ground-truth checks.

Every vehicle carries at most one scenario (see :mod:`simulator.fleet_spec`).
:class:`ScenarioTable` holds them as arrays; :meth:`ScenarioTable.overrides`
says, for one second, which vehicles are forced to drive or park and which
target speed, acceleration or curvature replaces the driver's; the model
reports flags (lights stuck on, crash, DTC, battery drain) through
:meth:`ScenarioTable.flags`. :meth:`ScenarioTable.observe` watches the
emitted values and records when each scenario actually shows, with the
checks a rule engine (or a test) can evaluate on the stored rows.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .fleet_spec import SCENARIO_KINDS, ScenarioPlan, VehiclePlan

EARTH_RADIUS_M = 6_371_000.0
KIND_CODE = {k: i for i, k in enumerate(SCENARIO_KINDS)}
NO_SCENARIO = -1

# Checks on physical values that hold at an event's time: (signal, op, value)
HARSH_BRAKE_MPS2 = -5.0
RAPID_ACCEL_MPS2 = 3.5
SHARP_TURN_MPS2 = 4.5


@dataclasses.dataclass
class Overrides:
    """Per-vehicle steering for one second; NaN means no override."""

    force_drive: np.ndarray
    force_park: np.ndarray
    v_target: np.ndarray  # m/s
    accel: np.ndarray  # m/s^2, replaces the driver's acceleration
    kappa: np.ndarray  # 1/m
    boost_accel: np.ndarray  # bool: allow up to 3 m/s^2 while reaching v_target


@dataclasses.dataclass
class Flags:
    """Scenario effects on body signals for one second."""

    lights_stuck: np.ndarray
    crashed: np.ndarray
    crash_severity: np.ndarray
    dtc: np.ndarray
    battery_drain: np.ndarray  # V/day of resting-voltage decline, 0 when none


def distance_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between points in degrees (haversine)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, h)))


class ScenarioTable:
    """The scenarios of one group of vehicles, as arrays."""

    def __init__(self, plans: list[VehiclePlan]) -> None:
        n = len(plans)
        self.plans: list[ScenarioPlan | None] = [p.scenario for p in plans]
        self.kind = np.array([KIND_CODE[p.scenario.kind] if p.scenario else NO_SCENARIO for p in plans])
        self.t = np.array([p.scenario.t if p.scenario else 0 for p in plans], dtype=np.int64)
        self.idx = np.flatnonzero(self.kind != NO_SCENARIO)
        self.fence = np.full((n, 2), np.nan)  # geofence centre, set when the scenario starts
        self.observed: dict[int, dict[str, Any]] = {}
        self._v_at: dict[int, float] = {}
        self._last_values: dict[int, dict[str, float]] = {}

    def _is(self, kind: str) -> np.ndarray:
        return self.kind == KIND_CODE[kind]

    def overrides(self, now: int, v: np.ndarray) -> Overrides:
        n = len(self.kind)
        o = Overrides(np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.nan),
                      np.full(n, np.nan), np.zeros(n, bool))
        if not len(self.idx):
            return o
        rel = now - self.t
        has = self.kind != NO_SCENARIO

        def within(kind: str, lo: int, hi: int) -> np.ndarray:
            return has & self._is(kind) & (rel >= lo) & (rel < hi)

        m = within("harsh_braking", -60, 0)
        o.force_drive |= m
        o.v_target[m] = 80 / 3.6
        o.kappa[m] = 0.0
        m = within("harsh_braking", 0, 6) & (v > 0)
        o.accel[m] = -np.minimum(7.0, v[m])
        o.force_drive |= m
        m = within("rapid_acceleration", -30, 0)
        o.force_drive |= m
        o.v_target[m] = 0.0
        m = within("rapid_acceleration", 0, 6)
        o.force_drive |= m
        o.accel[m] = 4.5
        o.kappa[m] = 0.0
        m = within("sharp_turn", -40, 4)
        o.force_drive |= m
        o.v_target[m] = 45 / 3.6
        m = within("sharp_turn", 0, 4)
        o.kappa[m] = 6.0 / np.maximum(v[m], 1.0) ** 2
        m = within("speeding", -60, 60)
        o.force_drive |= m
        o.v_target[m] = 150 / 3.6
        o.boost_accel |= m
        m = within("geofence_exit", -10, 90)
        o.force_drive |= m
        o.v_target[m] = 80 / 3.6
        o.kappa[m] = 0.0
        m = within("crash", -60, 0)
        o.force_drive |= m
        o.v_target[m] = 60 / 3.6
        m = has & self._is("crash") & (rel == 0)
        o.accel[m] = -np.minimum(v[m], 20.0)
        m = within("headlights_left_on", -150, -90)
        o.force_drive |= m
        o.v_target[m] = 50 / 3.6
        m = within("headlights_left_on", -90, 10**9)
        o.force_park |= m
        m = has & self._is("battery_decline") & (rel >= -60)
        o.force_park |= m
        return o

    def flags(self, now: int) -> Flags:
        n = len(self.kind)
        rel = now - self.t
        has = self.kind != NO_SCENARIO
        crashed = has & self._is("crash") & (rel >= 0)
        sev = np.zeros(n)
        for i in np.flatnonzero(crashed):
            sev[i] = self.plans[i].params["severity"]  # type: ignore[union-attr]
        drain = np.zeros(n)
        for i in np.flatnonzero(has & self._is("battery_decline") & (rel >= 0)):
            drain[i] = self.plans[i].params["v_per_day"]  # type: ignore[union-attr]
        return Flags(
            lights_stuck=has & self._is("headlights_left_on") & (rel >= -150),
            crashed=crashed,
            crash_severity=sev,
            dtc=has & self._is("dtc") & (rel >= 0),
            battery_drain=drain,
        )

    def observe(self, now: int, values: dict[str, np.ndarray], is_last: bool) -> None:
        """Record the first second at which each scenario shows in ``values`` (physical, emitted)."""
        for i in self.idx:
            plan = self.plans[i]
            assert plan is not None
            rel = now - plan.t
            kind = plan.kind
            if kind == "geofence_exit" and rel == -10:
                self.fence[i] = (values["Latitude"][i], values["Longitude"][i])
            if kind == "battery_decline":
                if rel == 0:
                    self._v_at[i] = float(values["BatteryVoltage"][i])
                if is_last and i in self._v_at and i in self.observed:
                    drop = plan.params["v_per_day"] * (now - plan.t) / 86400.0
                    self.observed[i]["expected_drop_v"] = round(drop, 4)
                    if drop >= 0.05:
                        self.observed[i]["checks"].append(
                            {"t": now, "signal": "BatteryVoltage", "op": "<=",
                             "value": round(self._v_at[i] - 0.8 * drop, 2)})
            if i in self.observed or rel < 0:
                continue
            checks = self._checks(kind, plan, i, values)
            if checks is not None:
                event: dict[str, Any] = {"kind": kind, "planned_t": plan.t, "t": now, "params": dict(plan.params),
                                         "checks": [dict(c, t=now) for c in checks]}
                if kind == "geofence_exit":
                    lat, lon = self.fence[i]
                    event["geofence"] = {"lat": float(lat), "lon": float(lon), "radius_m": plan.params["radius_m"]}
                if kind == "battery_decline":
                    event["v_at_t"] = float(values["BatteryVoltage"][i])
                self.observed[i] = event

    def _checks(self, kind: str, plan: ScenarioPlan, i: int, values: dict[str, np.ndarray]
                ) -> list[dict[str, Any]] | None:
        def val(name: str) -> float:
            return float(values[name][i])

        if kind == "harsh_braking" and val("LongitudinalAccel") <= HARSH_BRAKE_MPS2:
            return [{"signal": "LongitudinalAccel", "op": "<=", "value": HARSH_BRAKE_MPS2}]
        if kind == "rapid_acceleration" and val("LongitudinalAccel") >= RAPID_ACCEL_MPS2:
            return [{"signal": "LongitudinalAccel", "op": ">=", "value": RAPID_ACCEL_MPS2}]
        if kind == "sharp_turn" and val("LateralAccel") >= SHARP_TURN_MPS2:
            return [{"signal": "LateralAccel", "op": ">=", "value": SHARP_TURN_MPS2}]
        if kind == "speeding" and val("VehicleSpeed") > plan.params["limit_kmh"]:
            return [{"signal": "VehicleSpeed", "op": ">", "value": plan.params["limit_kmh"]}]
        if kind == "geofence_exit" and not math.isnan(self.fence[i][0]):
            d = distance_m(self.fence[i][0], self.fence[i][1], val("Latitude"), val("Longitude"))
            if float(d) > plan.params["radius_m"]:
                return []
        if kind == "dtc" and val("DtcCode0") == plan.params["code"]:
            return [{"signal": "DtcCode0", "op": "==", "value": plan.params["code"]},
                    {"signal": "DtcStatus0", "op": "==", "value": plan.params["status"]},
                    {"signal": "MilLamp", "op": "==", "value": 1}]
        if kind == "crash" and val("CrashDetected") == 1:
            return [{"signal": "CrashDetected", "op": "==", "value": 1},
                    {"signal": "CrashSeverity", "op": "==", "value": plan.params["severity"]}]
        if kind == "headlights_left_on":
            doors = ("DoorFL", "DoorFR", "DoorRL", "DoorRR")
            if val("EngineState") == 0 and val("LowBeamOn") == 1 and all(val(d) == 0 for d in doors):
                return [{"signal": "EngineState", "op": "==", "value": 0},
                        {"signal": "LowBeamOn", "op": "==", "value": 1},
                        *({"signal": d, "op": "==", "value": 0} for d in doors)]
        if kind == "battery_decline":
            return [{"signal": "EngineState", "op": "==", "value": 0}]
        return None
