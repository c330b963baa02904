"""The built-in rule types: their parameters (with defaults and checks), the reference car's columns
behind their logical signals, and the factory that makes a :class:`~speed_layer.rules.Rule`.

Logical signals and their reference-car columns (``dbc/reference_car.dbc``)::

    lights LowBeamOn   engine EngineState   ignition IgnitionState   door_fl..door_rr DoorFL..DoorRR
    voltage BatteryVoltage   speed VehicleSpeed   lat Latitude   lon Longitude   heading GnssHeading
    dtc0..dtc3 DtcCode0..DtcCode3   dtc_count DtcActiveCount   crash CrashDetected   severity CrashSeverity

A deployment with another DBC maps them in ``[signals]`` (all rules) or per rule (``signals = {...}``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .builtin_body import BatteryTrendRule, DtcRule
from .builtin_motion import HARSH_DEFAULTS_G, GeofenceRule, HarshRule, SpeedingRule
from .errors import ConditionError, RulesConfigError
from .geo import Fence
from .rules import ConditionRule, Rule

REFERENCE_COLUMNS: dict[str, str] = {
    "lights": "LowBeamOn", "engine": "EngineState", "ignition": "IgnitionState",
    "door_fl": "DoorFL", "door_fr": "DoorFR", "door_rl": "DoorRL", "door_rr": "DoorRR",
    "voltage": "BatteryVoltage", "speed": "VehicleSpeed", "lat": "Latitude", "lon": "Longitude",
    "heading": "GnssHeading", "dtc0": "DtcCode0", "dtc1": "DtcCode1", "dtc2": "DtcCode2", "dtc3": "DtcCode3",
    "dtc_count": "DtcActiveCount", "crash": "CrashDetected", "severity": "CrashSeverity",
}


def _num(lo: float | None = None, *, positive: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool)
                and (lo is None or v >= lo) and (not positive or v > 0))
    return ok


def _int(lo: int = 0) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(_str(x) for x in v)


def _limits(v: Any) -> bool:
    return isinstance(v, dict) and all(_num(positive=True)(x) for x in v.values())


@dataclasses.dataclass(frozen=True)
class Param:
    default: Any
    check: Callable[[Any], bool]
    what: str


@dataclasses.dataclass(frozen=True)
class RuleType:
    params: Mapping[str, Param]
    make: Callable[[str, dict[str, str], dict[str, Any], Sequence[Fence]], Rule]
    needs_fences: bool = False


def _headlights(name: str, cols: dict[str, str], p: dict[str, Any], fences: Sequence[Fence]) -> Rule:
    seconds = p["minutes"] * 60
    doors = " and ".join(f"{d} == 0" for d in ("door_fl", "door_fr", "door_rl", "door_rr"))
    cond = f"lights != 0 and engine == 0 and ignition == 0 and {doors} for {seconds} s"
    return ConditionRule(name, cond, cols, kind="headlights_left_on")


def _battery(kind: str) -> Callable[..., Rule]:
    def make(name: str, cols: dict[str, str], p: dict[str, Any], fences: Sequence[Fence]) -> Rule:
        cond = f"voltage < {p['volts']} hysteresis {p['hysteresis_v']} and engine == 0 for {p['for_s']} s"
        return ConditionRule(name, cond, cols, kind=kind, details=("voltage",))
    return make


def _harsh(kind: str) -> Callable[..., Rule]:
    def make(name: str, cols: dict[str, str], p: dict[str, Any], fences: Sequence[Fence]) -> Rule:
        return HarshRule(name, cols, kind=kind, threshold_g=p["threshold_g"], min_speed_kmh=p["min_speed_kmh"],
                         min_interval_s=p["min_interval_s"])
    return make


def _pick_fences(fences: Sequence[Fence], names: list[str] | None) -> list[Fence]:
    if names is None:
        return list(fences)
    by_name = {f.name: f for f in fences}
    return [by_name[n] for n in names]


def _speeding(name: str, cols: dict[str, str], p: dict[str, Any], fences: Sequence[Fence]) -> Rule:
    return SpeedingRule(name, cols, limit_kmh=p["limit_kmh"], multiplier=p["multiplier"],
                        min_duration_s=p["min_duration_s"], hysteresis_kmh=p["hysteresis_kmh"],
                        vehicle_limits=p["vehicles"], fences=_pick_fences(fences, p["fences"]))


def _geofence(name: str, cols: dict[str, str], p: dict[str, Any], fences: Sequence[Fence]) -> Rule:
    rule = GeofenceRule(name, cols, fences=_pick_fences(fences, p["fences"]), events=tuple(p["events"]))
    if p["vehicles"] is not None:
        rule.vehicles = frozenset(p["vehicles"])
    return rule


def _condition(name: str, cols: dict[str, str], p: dict[str, Any], fences: Sequence[Fence]) -> Rule:
    if p["condition"] is None:
        raise RulesConfigError("condition: a condition rule needs a condition")
    return ConditionRule(name, p["condition"], cols, peak=p["peak"], details=tuple(p["details"]))


_HARSH_PARAMS = {
    "min_speed_kmh": Param(20.0, _num(0), "a number >= 0"),
    "min_interval_s": Param(10, _int(0), "an integer >= 0"),
}
_BATTERY_PARAMS = {
    "hysteresis_v": Param(0.05, _num(0), "a number >= 0"),
    "for_s": Param(60, _int(1), "an integer >= 1"),
}
TYPES: dict[str, RuleType] = {
    "headlights_left_on": RuleType({"minutes": Param(3, _num(positive=True), "a positive number")}, _headlights),
    "battery_low": RuleType({"volts": Param(12.20, _num(positive=True), "a positive number"), **_BATTERY_PARAMS},
                            _battery("battery_low")),
    "battery_critical": RuleType({"volts": Param(12.05, _num(positive=True), "a positive number"),
                                  **_BATTERY_PARAMS}, _battery("battery_critical")),
    "battery_decline": RuleType({
        "slope_v": Param(0.02, _num(positive=True), "a positive number (volts per bucket)"),
        "bucket_s": Param(86400, _int(1), "an integer >= 1"),
        "window": Param(14, _int(2), "an integer >= 2"),
        "min_buckets": Param(4, _int(2), "an integer >= 2"),
        "rest_s": Param(1800, _int(0), "an integer >= 0"),
        "min_samples": Param(60, _int(1), "an integer >= 1"),
    }, lambda n, c, p, f: BatteryTrendRule(n, c, **p)),
    "speeding": RuleType({
        "limit_kmh": Param(120.0, _num(positive=True), "a positive number"),
        "multiplier": Param(1.0, _num(positive=True), "a positive number"),
        "min_duration_s": Param(10, _int(1), "an integer >= 1"),
        "hysteresis_kmh": Param(3.0, _num(0), "a number >= 0"),
        "vehicles": Param({}, _limits, "a table of vehicle id = limit in km/h"),
        "fences": Param(None, _strs, "a list of geofence names"),
    }, _speeding),
    "geofence": RuleType({
        "fences": Param(None, _strs, "a list of geofence names"),
        "events": Param(["enter", "exit"], lambda v: _strs(v) and set(v) <= {"enter", "exit"},
                        'a list of "enter" and "exit"'),
        "vehicles": Param(None, _strs, "a list of vehicle ids (default: every vehicle)"),
    }, _geofence, needs_fences=True),
    "dtc": RuleType({}, lambda n, c, p, f: DtcRule(n, c)),
    "crash": RuleType({}, lambda n, c, p, f: ConditionRule(n, "crash != 0", c, kind="crash", peak="severity")),
    **{kind: RuleType({"threshold_g": Param(g, _num(positive=True), "a positive number (g)"), **_HARSH_PARAMS},
                      _harsh(kind)) for kind, g in HARSH_DEFAULTS_G.items()},
    "condition": RuleType({
        "condition": Param(None, _str, "a condition string"),
        "peak": Param(None, _str, "a signal name"),
        "details": Param([], _strs, "a list of signal names"),
    }, _condition),
}
BUILTINS = tuple(t for t in TYPES if t != "condition")


def make_rule(name: str, type_: str, raw: Mapping[str, Any], columns: Mapping[str, str],
              fences: Sequence[Fence], where: str) -> Rule | None:
    """One rule from its table (``raw`` without ``type``/``enabled``/``signals``); None when it
    needs fences and the deployment has none. Errors name ``where`` and the key."""
    rtype = TYPES.get(type_)
    if rtype is None:
        raise RulesConfigError(f"{where}.type: unknown rule type {type_!r} (known: {', '.join(TYPES)})")
    unknown = set(raw) - set(rtype.params)
    if unknown:
        key = sorted(unknown)[0]
        raise RulesConfigError(f"{where}.{key}: unknown parameter (known: {', '.join(rtype.params) or 'none'})")
    params: dict[str, Any] = {}
    for key, param in rtype.params.items():
        value = raw.get(key, param.default)
        if key in raw and not param.check(value):
            raise RulesConfigError(f"{where}.{key}: must be {param.what}, got {value!r}")
        params[key] = value
    known = {f.name for f in fences}
    for key in ("fences",):
        for fence in params.get(key) or ():
            if fence not in known:
                raise RulesConfigError(f"{where}.{key}: no geofence named {fence!r}")
    if rtype.needs_fences and not fences:
        return None
    try:
        return rtype.make(name, dict(columns), params, fences)
    except ConditionError as exc:
        raise RulesConfigError(f"{where}.condition: {exc}") from None
    except RulesConfigError as exc:
        raise RulesConfigError(f"{where}.{exc}") from None
