"""Pure physics of one simulated passenger car: no I/O, no wall clock, no global RNG.

:class:`VehicleModel` runs a small trip state machine (parked -> unlock ->
doors -> ignition on -> engine start -> driving in stop-and-go segments ->
park -> engine off -> exit -> parked ...) and a point-mass longitudinal model
with an 8-speed automatic gearbox, a kinematic bicycle model for steering and
yaw, GNSS position integrated on a sphere, and first-order thermal / electrical
models.  :meth:`VehicleModel.values` returns physical values keyed by the
signal names of ``dbc/reference_car.dbc``; body, lighting and diagnostic
signals are derived in :mod:`simulator.vehicle_outputs`.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass

from simulator import vehicle_outputs

log = logging.getLogger(__name__)

GEAR_RATIOS = (0.0, 4.71, 3.14, 2.11, 1.67, 1.29, 1.00, 0.84, 0.67)  # index = gear, 0 = neutral
REVERSE_RATIO = 3.3
FINAL_DRIVE = 3.2
WHEEL_RADIUS_M = 0.317
WHEELBASE_M = 2.7
TRACK_M = 1.58
STEERING_RATIO = 15.0
IDLE_RPM = 750.0
MASS_KG = 1550.0
EARTH_RADIUS_M = 6_371_000.0
MAX_STEP_S = 0.05

# Seeded start areas: (latitude, longitude, altitude m)
_START_AREAS = ((48.137, 11.575, 520.0), (52.520, 13.405, 34.0), (45.070, 7.687, 240.0),
                (59.329, 18.069, 20.0), (48.857, 2.352, 35.0), (51.507, -0.128, 15.0))


@dataclass(frozen=True)
class Profile:
    """Driving style: speeds (km/h), accelerations (m/s^2), durations (s)."""

    v_range: tuple[float, float]
    accel: float
    decel: float
    stop_prob: float
    go_s: tuple[float, float]
    stop_s: tuple[float, float]
    trip_s: tuple[float, float]
    park_s: tuple[float, float]
    upshift_rpm: float


PROFILES: dict[str, Profile] = {
    "calm": Profile((35, 70), 1.4, 1.8, 0.55, (15, 50), (4, 20), (240, 900), (20, 240), 2000),
    "sporty": Profile((45, 95), 2.8, 3.2, 0.45, (10, 40), (3, 12), (240, 900), (20, 180), 3200),
    "city": Profile((30, 50), 1.6, 2.0, 0.75, (8, 30), (8, 40), (300, 1200), (30, 300), 1900),
    "highway": Profile((90, 130), 1.2, 1.6, 0.15, (60, 240), (5, 15), (900, 2400), (60, 300), 2100),
}

# Trip phases and their fixed durations (s); "drive" and "parked" are open-ended.
_PHASES = {"unlock": 1.0, "doors": 3.5, "seated": 2.0, "ign_on": 2.5, "crank": 1.0, "warmup": 3.0,
           "parking": 3.0, "engine_off": 2.0, "exit": 4.0}
_NEXT = {"parked": "unlock", "unlock": "doors", "doors": "seated", "seated": "ign_on", "ign_on": "crank",
         "crank": "warmup", "warmup": "drive", "drive": "parking", "parking": "engine_off",
         "engine_off": "exit", "exit": "parked"}


def _ou(x: float, mean: float, tau: float, sigma: float, dt: float, rng: random.Random) -> float:
    """One Ornstein-Uhlenbeck step (stationary standard deviation ``sigma``)."""
    a = math.exp(-dt / tau)
    return mean + (x - mean) * a + sigma * math.sqrt(1.0 - a * a) * rng.gauss(0.0, 1.0)


def _lag(x: float, target: float, tau: float, dt: float) -> float:
    """First-order lag of ``x`` towards ``target`` with time constant ``tau``."""
    return target + (x - target) * math.exp(-dt / tau)


def geared_rpm(speed_kmh: float, gear: int) -> float:
    """Engine speed when the drivetrain is locked in ``gear`` at ``speed_kmh``."""
    wheel_rpm = speed_kmh / 3.6 / WHEEL_RADIUS_M * 60.0 / (2.0 * math.pi)
    return wheel_rpm * GEAR_RATIOS[gear] * FINAL_DRIVE


class VehicleModel:
    """One car's physics and state machines, stepped in simulated time."""

    def __init__(self, seed: int, profile: str = "calm", *, time_of_day_h: float | None = None) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
        self.rng = random.Random(seed)
        self.profile = PROFILES[profile]
        rng = self.rng
        lat, lon, alt = rng.choice(_START_AREAS)
        self.lat = math.radians(lat + rng.uniform(-0.05, 0.05))
        self.lon = math.radians(lon + rng.uniform(-0.05, 0.05))
        self.alt = alt + rng.uniform(-10, 10)
        self.heading = rng.uniform(0, 360)  # compass degrees, clockwise from north
        self.time_s = 0.0
        self.tod_h = rng.uniform(0, 24) if time_of_day_h is None else time_of_day_h % 24
        self.ambient = rng.uniform(-2, 30)
        # phase machine: start parked, briefly
        self.phase, self.phase_t, self.phase_len = "parked", 0.0, rng.uniform(2, 8)
        self.trip_len, self.trip_t = 0.0, 0.0
        self.seg, self.seg_t, self.seg_len = "stop", 0.0, 0.0
        self.v = 0.0  # m/s
        self.v_target = 0.0
        self.a = 0.0
        self.pedal = 0.0  # %
        self.brake_bar = 0.0
        self.gear, self.shift_t = 0, 9.0
        self.rpm = 0.0
        self.engine_on = False
        self.run_t = 0.0
        self.kappa, self.kappa_target, self.curve_t = 0.0, 0.0, 0.0
        self.turn_dir, self.turn_left_deg = 0, 0.0  # planned/active turn: +1 left, -1 right
        self.indicator = 0  # 0 off, 1 left, 2 right
        self.steer_deg, self.steer_rate = 0.0, 0.0
        self.grade, self.pitch_rate, self.roll_deg, self.roll_rate = 0.0, 0.0, 0.0, 0.0
        self.gnss_bias_n, self.gnss_bias_e = 0.0, 0.0
        self.wheel_dist = [0.0, 0.0, 0.0, 0.0]
        self.odometer_km = rng.uniform(5_000, 150_000)
        self.trip_km, self.trip_fuel_l, self.trip_time = 0.0, 0.0, 0.0
        self.fuel_l = rng.uniform(18, 50)
        self.fuel_rate = 0.0  # l/h
        self.fuel_cut = False
        self.soc = rng.uniform(75, 92)
        self.batt_i, self.batt_v, self.surface_v = 0.0, 12.6, 0.0
        t0 = self.ambient + rng.uniform(0, 5)
        self.coolant, self.oil, self.trans, self.egt, self.cabin = t0, t0, t0, t0, t0
        self.tyre_temp = [t0] * 4
        self.tyre_cold = [rng.uniform(2.2, 2.5) for _ in range(4)]
        if rng.random() < 0.15:
            self.tyre_cold[rng.randrange(4)] = rng.uniform(1.6, 1.85)  # a slow puncture
        self.body = vehicle_outputs.Body(rng)
        self._out: dict[str, float] = {}
        self._update_outputs(0.0)

    # ------------------------------------------------------------------ public
    def step(self, dt: float) -> None:
        """Advance the simulation by ``dt`` seconds (sub-stepped at ≤ 50 ms)."""
        if dt < 0:
            raise ValueError("dt must be >= 0")
        n = max(1, math.ceil(dt / MAX_STEP_S - 1e-9))
        for _ in range(n):
            self._advance(dt / n)
        self._update_outputs(dt)

    def values(self) -> dict[str, float]:
        """Physical values of every signal the model drives, keyed by reference DBC signal name."""
        return dict(self._out)

    @property
    def speed_kmh(self) -> float:
        """True vehicle speed (no sensor noise)."""
        return self.v * 3.6

    @property
    def driving(self) -> bool:
        """True while in the driving phase (gear D)."""
        return self.phase == "drive"

    # ------------------------------------------------------------------ phases
    def _advance(self, dt: float) -> None:
        self.time_s += dt
        self.tod_h = (self.tod_h + dt / 3600.0) % 24
        self.phase_t += dt
        if self.phase == "drive":
            self._drive_logic(dt)
        elif self.phase_t >= self.phase_len:
            self._enter(_NEXT[self.phase])
        self._powertrain(dt)
        self._lateral(dt)
        self._integrate(dt)
        self._thermal_electric(dt)
        self.body.update(self, dt)

    def _enter(self, phase: str) -> None:
        rng, p = self.rng, self.profile
        self.phase, self.phase_t = phase, 0.0
        self.phase_len = _PHASES.get(phase, 0.0)
        if phase == "parked":
            self.phase_len = rng.uniform(*p.park_s)
        elif phase == "crank":
            self.trip_km = self.trip_fuel_l = self.trip_time = 0.0
        elif phase == "warmup":
            self.engine_on, self.run_t = True, 0.0
        elif phase == "drive":
            self.trip_len, self.trip_t = rng.uniform(*p.trip_s), 0.0
            self._start_stop(rng.uniform(1.0, 3.0))
        elif phase == "parking":
            self.turn_dir, self.turn_left_deg, self.indicator = 0, 0.0, 0
        elif phase == "engine_off":
            self.engine_on = False
            self.surface_v = 0.5
        log.debug("t=%.1f phase %s", self.time_s, phase)

    def _start_stop(self, duration: float) -> None:
        self.seg, self.seg_t, self.seg_len, self.v_target = "stop", 0.0, duration, 0.0
        self.turn_dir = self.rng.choice((-1, 1)) if self.rng.random() < 0.4 else 0

    def _drive_logic(self, dt: float) -> None:
        rng, p = self.rng, self.profile
        self.trip_t += dt
        self.seg_t += dt
        if self.seg == "stop":
            self.v_target = 0.0
            if self.turn_dir and self.seg_len - self.seg_t < 3.0:
                self.indicator = 1 if self.turn_dir > 0 else 2
            if self.seg_t >= self.seg_len:
                if self.trip_t >= self.trip_len:
                    self._enter("parking")
                    return
                self.seg, self.seg_t, self.seg_len = "go", 0.0, rng.uniform(*p.go_s)
                self.v_target = rng.uniform(*p.v_range) / 3.6
                if self.turn_dir:
                    self.turn_left_deg = 90.0
        elif self.seg == "go":
            if self.turn_left_deg <= 0 and rng.random() < dt / 8.0:
                self.v_target = max(3.0, self.v_target + rng.gauss(0, 1.0))
            if self.seg_t >= self.seg_len and self.turn_left_deg <= 0:
                if rng.random() < p.stop_prob or self.trip_t >= self.trip_len:
                    self.seg, self.seg_t = "brake", 0.0
                else:
                    self.seg, self.seg_t, self.seg_len = "go", 0.0, rng.uniform(*p.go_s)
                    self.v_target = rng.uniform(*p.v_range) / 3.6
        elif self.seg == "brake":
            self.v_target = 0.0
            if self.v <= 0.0:
                self._start_stop(rng.uniform(*p.stop_s))

    # ------------------------------------------------------------------ dynamics
    def _powertrain(self, dt: float) -> None:
        p = self.profile
        if self.phase == "drive":
            target = self.v_target
            if self.turn_left_deg > 0:
                target = min(target, 18 / 3.6)
            if self.seg == "brake":
                want = -p.decel if self.v > 0.0 else 0.0
            else:
                want = max(-p.decel, min(p.accel, 0.5 * (target - self.v)))
        else:
            want = -2.0 if self.v > 0 else 0.0
        self.a += (want - self.a) * min(1.0, dt / 0.4)  # jerk-limited driver
        self.v = max(0.0, self.v + self.a * dt)
        if self.v == 0.0 and self.a < 0:
            self.a = 0.0
        f_res = 0.39 * self.v ** 2 + 0.012 * MASS_KG * 9.81 + MASS_KG * 9.81 * self.grade
        f_need = MASS_KG * self.a + (f_res if self.v > 0.1 else 0.0)
        moving_off = self.phase == "drive" and self.seg == "go"
        self.pedal = max(0.0, min(100.0, f_need / 60.0)) if moving_off and f_need > 0 else 0.0
        coast = -f_res / MASS_KG - 0.3
        brake = (coast - self.a) * 10.0 if self.a < coast else 0.0
        if self.v == 0.0 and self.phase == "drive" and self.seg != "go":
            brake = 18.0  # driver holds the car at a standstill
        self.brake_bar = max(0.0, min(240.0, brake))
        self.fuel_cut = self.engine_on and self.pedal == 0.0 and self.v > 5.0 and self.a < 0
        # gearbox
        self.shift_t += dt
        kmh = self.v * 3.6
        if self.phase == "drive":
            g = max(1, self.gear)
            if g < 8 and geared_rpm(kmh, g) > p.upshift_rpm + 15 * self.pedal:
                g += 1
            elif g > 1 and geared_rpm(kmh, g) < 1100:
                g -= 1
            if g != self.gear:
                self.gear, self.shift_t = g, 0.0
        else:
            self.gear = 0
        if self.phase == "crank":
            target_rpm = 220.0 + 80 * self.rng.random()
        elif not self.engine_on:
            target_rpm = 0.0
        elif self.gear >= 1:
            slip = 0.0 if self.converter_locked else 600.0 * self.pedal / 100.0 + 150.0
            target_rpm = max(geared_rpm(kmh, self.gear), IDLE_RPM + slip)
        else:
            target_rpm = IDLE_RPM + (250.0 if self.coolant < 40 else 0.0)
        self.rpm = _lag(self.rpm, target_rpm, 0.08 if self.engine_on else 0.15, dt)
        if self.engine_on:
            self.run_t += dt

    @property
    def converter_locked(self) -> bool:
        """Torque converter lock-up: 3rd gear and above, not mid-shift."""
        return self.gear >= 3 and self.shift_t > 0.4

    def _lateral(self, dt: float) -> None:
        rng, v = self.rng, self.v
        self.curve_t -= dt
        if self.turn_left_deg > 0 and self.seg == "go" and v > 0.5:
            self.kappa_target = self.turn_dir / 12.0
        elif self.curve_t <= 0:
            self.curve_t = rng.uniform(5, 20)
            limit = min(1 / 150.0, 1.8 / max(v * v, 1.0))
            self.kappa_target = max(-limit, min(limit, rng.gauss(0, 1 / 900.0)))
            if self.turn_left_deg <= 0 and self.seg == "go":
                self.indicator = 0
        rate = 0.05 * dt
        self.kappa += max(-rate, min(rate, self.kappa_target - self.kappa))
        if v < 0.1 and self.seg != "go":
            self.kappa *= 0.999
        yaw = v * self.kappa  # rad/s, positive = left
        if self.turn_left_deg > 0:
            self.turn_left_deg -= abs(math.degrees(yaw)) * dt
            if self.turn_left_deg <= 0:
                self.turn_dir, self.kappa_target, self.curve_t, self.indicator = 0, 0.0, 2.0, 0
        self.heading = (self.heading - math.degrees(yaw) * dt) % 360.0
        steer = STEERING_RATIO * math.degrees(math.atan(WHEELBASE_M * self.kappa))
        self.steer_rate = (steer - self.steer_deg) / dt if dt > 0 else 0.0
        self.steer_deg = steer
        roll = -0.4 * v * yaw
        self.roll_rate = (roll - self.roll_deg) / dt if dt > 0 else 0.0
        self.roll_deg = roll

    def _integrate(self, dt: float) -> None:
        rng, v = self.rng, self.v
        old_grade = self.grade
        if v > 0:
            self.grade = _ou(self.grade, 0.0, 60.0, 0.025, dt * min(1.0, v / 10), rng)
        self.pitch_rate = math.degrees(self.grade - old_grade) / dt if dt > 0 else 0.0
        dist = v * dt
        h = math.radians(self.heading)
        self.lat += dist * math.cos(h) / EARTH_RADIUS_M
        self.lon += dist * math.sin(h) / (EARTH_RADIUS_M * math.cos(self.lat))
        self.alt += dist * self.grade
        self.gnss_bias_n = _ou(self.gnss_bias_n, 0.0, 30.0, 0.8, dt, rng)
        self.gnss_bias_e = _ou(self.gnss_bias_e, 0.0, 30.0, 0.8, dt, rng)
        yaw = v * self.kappa
        for i, side in enumerate((1, -1, 1, -1)):  # FL, FR, RL, RR; left wheels inside on a left turn
            self.wheel_dist[i] += max(0.0, v - side * yaw * TRACK_M / 2) * dt
        self.odometer_km += dist / 1000.0
        if self.engine_on:
            self.trip_km += dist / 1000.0
            self.trip_time += dt
            power_kw = max(0.0, MASS_KG * self.a * v + (0.39 * v * v + 182.0) * v) / 1000.0 / 0.9
            self.fuel_rate = 0.0 if self.fuel_cut else 0.75 + 0.32 * (power_kw + 1.0)
            used = self.fuel_rate * dt / 3600.0
            self.fuel_l = max(0.0, self.fuel_l - used)
            self.trip_fuel_l += used
        else:
            self.fuel_rate = 0.0

    def _thermal_electric(self, dt: float) -> None:
        amb, kmh, run = self.ambient, self.v * 3.6, self.engine_on
        self.ambient = _ou(amb, amb, 600.0, 0.05, dt, self.rng)
        load = self.pedal / 100.0
        self.coolant = _lag(self.coolant, 90.0 + 4 * load if run else amb, 200.0 if run else 1800.0, dt)
        self.oil = _lag(self.oil, 100.0 + 8 * load if run else amb, 420.0 if run else 2400.0, dt)
        self.trans = _lag(self.trans, 80.0 if run else amb, 600.0 if run else 2400.0, dt)
        self.egt = _lag(self.egt, 330.0 + 450 * load if run else amb, 20.0 if run else 300.0, dt)
        self.cabin = _lag(self.cabin, 21.5 if run else amb, 400.0 if run else 1500.0, dt)
        for i in range(4):
            self.tyre_temp[i] = _lag(self.tyre_temp[i], amb + 4.0 + 0.22 * kmh, 400.0, dt)
        # 12 V battery: 70 Ah, OCV 11.9..12.8 V, 10 mOhm internal resistance
        lights = 10.0 if self.body.low_beam else 0.0
        if self.phase == "crank":
            i = -160.0 - 40.0 * self.rng.random()
        elif run:
            i = 4.0 + 35.0 * math.exp(-self.run_t / 90.0) * (1.0 - self.soc / 100.0) * 3.0
        elif self.body.ignition >= 2:
            i = -14.0 - lights
        elif self.phase == "parked" and self.phase_t > 60.0:
            i = -0.04 - lights
        else:
            i = -2.5 - lights
        self.batt_i = i
        self.soc = max(5.0, min(100.0, self.soc + i * dt / 3600.0 / 70.0 * 100.0))
        self.surface_v = _lag(self.surface_v, 0.0, 300.0, dt)
        ocv = 11.9 + 0.009 * self.soc + self.surface_v
        self.batt_v = 14.2 - 0.1 * max(0.0, self.coolant - 60) / 30 if run else ocv + i * 0.01

    # ------------------------------------------------------------------ outputs
    def _update_outputs(self, dt: float) -> None:
        self._out = vehicle_outputs.compute(self, dt)
