"""Body state machines and the signal values of :class:`simulator.vehicle_model.VehicleModel`.

:class:`Body` tracks ignition, doors, locks, seat belts, lights, wipers,
climate, cruise control and stored DTCs from the model's trip phase;
:func:`compute` turns the model state into physical values keyed by the
signal names of ``dbc/reference_car.dbc`` (with small sensor noise).
"""
from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from simulator.vehicle_model import VehicleModel

TYRES = ("FL", "FR", "RL", "RR")
_DTC_POOL = ((0x042000, 2), (0x017100, 1), (0xC12100, 2), (0x923411, 1), (0x403500, 3), (0x030000, 1))
_IGNITION = {"seated": 1, "ign_on": 2, "crank": 3, "warmup": 2, "drive": 2, "parking": 2}


class Body:
    """Ignition, doors, locks, belts, lights, wipers, climate, cruise and DTC state."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ignition = 0
        self.ign_t = 0.0
        self.phase = ""
        self.doors = [0, 0, 0, 0]
        self.trunk = 0
        self.lock, self.lock_source = 1, 1
        self.belts = [0] * 5  # driver, passenger, RL, RM, RR
        self.occupied = [True, False, False, False, False]
        self.headlight_switch = 3 if rng.random() < 0.8 else 2
        self.low_beam = self.high_beam = self.hazard = False
        self.hazard_trip = False
        self.fog = rng.random() < 0.05
        self.rain = rng.uniform(10, 60) if rng.random() < 0.25 else 0.0
        self.cloud = rng.uniform(0.2, 1.0)
        self.setpoint = rng.choice((20.5, 21.0, 21.5, 22.0, 22.5))
        self.recirc = rng.random() < 0.3
        self.cruise_main = rng.random() < 0.5
        self.cruise_active = False
        self.lead = False
        self.start_stop = rng.random() < 0.7
        self.child_lock = rng.random() < 0.3
        self.trunk_trip = False
        n = rng.choices((0, 1, 2), (0.6, 0.3, 0.1))[0]
        self.dtcs = rng.sample(_DTC_POOL, n)
        self.oil_level = rng.uniform(65, 95)
        self.service_km = rng.uniform(-300, 25_000)
        self.service_days = rng.randint(-20, 365)
        self.sats = float(rng.randint(9, 16))
        self.hdop = rng.uniform(0.6, 1.2)
        self.cell = rng.uniform(-100, -65)
        self.alt_bias = 0.0
        self.tpms_state = 1 if rng.random() < 0.05 else 0

    def update(self, m: VehicleModel, dt: float) -> None:
        """Follow the model's trip phase."""
        rng, phase, t = self.rng, m.phase, m.phase_t
        entered, self.phase = phase != self.phase, phase
        ign = _IGNITION.get(phase, 0)
        if ign >= 2 > self.ignition:
            self.ign_t = 0.0
        self.ignition = ign
        self.ign_t += dt
        if phase == "unlock" and entered:
            self.lock, self.lock_source = 0, 1
            self.occupied = [True] + [rng.random() < q for q in (0.45, 0.2, 0.05, 0.2)]
            self.hazard_trip = rng.random() < 0.15
            self.trunk_trip = rng.random() < 0.3
        if phase in ("doors", "exit"):
            opening = 0.3 < t < (3.0 if phase == "doors" else 3.6)
            door_users = (self.occupied[0], self.occupied[1], self.occupied[2], self.occupied[4])
            for i, occ in enumerate(door_users):
                self.doors[i] = (2 if t > 0.6 else 1) if opening and occ else 0
            self.trunk = 2 if phase == "exit" and self.trunk_trip and 1.0 < t < 3.5 else 0
        else:
            self.doors = [0, 0, 0, 0]
            self.trunk = 0
        buckled = phase in ("ign_on", "crank", "warmup", "drive", "parking") or (phase == "seated" and t > 1.5)
        self.belts = [1 if buckled and occ else 0 for occ in self.occupied]
        if phase == "drive" and m.v * 3.6 > 15 and self.lock == 0:
            self.lock, self.lock_source = 1, 3
        elif phase == "engine_off" and self.lock:
            self.lock, self.lock_source = 0, 2
        elif phase == "parked" and t > 5.0 and not self.lock:
            self.lock, self.lock_source = 1, 1
        night = m.tod_h >= 19.5 or m.tod_h < 6.5
        self.low_beam = self.ignition >= 2 and (self.headlight_switch == 2 or night or self.rain > 30)
        kmh = m.v * 3.6
        if night and kmh > 75 and rng.random() < dt / 20:
            self.high_beam = True
        elif not night or kmh < 60 or rng.random() < dt / 30:
            self.high_beam = False
        self.hazard = self.hazard_trip and phase == "parking"
        if self.rain:
            self.rain = max(5.0, min(90.0, self.rain + rng.gauss(0, 0.3) * math.sqrt(dt)))
        if self.cruise_main and phase == "drive" and m.seg == "go" and kmh > 40 and abs(m.v - m.v_target) < 0.6:
            self.cruise_active = True
        elif phase != "drive" or m.seg != "go" or m.brake_bar > 0:
            self.cruise_active = False
        if rng.random() < dt / 15:
            self.lead = kmh > 20 and rng.random() < 0.6
        self.sats = max(6.0, min(22.0, self.sats + (rng.random() - 0.5) * dt))
        self.hdop = max(0.5, min(2.5, self.hdop + rng.gauss(0, 0.01) * math.sqrt(dt)))
        self.cell = max(-115.0, min(-55.0, self.cell + rng.gauss(0, 0.5) * math.sqrt(dt)))
        self.alt_bias = max(-5.0, min(5.0, self.alt_bias + rng.gauss(0, 0.05) * math.sqrt(dt)))


def _c(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def compute(m: VehicleModel, dt: float) -> dict[str, float]:  # noqa: C901 - one flat table of signals
    """Physical signal values for the current state of ``m``."""
    from simulator.vehicle_model import FINAL_DRIVE, IDLE_RPM, TRACK_M, WHEEL_RADIUS_M, geared_rpm

    g, b = m.rng.gauss, m.body
    kmh, moving = m.v * 3.6, m.v > 0.0
    run, pedal = m.engine_on, m.pedal
    yaw = m.v * m.kappa
    wheel_kmh = [max(0.0, kmh - s * yaw * TRACK_M / 2 * 3.6 + (g(0, 0.03) if moving else 0.0))
                 for s in (1, -1, 1, -1)]
    load = 0.0 if m.fuel_cut or not run else 18.0 + 0.8 * pedal
    boost = max(0.0, (load - 50.0) / 50.0 * 1.2) if run else 0.0
    night = m.tod_h >= 19.5 or m.tod_h < 6.5
    blink = (m.time_s * 1.5) % 1.0 < 0.5
    lat_acc = m.v * yaw
    drive = m.phase == "drive"
    locked_gear = m.gear if drive else 0
    out_rpm = kmh / 3.6 / WHEEL_RADIUS_M * 60 / (2 * math.pi) * FINAL_DRIVE
    pressures = [p * (t + 273.15) / 293.15 for p, t in zip(m.tyre_cold, m.tyre_temp)]
    rpm = max(0.0, m.rpm + (g(0, 2.0) if run else 0.0)) if m.rpm > 1 else 0.0
    sun = max(0.0, math.sin(math.pi * (m.tod_h - 6.5) / 13.0))
    lat_deg = math.degrees(m.lat) + m.gnss_bias_n / 111_320.0
    lon_deg = math.degrees(m.lon) + m.gnss_bias_e / (111_320.0 * math.cos(m.lat))
    trip_h = m.trip_time / 3600.0
    v: dict[str, float] = {
        # powertrain
        "EngineSpeed": rpm, "ThrottlePosition": 2.5 + 0.9 * pedal if run else 0.0, "EngineLoad": load,
        "EngineTorqueActual": (3.2 * pedal - (25.0 if m.fuel_cut else 0.0)) if run else 0.0,
        "TorqueDriverRequest": 3.2 * pedal, "TorqueFriction": 12.0 + m.rpm / 250.0 if run else 0.0,
        "TorqueMaxAvailable": 320.0 if run else 0.0, "FuelCutActive": float(m.fuel_cut),
        "AccelPedalPosition": pedal, "AccelPedalRaw1": 0.6 + 0.034 * pedal,
        "AccelPedalRaw2": (0.6 + 0.034 * pedal) / 2, "KickdownActive": float(pedal > 95),
        "MassAirFlow": (m.rpm / 120.0 * 2.4 * load / 100.0 + 0.5) if run else 0.0,
        "ManifoldPressure": _c(30.0 + 0.7 * load + 100 * boost, 0, 255) if run else 100.0,
        "IgnitionTiming": _c(10 + 25 * (1 - load / 100), -64, 63.5) if run else 0.0,
        "LambdaActual": _c(1.0 + g(0, 0.01), 0.9, 1.1) if run and not m.fuel_cut else 1.775,
        "FuelRailPressure": 40.0 + 1.5 * load if run else 5.0,
        "FuelConsumptionRate": m.fuel_rate,
        "InstantConsumption": min(99.9, m.fuel_rate / kmh * 100.0) if kmh > 3 else 0.0,
        "FuelInjectionQuantity": 0.0 if load == 0 else 8.0 + 0.3 * load,
        "ExhaustGasTemp": m.egt, "TurboBoostPressure": boost,
        "EngineState": 1.0 if m.phase == "crank" else 2.0 if run else 0.0,
        "IgnitionState": float(b.ignition), "IdleActive": float(run and pedal == 0 and kmh < 1),
        "MilLamp": float(any(s == 3 for _, s in b.dtcs)), "StartStopEnabled": float(b.start_stop and run),
        "IdleTargetSpeed": (IDLE_RPM + (250 if m.coolant < 40 else 0)) if run else 0.0,
        "EngineRunTime": min(65535.0, float(int(m.run_t))) if run else 0.0,
        "GearTarget": float(locked_gear) if drive else 14.0,
        "EngineSpeedTarget": (geared_rpm(kmh, m.gear) if m.gear else IDLE_RPM) if run else 0.0,
        "TransTorqueLimit": 400.0 if run else 0.0,
        "WheelTorqueFront": _c(pedal * 60 * WHEEL_RADIUS_M - m.brake_bar * 40, -10000, 10000),
        "WheelTorqueRear": _c(-m.brake_bar * 22, -10000, 10000),
        # transmission
        "GearSelector": 3.0 if drive else 0.0, "GearActual": float(m.gear) if drive else 14.0,
        "TurbineSpeed": (geared_rpm(kmh, m.gear) if m.gear else rpm) if run else 0.0,
        "TransOutputSpeed": out_rpm, "TorqueConverterLocked": float(m.converter_locked),
        "ShiftInProgress": float(drive and m.gear >= 1 and m.shift_t < 0.4),
        # chassis
        "VehicleSpeed": max(0.0, kmh + (g(0, 0.02) if moving else 0.0)), "VehicleSpeedValid": 1.0,
        "Standstill": float(not moving), "DrivingDirection": 1.0 if moving else 0.0,
        "SteeringAngle": _c(m.steer_deg + g(0, 0.1), -780, 780), "SteeringRate": _c(m.steer_rate, -2000, 2000),
        "SteeringAngleValid": 1.0,
        "EpsDriverTorque": _c(0.35 * lat_acc + g(0, 0.05), -20, 20),
        "EpsMotorTorque": _c(1.1 * lat_acc + g(0, 0.05), -20, 20),
        "EpsState": (2.0 if moving else 1.0) if run else 0.0,
        "YawRate": _c(math.degrees(yaw) + g(0, 0.05), -150, 150),
        "LateralAccel": _c(lat_acc + g(0, 0.03), -20, 20),
        "LongitudinalAccel": _c(m.a + 9.81 * m.grade + g(0, 0.03), -20, 20),
        "VerticalAccel": _c(9.81 + g(0, 0.04 + 0.004 * m.v), -20, 20),
        "RollRate": _c(m.roll_rate + g(0, 0.05), -150, 150), "PitchRate": _c(m.pitch_rate + g(0, 0.05), -150, 150),
        "ImuTemp": _c(m.cabin + 8.0, -40, 125),
        "BrakePedalPosition": min(100.0, m.brake_bar * 1.1), "BrakePressure": m.brake_bar,
        "BrakeSwitch": float(m.brake_bar > 1.0), "BrakeLightsOn": float(m.brake_bar > 1.0),
        "AbsActive": 0.0, "EspActive": 0.0, "TcsActive": 0.0, "EspOff": 0.0,
        "HillHoldActive": float(drive and not moving and abs(m.grade) > 0.03),
        "ParkingBrakeState": 0.0 if drive or (m.phase == "parking" and m.phase_t < 1.0) else 1.0,
        # body
        "AirbagWarningLamp": float(b.ignition >= 2 and b.ign_t < 4.0), "CrashDetected": 0.0,
        "CrashSeverity": 0.0, "PassengerAirbagState": 0.0 if b.occupied[1] else 1.0, "BeltPretensionerFired": 0.0,
        "CruiseState": (2.0 if b.cruise_active else 1.0 if b.cruise_main else 0.0) if run else 0.0,
        "CruiseSetSpeed": float(round(m.v_target * 3.6)) if b.cruise_active else 0.0,
        "AccFollowDistance": 2.0 if b.cruise_main and run else 0.0, "AccLeadDetected": float(b.lead and run),
        "Trunk": float(b.trunk), "Hood": 0.0,
        "HeadlightSwitch": float(b.headlight_switch), "LowBeamOn": float(b.low_beam),
        "HighBeamOn": float(b.high_beam), "DaytimeRunningLights": float(run and not b.low_beam),
        "TurnIndicator": float(m.indicator if b.ignition >= 2 else 0),
        "TurnLampLeft": float(blink and (b.hazard or (m.indicator == 1 and b.ignition >= 2))),
        "TurnLampRight": float(blink and (b.hazard or (m.indicator == 2 and b.ignition >= 2))),
        "HazardSwitch": float(b.hazard), "FogLightFront": float(b.fog and b.low_beam),
        "FogLightRear": 0.0, "ReverseLights": 0.0,
        "AmbientLight": min(65000.0, 5.0 + 60000.0 * sun * b.cloud) if not night else 5.0,
        "WiperMode": (4.0 if b.rain else 0.0) if b.ignition >= 2 else 0.0, "RainIntensity": b.rain,
        "WasherActive": 0.0,
        "CentralLockState": float(b.lock), "LockSource": float(b.lock_source), "ChildLockRear": float(b.child_lock),
        "KeyInCabin": float(m.phase in _IGNITION or m.phase == "engine_off"),
        "AlarmArmed": float(b.lock == 1 and m.phase == "parked"),
        "OccupantPassenger": float(b.occupied[1]), "OccupantRL": float(b.occupied[2]),
        "OccupantRM": float(b.occupied[3]), "OccupantRR": float(b.occupied[4]),
        # temperatures, climate, fuel, battery
        "CoolantTemp": m.coolant, "OilTemp": m.oil, "IntakeAirTemp": m.ambient + (5.0 + 10.0 * math.exp(-kmh / 20)),
        "TransOilTemp": m.trans, "OilPressure": _c(1.0 + m.rpm / 1000 * 0.9, 0, 10) if run else 0.0,
        "OilLevel": b.oil_level,
        "AmbientTemp": m.ambient, "CabinTemp": m.cabin, "ClimateSetpoint": b.setpoint,
        "BlowerLevel": float(min(10, 1 + int(abs(m.cabin - b.setpoint) / 2))) if run else 0.0,
        "AcCompressorOn": float(run and m.ambient > 15), "Recirculation": float(b.recirc and run),
        "RearDefrost": float(run and m.ambient < 5 and m.run_t < 600),
        "FuelLevel": min(100.0, m.fuel_l / 55.0 * 100.0), "FuelVolume": m.fuel_l,
        "RangeRemaining": min(2000.0, m.fuel_l / 6.5 * 100.0), "LowFuelWarning": float(m.fuel_l < 7.0),
        "BatteryVoltage": _c(m.batt_v + g(0, 0.02), 0, 20), "BatteryCurrent": _c(m.batt_i + g(0, 0.1), -500, 500),
        "BatterySOC": m.soc, "BatteryTemp": (m.ambient + m.coolant) / 2,
        "AlternatorLoad": _c((m.batt_i + 25.0) / 150.0 * 100.0, 0, 100) if run else 0.0,
        # cluster, trip
        "DisplayedSpeed": float(int(kmh * 1.03 + 1)) if kmh > 0.5 else 0.0,
        "OilPressureWarning": float(b.ignition >= 2 and not run), "BatteryWarning": float(b.ignition >= 2 and not run),
        "CoolantTempWarning": float(m.coolant > 115), "TpmsWarning": float(min(pressures) < 1.9),
        "DoorAjarWarning": float(b.ignition >= 1 and (any(b.doors) or b.trunk > 0)),
        "SeatbeltReminder": float(kmh > 10 and any(o and not bt for o, bt in zip(b.occupied, b.belts))),
        "ServiceDueDistance": _c(float(int(b.service_km - m.trip_km)), -32768, 32767),
        "ServiceDueDays": float(b.service_days - int(m.time_s // 86400)),
        "Odometer": m.odometer_km, "TripDistance": m.trip_km, "TripTime": min(65535.0, m.trip_time),
        "TripAvgSpeed": min(300.0, m.trip_km / trip_h) if trip_h > 0.001 else 0.0,
        "TripAvgConsumption": min(99.9, m.trip_fuel_l / m.trip_km * 100) if m.trip_km > 0.1 else 0.0,
        "TripFuelUsed": m.trip_fuel_l,
        "TpmsSensorState": float(b.tpms_state),
        "DtcActiveCount": float(len(b.dtcs)),
        # GNSS, telematics
        "Latitude": lat_deg, "Longitude": (lon_deg + 180.0) % 360.0 - 180.0,
        "GnssAltitude": _c(m.alt + b.alt_bias, -1000, 5000), "GnssHeading": min(359.99, m.heading),
        "GnssSpeed": max(0.0, kmh + g(0, 0.1)) if moving else 0.0, "GnssFixType": 3.0,
        "GnssSatellites": float(int(b.sats)), "GnssHdop": b.hdop, "GnssVdop": b.hdop * 1.4,
        "GnssHorizontalAccuracy": 1.5 * b.hdop, "GnssVerticalAccuracy": 2.5 * b.hdop,
        "CellularSignal": b.cell, "CellularTech": 3.0, "TcuState": 2.0,
    }
    for i, w in enumerate(TYRES):
        v[f"WheelSpeed{w}"] = wheel_kmh[i]
        v[f"WheelPulses{w}"] = float(int(m.wheel_dist[i] / (2 * math.pi * WHEEL_RADIUS_M) * 48) % 256)
        v[f"BrakePressure{w}"] = m.brake_bar * (1.0 if i < 2 else 0.7)
        v[f"Door{w}"] = float(b.doors[i])
        v[f"TyrePressure{w}"] = _c(pressures[i], 0, 5.1)
        v[f"TyreTemp{w}"] = _c(m.tyre_temp[i], -50, 150)
    for i, seat in enumerate(("Driver", "Passenger", "RL", "RM", "RR")):
        v[f"SeatBelt{seat}"] = float(b.belts[i])
    for i in range(4):
        code, status = b.dtcs[i] if i < len(b.dtcs) else (0, 0)
        v[f"DtcCode{i}"], v[f"DtcStatus{i}"] = float(code), float(status)
    return v
