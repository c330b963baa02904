"""The packet-mode fleet: vehicles grouped by model, stepped at 1 Hz with numpy, cut into packets.

:class:`FleetGenerator` yields, window by window (``interval_s`` seconds)
and group by group, the :class:`MinutePacket` objects of every vehicle.
Groups have a fixed size, so the content depends only on the
:class:`~simulator.fleet_spec.FleetSpec` and is reproducible.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import dbc as dbc_files
from minute_packet import MinutePacket, Schema, schema_from_dbc

from .fleet_packets import WindowBuilder
from .fleet_physics import FleetPhysics
from .fleet_signals import fleet_signals
from .fleet_spec import FleetSpec, VehiclePlan, plan_fleet

log = logging.getLogger(__name__)

GROUP_SIZE = 512


@dataclasses.dataclass
class Group:
    """Vehicles of one model simulated together."""

    index: int
    model: str
    plans: list[VehiclePlan]
    physics: FleetPhysics
    builder: WindowBuilder


@dataclasses.dataclass(frozen=True)
class GroupWindow:
    """The packets of one group for one window."""

    group: Group
    window: int
    t0: int
    packets: list[MinutePacket]


class FleetGenerator:
    """Generates the packets of a fleet spec, window after window."""

    def __init__(self, spec: FleetSpec, *, group_size: int = GROUP_SIZE) -> None:
        self.spec = spec
        self.plans = plan_fleet(spec)
        self.schemas: dict[str, Schema] = {}
        for m in spec.models:
            self.schemas[m.name] = schema_from_dbc(dbc_files.load(m.dbc_path), source=m.dbc_path.name)
        self.groups: list[Group] = []
        probe: dict[str, Any] | None = None
        for model in self.schemas:
            members = [p for p in self.plans if p.model == model]
            for k in range(0, len(members), group_size):
                chunk = members[k:k + group_size]
                gi = len(self.groups)
                physics = FleetPhysics(chunk, spec.start_time, group_seed=spec.seed * 1_000_003 + gi)
                if probe is None:
                    probe = fleet_signals(physics)
                builder = WindowBuilder(self.schemas[model], model, [p.vehicle_id for p in chunk],
                                        [p.boot_id for p in chunk], spec.interval_s, set(probe),
                                        seed=spec.seed * 7919 + gi)
                self.groups.append(Group(gi, model, chunk, physics, builder))
        self.windows = (spec.end_time - spec.start_time) // spec.interval_s
        log.debug("fleet of %d vehicles in %d groups, %d windows", len(self.plans), len(self.groups), self.windows)

    def window_start(self, window: int) -> int:
        return self.spec.start_time + window * self.spec.interval_s

    def generate(self, group: Group, window: int) -> GroupWindow:
        """Step one group through one window and cut its packets (windows must come in order)."""
        t0 = self.window_start(window)
        last = self.spec.end_time - 1
        for row in range(self.spec.interval_s):
            now = t0 + row
            group.physics.step(now)
            values = fleet_signals(group.physics)
            group.builder.set_row(row, values)
            group.physics.scenarios.observe(now, values, now == last)
        return GroupWindow(group, window, t0, group.builder.packets(t0, [window] * len(group.plans)))

    def __iter__(self) -> Iterator[GroupWindow]:
        for window in range(self.windows):
            for group in self.groups:
                yield self.generate(group, window)

    def events(self) -> dict[int, dict[str, Any]]:
        """Observed scenario events so far, by vehicle index."""
        out: dict[int, dict[str, Any]] = {}
        for g in self.groups:
            for local, event in g.physics.scenarios.observed.items():
                plan = g.plans[local]
                out[plan.index] = dict(event, seq=(event["t"] - self.spec.start_time) // self.spec.interval_s)
        return out
