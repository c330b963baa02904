"""Built-in rules on body and diagnostics: new / cleared DTCs and the 12 V battery's decline trend.

(Headlights left on, battery low / critical and crash are condition rules: see
:mod:`speed_layer.catalog`.)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .rules import CLOSED, OPEN, AlertChange, Rule, Stepper

DTC_SLOTS = ("dtc0", "dtc1", "dtc2", "dtc3")
_DTC_LETTERS = "PCBU"


def dtc_name(code: int) -> str:
    """A 3-byte UDS DTC as text: ``0x042000`` -> ``P0420-00`` (letter from the top two bits)."""
    code = int(code)
    hi, ftb = code >> 8, code & 0xFF
    letter = _DTC_LETTERS[(hi >> 14) & 3]
    return f"{letter}{(hi >> 12) & 3}{(hi >> 8) & 0xF:X}{(hi >> 4) & 0xF:X}{hi & 0xF:X}-{ftb:02X}"


class DtcRule(Rule):
    """The vehicle's active DTC set is the non-zero codes of the DTC slots (only the first
    ``DtcActiveCount`` slots when that signal exists). A code not in the previous set opens a
    ``dtc_new`` alert (episode ``<code>:<second>``), closed when the code leaves the set, which
    also raises a ``dtc_cleared`` alert. The first complete set seen is the baseline: codes already
    present when the vehicle is first seen are not new (there is no previous set to differ from)
    and raise no alert; they are cleared like any other."""

    kind = "dtc"
    required = DTC_SLOTS
    optional = ("dtc_count",)

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        return _Dtc(self)


class _Dtc:
    def __init__(self, rule: DtcRule) -> None:
        self.rule = rule

    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]:
        if any(values.get(s) is None for s in DTC_SLOTS):
            return []  # not every slot seen yet: the set is not known
        count = values.get("dtc_count")
        slots = DTC_SLOTS if count is None else DTC_SLOTS[:max(0, int(count))]
        current = sorted({int(values[s]) for s in slots if values[s]})
        if "active" not in state:  # the baseline
            state["active"] = {str(code): t for code in current}
            return []
        active: dict[str, int] = state["active"]  # code -> second it appeared
        out = []
        for code in current:
            if str(code) not in active:
                active[str(code)] = t
                out.append(AlertChange(self.rule.name, "dtc_new", f"{code}:{t}", OPEN, t, None,
                                       {"code": code, "dtc": dtc_name(code)}))
        for key in sorted(set(active) - {str(c) for c in current}):
            since = active.pop(key)
            code = int(key)
            details = {"code": code, "dtc": dtc_name(code)}
            out.append(AlertChange(self.rule.name, "dtc_new", f"{code}:{since}", CLOSED, since, t, details))
            out.append(AlertChange(self.rule.name, "dtc_cleared", f"{code}:{t}", CLOSED, t, t, details))
        return out


class BatteryTrendRule(Rule):
    """A declining resting voltage over days.

    Resting voltage: the mean battery voltage of seconds with engine and ignition off, at least
    ``rest_s`` after they went off (surface charge gone), one figure per ``bucket_s`` (a day by
    default) that holds at least ``min_samples`` such seconds. Over the
    last ``window`` buckets with data (at least ``min_buckets``) the least-squares slope in volts
    per bucket; at or below ``-slope_v`` an episode opens (start: the first bucket of that window),
    and it closes once the slope is above ``-slope_v / 2``. Details: slope, buckets, latest mean."""

    kind = "battery_decline"
    required = ("voltage", "engine")
    optional = ("ignition",)

    def __init__(self, name: str, columns: Mapping[str, str], *, slope_v: float = 0.02, bucket_s: int = 86400,
                 window: int = 14, min_buckets: int = 4, rest_s: int = 1800, min_samples: int = 60) -> None:
        super().__init__(name, columns)
        self.slope_v, self.bucket_s, self.window = slope_v, bucket_s, window
        self.min_buckets, self.rest_s, self.min_samples = min_buckets, rest_s, min_samples

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        return _BatteryTrend(self)


def _slope(points: list[list[float]]) -> float:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0


class _BatteryTrend:
    def __init__(self, rule: BatteryTrendRule) -> None:
        self.rule = rule

    def _evaluate(self, state: dict[str, Any], t: int) -> list[AlertChange]:
        r = self.rule
        buckets = [b for b in state["b"] if b[2] >= r.min_samples][-r.window:]  # [bucket index, sum, count]
        if len(buckets) < r.min_buckets:
            return []
        points = [[b[0], b[1] / b[2]] for b in buckets]
        slope = _slope(points)
        ep = state.get("ep")
        details = {"slope_v_per_bucket": round(slope, 5), "bucket_s": r.bucket_s, "buckets": len(points),
                   "resting_v": round(points[-1][1], 3)}
        if ep is None and slope <= -r.slope_v:
            start = int(points[0][0]) * r.bucket_s
            state["ep"] = {"start": start}
            return [AlertChange(r.name, r.kind, str(start), OPEN, start, None, details)]
        if ep is not None and slope > -r.slope_v / 2:
            del state["ep"]
            return [AlertChange(r.name, r.kind, str(ep["start"]), CLOSED, ep["start"], t, details)]
        return []

    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]:
        volts, engine = values.get("voltage"), values.get("engine")
        if volts is None or engine is None:
            return []
        if engine != 0 or values.get("ignition", 0) != 0:
            state.pop("off", None)
            return []
        off = state.setdefault("off", t)
        if t - off < self.rule.rest_s:
            return []
        buckets = state.setdefault("b", [])
        index = t // self.rule.bucket_s
        out: list[AlertChange] = []
        if buckets and buckets[-1][0] == index:
            buckets[-1][1] += volts
            buckets[-1][2] += 1
        else:
            if buckets:  # a bucket is complete: judge the trend on complete buckets only
                out = self._evaluate(state, t)
            buckets.append([index, volts, 1])
            del buckets[:-self.rule.window]
        return out
