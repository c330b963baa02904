"""Vectorised 1 Hz physics for many vehicles at once (numpy arrays over vehicles).

The same shape as :class:`simulator.vehicle_model.VehicleModel`, at one
step per second instead of 50: a parked/driving trip machine with
stop-and-go segments, a jerk-limited point mass with an 8-speed gearbox,
curvature-driven heading and GNSS on a sphere, fuel burned from the power
needed, thermal lags and a 12 V battery. Scenario overrides
(:mod:`simulator.fleet_scenarios`) steer individual vehicles. Signals are
derived from this state in :mod:`simulator.fleet_signals`.
"""
from __future__ import annotations

import numpy as np

from .fleet_scenarios import Overrides, ScenarioTable
from .fleet_spec import PROFILES, VehiclePlan
from .vehicle_model import FINAL_DRIVE, GEAR_RATIOS, IDLE_RPM, MASS_KG, WHEEL_RADIUS_M

EARTH_RADIUS_M = 6_371_000.0
START_AREAS = np.array([(48.137, 11.575, 520.0), (52.520, 13.405, 34.0), (45.070, 7.687, 240.0),
                        (59.329, 18.069, 20.0), (48.857, 2.352, 35.0), (51.507, -0.128, 15.0)])
ENGINE_START_S = 5  # seconds from entering the car to a running engine
PARKED, DRIVING, DISABLED = 0, 1, 2
STOP, GO, BRAKE = 0, 1, 2
_RPM_PER_KMH = 60.0 / (3.6 * WHEEL_RADIUS_M * 2 * np.pi) * FINAL_DRIVE * np.array(GEAR_RATIOS[1:])


class FleetPhysics:
    """State of one group of vehicles; :meth:`step` advances it by one second."""

    def __init__(self, plans: list[VehiclePlan], start_time: int, group_seed: int) -> None:
        n = len(plans)
        self.n = n
        self.rng = rng = np.random.default_rng(group_seed)
        self.scenarios = ScenarioTable(plans)
        prof = [PROFILES[p.profile] for p in plans]

        def col(get) -> np.ndarray:
            return np.array([get(p) for p in prof], dtype=float)

        self.v_lo, self.v_hi = col(lambda p: p.v_range[0]) / 3.6, col(lambda p: p.v_range[1]) / 3.6
        self.accel_max, self.decel_max = col(lambda p: p.accel), col(lambda p: p.decel)
        self.stop_prob, self.upshift = col(lambda p: p.stop_prob), col(lambda p: p.upshift_rpm)
        self.go_s = np.stack([col(lambda p: p.go_s[0]), col(lambda p: p.go_s[1])])
        self.stop_s = np.stack([col(lambda p: p.stop_s[0]), col(lambda p: p.stop_s[1])])
        self.trip_s = np.stack([col(lambda p: p.trip_s[0]), col(lambda p: p.trip_s[1])])
        self.park_s = np.stack([col(lambda p: p.park_s[0]), col(lambda p: p.park_s[1])])
        area = START_AREAS[rng.integers(0, len(START_AREAS), n)]
        self.lat = area[:, 0] + rng.uniform(-0.05, 0.05, n)
        self.lon = area[:, 1] + rng.uniform(-0.05, 0.05, n)
        self.alt = area[:, 2] + rng.uniform(-10, 10, n)
        self.heading = rng.uniform(0, 360, n)
        self.tod_h = (start_time % 86400) / 3600.0 + rng.uniform(-0.5, 0.5, n)  # local time spread
        self.ambient = rng.uniform(-2, 30, n)
        driving = rng.random(n) < 0.5
        self.phase = np.where(driving, DRIVING, PARKED)
        self.phase_t = np.where(driving, 60.0, 0.0)
        self.phase_len = self._uniform(self.park_s) * rng.random(n)
        self.trip_len = self._uniform(self.trip_s)
        self.trip_t = np.where(driving, rng.uniform(0, 200, n), 0.0)
        self.seg = np.where(driving, GO, STOP)
        self.seg_t = np.zeros(n)
        self.seg_len = self._uniform(self.go_s)
        self.v_target = np.where(driving, self._uniform(np.stack([self.v_lo, self.v_hi])), 0.0)
        self.v = self.v_target.copy()
        self.a = np.zeros(n)
        self.kappa = np.zeros(n)
        self.kappa_target = np.zeros(n)
        self.curve_t = rng.uniform(0, 10, n)
        self.had_trip = np.zeros(n, bool)
        self.run_t = np.where(driving, 600.0, 0.0)
        self.odometer = rng.uniform(5_000, 150_000, n)
        self.trip_km = np.where(driving, rng.uniform(0, 5, n), 0.0)
        self.fuel_l = rng.uniform(15, 50, n)
        self.fuel_rate = np.zeros(n)
        self.soc = rng.uniform(75, 92, n)
        self.batt_i = np.zeros(n)
        self.batt_v = np.full(n, 12.6)
        warm = self.ambient + rng.uniform(0, 5, n)
        self.coolant = np.where(driving, 90.0, warm)
        self.oil = np.where(driving, 100.0, warm)
        self.cabin = np.where(driving, 21.5, warm)
        self.gear = np.zeros(n, dtype=np.int64)
        self.rpm = np.zeros(n)
        self.pedal = np.zeros(n)
        self.brake_bar = np.zeros(n)
        self.engine_on = driving.copy()
        self.headlight_switch = np.where(rng.random(n) < 0.8, 3, 2)
        self.occupants = rng.integers(1, 4, n)
        self.dtc_prior = rng.random(n) < 0.1  # a pending DTC from before the run
        self.flags = self.scenarios.flags(start_time)
        self.now = start_time
        self.lights = np.zeros(n, bool)

    def _uniform(self, bounds: np.ndarray) -> np.ndarray:
        return bounds[0] + (bounds[1] - bounds[0]) * self.rng.random(self.n)

    def step(self, now: int) -> None:
        """Advance every vehicle to second ``now`` (one second after the previous step)."""
        rng, n = self.rng, self.n
        o: Overrides = self.scenarios.overrides(now, self.v)
        self.flags = flags = self.scenarios.flags(now)
        self.now = now
        self._trips(o)
        self.phase = np.where(flags.crashed, DISABLED, self.phase)
        drive = self.phase == DRIVING
        self.engine_on = (drive & (self.phase_t >= ENGINE_START_S)) | (
            flags.crashed & (now - self.scenarios.t < 2) & self.engine_on)
        # longitudinal
        vt = np.where(self.seg == GO, self.v_target, 0.0)
        vt = np.where(np.isnan(o.v_target), vt, o.v_target)
        vt = np.where(self.engine_on, vt, 0.0)
        accel = np.where(o.boost_accel, np.maximum(self.accel_max, 3.0), self.accel_max)
        want = np.clip(0.6 * (vt - self.v), -self.decel_max, accel)
        want = np.where(drive & (self.seg == BRAKE) & np.isnan(o.v_target), -self.decel_max, want)
        a = self.a + (want - self.a) * 0.7
        a = np.where(np.isnan(o.accel), a, o.accel)
        v_new = np.maximum(0.0, self.v + a)
        steered = (self.phase == DRIVING) | ~np.isnan(o.accel)
        v_new = np.where(steered, v_new, np.maximum(0.0, self.v - 3.0))
        v_new = np.where(flags.crashed & (now > self.scenarios.t), 0.0, v_new)
        self.a = v_new - self.v
        v_avg = (v_new + self.v) / 2
        self.v = v_new
        # lateral
        self.curve_t -= 1
        new_curve = self.curve_t <= 0
        limit = np.minimum(1 / 150.0, 1.8 / np.maximum(self.v ** 2, 1.0))
        self.kappa_target = np.where(new_curve, np.clip(rng.normal(0, 1 / 900.0, n), -limit, limit),
                                     np.clip(self.kappa_target, -limit, limit))
        self.curve_t = np.where(new_curve, rng.uniform(5, 20, n), self.curve_t)
        self.kappa += np.clip(self.kappa_target - self.kappa, -0.002, 0.002)
        self.kappa = np.where(np.isnan(o.kappa), self.kappa, o.kappa)
        self.heading = (self.heading - np.degrees(v_avg * self.kappa)) % 360.0
        h = np.radians(self.heading)
        self.lat += np.degrees(v_avg * np.cos(h) / EARTH_RADIUS_M)
        self.lon += np.degrees(v_avg * np.sin(h) / (EARTH_RADIUS_M * np.cos(np.radians(self.lat))))
        self.odometer += v_avg / 1000.0
        self.trip_km += np.where(self.engine_on, v_avg / 1000.0, 0.0)
        self._powertrain(drive)
        self._thermal_electric(flags.lights_stuck, flags.battery_drain)
        self.tod_h = (self.tod_h + 1 / 3600.0) % 24

    def _trips(self, o: Overrides) -> None:
        rng, n = self.rng, self.n
        self.phase_t += 1
        self.seg_t += 1
        parked, drive = self.phase == PARKED, self.phase == DRIVING
        start = parked & (((self.phase_t >= self.phase_len) & ~o.force_park) | o.force_drive)
        trip_over = self.trip_t >= self.trip_len
        end = drive & (((self.seg == STOP) & (self.seg_t >= self.seg_len) & trip_over & ~o.force_drive)
                       | (o.force_park & (self.v <= 0.5)))
        self.phase = np.where(start, DRIVING, np.where(end, PARKED, self.phase))
        self.phase_t = np.where(start | end, 0.0, self.phase_t)
        self.phase_len = np.where(end, self._uniform(self.park_s), self.phase_len)
        self.had_trip |= end
        self.fuel_l = np.where(end & (self.fuel_l < 8), 50.0, self.fuel_l)  # refuelled while parked
        self.trip_len = np.where(start, self._uniform(self.trip_s), self.trip_len)
        self.trip_t = np.where(start, 0.0, self.trip_t + (self.phase == DRIVING))
        self.trip_km = np.where(start, 0.0, self.trip_km)
        self.run_t = np.where(start, 0.0, self.run_t + self.engine_on)
        self.seg = np.where(start, STOP, self.seg)
        self.seg_t = np.where(start, 0.0, self.seg_t)
        self.seg_len = np.where(start, ENGINE_START_S + 2.0, self.seg_len)
        drive = self.phase == DRIVING
        seg, done = self.seg, self.seg_t >= self.seg_len
        to_go = drive & (seg == STOP) & done & (~trip_over | o.force_drive)
        go_done = drive & (seg == GO) & done
        to_brake = go_done & ((rng.random(n) < self.stop_prob) | trip_over) & ~o.force_drive
        new_go = (go_done & ~to_brake) | to_go
        to_stop = drive & (seg == BRAKE) & (self.v <= 0.0)
        seg = np.where(to_brake | (drive & o.force_park), BRAKE, seg)
        seg = np.where(new_go, GO, np.where(to_stop, STOP, seg))
        self.v_target = np.where(new_go, self._uniform(np.stack([self.v_lo, self.v_hi])), self.v_target)
        wander = (seg == GO) & (rng.random(n) < 1 / 8.0)
        self.v_target = np.clip(np.where(wander, self.v_target + rng.normal(0, 1.0, n), self.v_target),
                                3.0, self.v_hi)
        self.seg_len = np.where(new_go, self._uniform(self.go_s),
                                np.where(to_stop, self._uniform(self.stop_s), self.seg_len))
        self.seg_t = np.where(new_go | to_stop | to_brake, 0.0, self.seg_t)
        self.seg = seg

    def _powertrain(self, drive: np.ndarray) -> None:
        kmh = self.v * 3.6
        rpm_g = kmh[:, None] * _RPM_PER_KMH[None, :]  # n x 8
        ok = rpm_g <= self.upshift[:, None]
        gear = np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, 8)
        self.gear = np.where(drive, gear, 0)
        geared = rpm_g[np.arange(self.n), np.maximum(gear, 1) - 1]
        f_res = np.where(self.v > 0.1, 0.39 * self.v ** 2 + 0.012 * MASS_KG * 9.81, 0.0)
        f_need = MASS_KG * self.a + f_res
        self.pedal = np.where(self.engine_on & (f_need > 0) & (self.a > -0.2), np.clip(f_need / 60.0, 0, 100), 0.0)
        coast = -f_res / MASS_KG - 0.3
        brake = np.where(self.a < coast, (coast - self.a) * 10.0, 0.0)
        brake = np.where(drive & (self.v == 0) & (self.seg != GO), 18.0, brake)
        self.brake_bar = np.clip(brake, 0.0, 240.0)
        slip = 600.0 * self.pedal / 100.0 + 150.0
        running = np.where(drive & (self.v > 0.1), np.maximum(geared, IDLE_RPM + slip * (self.gear < 3)), IDLE_RPM)
        self.rpm = np.where(self.engine_on, running + self.rng.normal(0, 2.0, self.n), 0.0)
        power_kw = np.maximum(0.0, MASS_KG * self.a * self.v + (0.39 * self.v ** 2 + 182.0) * self.v) / 900.0
        fuel_cut = self.engine_on & (self.pedal == 0) & (self.v > 5) & (self.a < 0)
        self.fuel_rate = np.where(self.engine_on & ~fuel_cut, 0.75 + 0.32 * (power_kw + 1.0), 0.0)
        self.fuel_l = np.maximum(0.0, self.fuel_l - self.fuel_rate / 3600.0)

    def _thermal_electric(self, lights_stuck: np.ndarray, drain_v_per_day: np.ndarray) -> None:
        run, amb = self.engine_on, self.ambient

        def lag(x: np.ndarray, target: np.ndarray, tau: np.ndarray) -> np.ndarray:
            return target + (x - target) * np.exp(-1.0 / tau)

        load = self.pedal / 100.0
        self.coolant = lag(self.coolant, np.where(run, 90.0 + 4 * load, amb), np.where(run, 200.0, 1800.0))
        self.oil = lag(self.oil, np.where(run, 100.0 + 8 * load, amb), np.where(run, 420.0, 2400.0))
        self.cabin = lag(self.cabin, np.where(run, 21.5, amb), np.where(run, 400.0, 1500.0))
        self.lights = (run & ((self.headlight_switch == 2) | self.night)) | lights_stuck
        lamp_a = np.where(self.lights, 10.0, 0.0)
        drive = self.phase == DRIVING
        ign_on = drive & ~run
        cranking = drive & (self.phase_t == ENGINE_START_S)
        i = np.where(run, 4.0 + 105.0 * np.exp(-self.run_t / 90.0) * (1.0 - self.soc / 100.0),
                     np.where(ign_on, -14.0, np.where(self.phase_t > 60, -0.04, -2.5)) - lamp_a)
        i = np.where(cranking, -180.0, i)
        self.batt_i = i
        drain_soc = drain_v_per_day / 0.009 / 86400.0  # % per second for that resting-voltage slope
        self.soc = np.clip(self.soc + i / 3600.0 / 70.0 * 100.0 - drain_soc, 5.0, 100.0)
        self.batt_v = np.where(run, 14.2 - 0.1 * np.maximum(0.0, self.coolant - 60) / 30,
                               11.9 + 0.009 * self.soc + i * 0.01)

    @property
    def night(self) -> np.ndarray:
        return (self.tod_h >= 19.5) | (self.tod_h < 6.5)
