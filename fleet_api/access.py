"""What a token may see: its scopes resolved against the operational tables.

A vehicle is visible when a scope names it, names its fleet, names a driver assigned to it, or is
``admin``/``read``. The raw VIN of a visible vehicle is shown only to ``admin`` and to tokens
with the ``vin`` scope (and only where the operational tables have it). A driver is visible when a scope names them or they were assigned to a visible
vehicle (for fleet and vehicle scopes). Anything else answers 404, never 403, so ids do not leak.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from .tokens import Token


@dataclasses.dataclass(frozen=True)
class Catalog:
    """The operational facts access decisions need (masked vehicle ids)."""

    fleet_of: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # vehicle -> fleet
    vehicles_of_driver: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    drivers_of_vehicle: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Access:
    token_id: str
    admin: bool = False
    everything: bool = False
    fleets: frozenset[str] = frozenset()
    vehicles: frozenset[str] = frozenset()
    drivers: frozenset[str] = frozenset()
    vin: bool = False  # may see raw VINs (of the vehicles it sees)

    @classmethod
    def of(cls, token: Token) -> Access:
        kinds: dict[str, set[str]] = {"fleet": set(), "vehicle": set(), "driver": set()}
        for s in token.scopes:
            kind, _, value = s.partition(":")
            if kind in kinds:
                kinds[kind].add(value)
        admin = "admin" in token.scopes
        return cls(token.id, admin, admin or "read" in token.scopes, frozenset(kinds["fleet"]),
                   frozenset(kinds["vehicle"]), frozenset(kinds["driver"]), admin or "vin" in token.scopes)

    def sees_vehicle(self, vehicle: str, catalog: Catalog) -> bool:
        if self.everything or vehicle in self.vehicles:
            return True
        if self.fleets and catalog.fleet_of.get(vehicle) in self.fleets:
            return True
        return any(vehicle in catalog.vehicles_of_driver.get(d, ()) for d in self.drivers)

    def sees_driver(self, driver: str | None, catalog: Catalog) -> bool:
        if driver is None:
            return self.everything
        if self.everything or driver in self.drivers:
            return True
        return any(self._direct(v, catalog) for v in catalog.vehicles_of_driver.get(driver, ()))

    def _direct(self, vehicle: str, catalog: Catalog) -> bool:
        return vehicle in self.vehicles or (bool(self.fleets) and catalog.fleet_of.get(vehicle) in self.fleets)

    def sees_trip(self, vehicle: str, driver: str | None, catalog: Catalog) -> bool:
        """Driver scopes see their own trips; vehicle and fleet scopes every trip of their vehicles."""
        if self.everything:
            return True
        if driver is not None and driver in self.drivers:
            return True
        return self._direct(vehicle, catalog)

    def filter_vehicles(self, vehicles: Iterable[str], catalog: Catalog) -> list[str]:
        return [v for v in vehicles if self.sees_vehicle(v, catalog)]
