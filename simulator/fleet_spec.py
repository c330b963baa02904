"""What a simulated fleet is made of: models, driver profiles, scenarios and fault rates.

:func:`plan_fleet` turns a :class:`FleetSpec` into one :class:`VehiclePlan`
per vehicle, deterministically from the seed: model, driver profile, boot
id, and the scenarios injected into it (at most one per vehicle, at known
times). Nothing here touches the network or the clock.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path
from typing import Any

import dbc as dbc_files
from dcm_base.errors import InputError

from .vehicle_model import Profile

FLEET_SPEC_VERSION = 1
VARIANT_2027_DBC = Path(dbc_files.__file__).with_name("reference_car_2027.dbc")


class FleetSpecError(InputError, ValueError):
    """A fleet specification is inconsistent (interval, duration, shares...)."""


@dataclasses.dataclass(frozen=True)
class VehicleModelSpec:
    """One vehicle model: its lake partition name, its DBC and its share of the fleet."""

    name: str
    dbc_path: Path
    share: float = 1.0


DEFAULT_MODELS: tuple[VehicleModelSpec, ...] = (
    VehicleModelSpec("reference-car", dbc_files.REFERENCE_DBC, 0.6),
    VehicleModelSpec("reference-car-2027", VARIANT_2027_DBC, 0.4),
)


@dataclasses.dataclass(frozen=True)
class DriverProfile(Profile):
    """A fleet driving style (the CAN-level model's fields, at 1 Hz) and the CAN-level
    :mod:`simulator.vehicle_model` profile that matches it in CAN mode."""

    can_profile: str = "calm"


PROFILES: dict[str, DriverProfile] = {
    "calm": DriverProfile((35, 70), 1.4, 1.8, 0.55, (15, 50), (4, 20), (300, 1200), (60, 600), 2000, "calm"),
    "aggressive": DriverProfile((50, 120), 3.0, 3.5, 0.4, (10, 40), (3, 10), (300, 1200), (60, 400), 3200, "sporty"),
    "teen": DriverProfile((40, 105), 2.6, 3.2, 0.5, (8, 30), (2, 12), (200, 900), (60, 900), 2800, "city"),
}
PROFILE_SHARES = {"calm": 0.6, "aggressive": 0.25, "teen": 0.15}

# Scenario kinds: seconds of lead-in the vehicle is steered for before the event, and seconds after it.
SCENARIO_WINDOWS: dict[str, tuple[int, int]] = {
    "headlights_left_on": (150, 120),
    "battery_decline": (60, 0),  # lasts until the end of the run
    "harsh_braking": (60, 10),
    "rapid_acceleration": (30, 10),
    "sharp_turn": (40, 10),
    "speeding": (60, 60),
    "geofence_exit": (10, 90),
    "dtc": (0, 0),
    "crash": (60, 0),  # the vehicle stays disabled afterwards
}
SCENARIO_KINDS = tuple(SCENARIO_WINDOWS)
SPEED_LIMIT_KMH = 130.0
DTC_CODE = 0x042000  # P0420: catalyst efficiency below threshold
GEOFENCE_RADIUS_M = 800.0
BATTERY_DECLINE_V_PER_DAY = 0.5


@dataclasses.dataclass(frozen=True)
class ScenarioPlan:
    """A scenario injected into one vehicle: it takes effect at ``t`` (Unix s)."""

    kind: str
    t: int
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def window(self) -> tuple[int, int]:
        """Seconds the vehicle is steered by the scenario: ``[t - lead, t + tail]``."""
        lead, tail = SCENARIO_WINDOWS[self.kind]
        return self.t - lead, self.t + tail


@dataclasses.dataclass(frozen=True)
class FaultRates:
    """Fractions of packets (or connections, for ``disconnect``) hit by each fault."""

    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    disconnect: float = 0.0  # per connection and interval: drop the connection abruptly
    delay_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("duplicate", "delay", "reorder", "corrupt", "disconnect"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FleetSpecError(f"fault rate {name} must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class FleetSpec:
    """Everything that determines a fleet run's content (and so its manifest)."""

    vehicles: int
    duration_s: int
    start_time: int
    seed: int = 1
    interval_s: int = 60
    models: tuple[VehicleModelSpec, ...] = DEFAULT_MODELS
    profiles: dict[str, float] = dataclasses.field(default_factory=lambda: dict(PROFILE_SHARES))
    scenarios_per_kind: int = 1
    scenario_kinds: tuple[str, ...] = SCENARIO_KINDS
    battery_decline_v_per_day: float = BATTERY_DECLINE_V_PER_DAY
    faults: FaultRates = FaultRates()
    id_prefix: str = "SIM"

    def __post_init__(self) -> None:
        if self.vehicles < 1 or self.duration_s < 1:
            raise FleetSpecError("vehicles and duration must be positive")
        if self.interval_s < 1 or 60 % self.interval_s:
            raise FleetSpecError("interval must divide 60 s (packets never cross a minute boundary)")
        if self.start_time % self.interval_s:
            raise FleetSpecError("start time must be a multiple of the interval")
        if not self.models or any(m.share <= 0 for m in self.models):
            raise FleetSpecError("at least one model, every share positive")
        unknown = set(self.profiles) - set(PROFILES) | set(self.scenario_kinds) - set(SCENARIO_KINDS)
        if unknown:
            raise FleetSpecError(f"unknown profiles or scenarios: {sorted(unknown)}")

    @property
    def end_time(self) -> int:
        """First second after the run (the duration is rounded up to whole intervals)."""
        n = -(-self.duration_s // self.interval_s)
        return self.start_time + n * self.interval_s

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["models"] = [{"name": m.name, "dbc": Path(m.dbc_path).name, "share": m.share} for m in self.models]
        d["version"] = FLEET_SPEC_VERSION
        return d


@dataclasses.dataclass(frozen=True)
class VehiclePlan:
    """One simulated vehicle."""

    index: int
    vehicle_id: str
    model: str
    profile: str
    seed: int
    boot_id: bytes
    scenario: ScenarioPlan | None = None


def _shares(items: dict[str, float], n: int, rng: random.Random) -> list[str]:
    """``n`` labels in proportion to ``items``' shares (largest remainder), shuffled."""
    total = sum(items.values())
    exact = {k: v / total * n for k, v in items.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    labels = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(labels)
    return labels


def _scenario(kind: str, spec: FleetSpec, rng: random.Random) -> ScenarioPlan | None:
    lead, tail = SCENARIO_WINDOWS[kind]
    lo, hi = spec.start_time + lead, spec.end_time - tail - 1
    if kind in ("battery_decline", "crash"):
        hi = spec.end_time - 60  # leave a minute to see it
    if hi < lo:
        return None
    t = rng.randint(lo, hi)
    params: dict[str, Any] = {}
    if kind == "speeding":
        params = {"limit_kmh": SPEED_LIMIT_KMH, "target_kmh": 150.0}
    elif kind == "dtc":
        params = {"code": DTC_CODE, "status": 3}
    elif kind == "geofence_exit":
        params = {"radius_m": GEOFENCE_RADIUS_M}
    elif kind == "battery_decline":
        params = {"v_per_day": spec.battery_decline_v_per_day}
    elif kind == "crash":
        params = {"severity": rng.randint(2, 5)}
    elif kind == "harsh_braking":
        params = {"decel_mps2": 7.0}
    elif kind == "rapid_acceleration":
        params = {"accel_mps2": 4.5}
    elif kind == "sharp_turn":
        params = {"lateral_mps2": 6.0}
    return ScenarioPlan(kind, t, params)


def plan_fleet(spec: FleetSpec) -> list[VehiclePlan]:
    """The vehicles of a fleet, deterministic in ``spec``."""
    rng = random.Random(f"fleet:{spec.seed}")
    models = _shares({m.name: m.share for m in spec.models}, spec.vehicles, rng)
    profiles = _shares(spec.profiles, spec.vehicles, rng)
    scenarios: dict[int, ScenarioPlan] = {}
    free = list(range(spec.vehicles))
    rng.shuffle(free)
    for kind in spec.scenario_kinds:
        for _ in range(spec.scenarios_per_kind):
            if not free:
                break
            plan = _scenario(kind, spec, rng)
            if plan is not None:
                scenarios[free.pop()] = plan
    out = []
    for i in range(spec.vehicles):
        boot = hashlib.sha256(f"boot:{spec.seed}:{i}".encode()).digest()[:16]
        out.append(VehiclePlan(i, f"{spec.id_prefix}{spec.seed:04d}V{i:06d}", models[i], profiles[i],
                               rng.getrandbits(32), boot, scenarios.get(i)))
    return out
