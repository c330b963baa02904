"""CAN mode of the fleet simulator: one :class:`~simulator.can_vehicle.CanVehicle` per planned vehicle.

Each vehicle runs the CAN-level model with the CAN profile matching its
driver profile, from its model's DBC. Scenarios are not injected in this
mode (the CAN-level model runs its own trips). Putting the frames on buses
read by real gateways is the application's job (:mod:`dcm.fleet_can`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import dbc as dbc_files

from .can_vehicle import CanVehicle
from .fleet_spec import PROFILES, FleetSpec, VehiclePlan, plan_fleet


@dataclasses.dataclass(frozen=True)
class FleetCar:
    """One planned vehicle of the fleet with its CAN-level model."""

    plan: VehiclePlan
    dbc_path: Path
    vehicle: CanVehicle


def fleet_cars(spec: FleetSpec) -> list[FleetCar]:
    """The fleet's vehicles, in plan order, each simulating from ``spec.start_time``."""
    models = {m.name: m for m in spec.models}
    cars = []
    for plan in plan_fleet(spec):
        model = models[plan.model]
        vehicle = CanVehicle(dbc_files.load(model.dbc_path), seed=plan.seed, start_time=float(spec.start_time),
                             profile=PROFILES[plan.profile].can_profile)
        cars.append(FleetCar(plan, Path(model.dbc_path), vehicle))
    return cars
