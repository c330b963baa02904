"""One vehicle's rules over one schema: a packet's 1 Hz physical rows through every bound rule.

Pure: :meth:`VehicleRules.apply` takes the vehicle's state dict (JSON-serialisable) and a decoded
:class:`~minute_packet.MinutePacket` and returns the alert changes, updating the state in place.
Physical values come from the codec's raw cells through :meth:`Column.physical`. A signal that is
absent in a second (a slow or multiplexed message) keeps its last value for ``hold_s`` seconds.
Rules whose signals the schema lacks are left out for this vehicle and listed in ``skipped``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from minute_packet import MinutePacket, Schema

from .config import RulesConfig
from .errors import ConditionError
from .rules import AlertChange, Rule, Stepper


class VehicleRules:
    """The rules of a deployment bound to one vehicle and one schema."""

    def __init__(self, config: RulesConfig, vehicle: str, schema: Schema) -> None:
        self.vehicle = vehicle
        self.hold_s = config.hold_s
        index = {c.name: i for i, c in enumerate(schema.columns)}
        self.skipped: dict[str, str] = {}  # rule name -> reason
        self._bound: list[tuple[Rule, Stepper, list[tuple[str, str]]]] = []
        needed: set[str] = set()
        for rule in config.rules:
            if not rule.applies_to(vehicle):
                continue
            missing = rule.missing(index)
            if missing:
                self.skipped[rule.name] = "schema lacks " + ", ".join(missing)
                continue
            wanted = [(s, rule.columns[s]) for s in (*rule.required, *rule.optional) if rule.columns.get(s) in index]
            choices = {s: schema.columns[index[col]].choices for s, col in wanted}
            try:
                stepper = rule.bind(vehicle, choices)
            except ConditionError as exc:
                self.skipped[rule.name] = str(exc)
                continue
            self._bound.append((rule, stepper, wanted))
            needed.update(col for _, col in wanted)
        self._columns = [(name, index[name], schema.columns[index[name]]) for name in sorted(needed)]

    @property
    def rules(self) -> list[str]:
        return [r.name for r, _, _ in self._bound]

    def apply(self, state: dict[str, Any], packet: MinutePacket) -> list[AlertChange]:
        """Run the packet's rows through the rules, in time order; ``state`` is updated in place."""
        hold: dict[str, list] = state.setdefault("hold", {})
        rstates: dict[str, dict] = state.setdefault("rules", {})
        cols = []
        for name, i, col in self._columns:
            cols.append((name, col.physical(packet.values[i]).tolist(), packet.present[i].tolist()))
        changes: list[AlertChange] = []
        for r in range(packet.rows):
            t = packet.start_time + r
            for name, values, present in cols:
                if present[r]:
                    v = values[r]
                    if isinstance(v, float) and not math.isfinite(v):
                        continue
                    hold[name] = [t, v]
            current = {name: hv[1] for name, hv in hold.items() if 0 <= t - hv[0] <= self.hold_s}
            for rule, stepper, wanted in self._bound:
                row = {s: current[col] for s, col in wanted if col in current}
                changes.extend(stepper.step_row(rstates.setdefault(rule.name, {}), t, row))
        return changes


def rows_from_columns(start: int, columns: Mapping[str, list]) -> list[tuple[int, dict[str, float]]]:
    """Test helper shape: ``{name: [v0, v1, ...]}`` (None = absent) to ``[(t, {name: v}), ...]``."""
    n = max(len(v) for v in columns.values())
    return [(start + r, {k: v[r] for k, v in columns.items() if r < len(v) and v[r] is not None})
            for r in range(n)]

