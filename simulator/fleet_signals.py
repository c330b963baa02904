"""Physical signal values of a :class:`~simulator.fleet_physics.FleetPhysics` group for one second.

Keys are signal names of ``dbc/reference_car.dbc`` (plus ``CabinCo2`` of
the 2027 variant); values are float arrays over the group's vehicles.
Wheel speeds, GNSS speed and displacement, rpm and gear, fuel and distance
all come from the same state, so they agree with each other. Signals not
listed here get a per-vehicle constant (see :mod:`simulator.fleet_packets`).
"""
from __future__ import annotations

import numpy as np

from .fleet_physics import DISABLED, DRIVING, ENGINE_START_S, PARKED, FleetPhysics
from .fleet_spec import DTC_CODE
from .vehicle_model import FINAL_DRIVE, IDLE_RPM, TRACK_M, WHEEL_RADIUS_M

PRIOR_DTC = 0x017100


def fleet_signals(p: FleetPhysics) -> dict[str, np.ndarray]:
    """Physical values of every driven signal at the group's current second."""
    n, rng, f = p.n, p.rng, p.flags
    noise = rng.normal(0.0, 1.0, (4, n))
    kmh = p.v * 3.6
    moving = p.v > 0.0
    run = p.engine_on
    drive = p.phase == DRIVING
    yaw = p.v * p.kappa
    one, zero = np.ones(n), np.zeros(n)
    ign = np.where(run | (drive & (p.phase_t >= 1)), 2.0, 0.0)
    load = np.where(run, 18.0 + 0.8 * p.pedal, 0.0)
    brake_on = (p.brake_bar > 1.0).astype(float)
    parked_after_trip = (p.phase == PARKED) & p.had_trip & (p.phase_t >= 2) & (p.phase_t <= 4)
    door_fl = np.where((drive & (p.phase_t >= 1) & (p.phase_t <= 3)) | parked_after_trip, 2.0, 0.0)
    crashed = f.crashed
    crash_rel = p.now - p.scenarios.t
    door_fl = np.where(crashed & (crash_rel >= 10) & (crash_rel <= 20), 2.0, door_fl)
    dtc_count = f.dtc.astype(float) + p.dtc_prior
    dtc_code0 = np.where(f.dtc, DTC_CODE, np.where(p.dtc_prior, PRIOR_DTC, 0))
    dtc_status0 = np.where(f.dtc, 3.0, np.where(p.dtc_prior, 1.0, 0.0))
    wheel = [np.maximum(0.0, kmh - s * yaw * TRACK_M / 2 * 3.6) for s in (1, -1, 1, -1)]
    out_rpm = kmh / 3.6 / WHEEL_RADIUS_M * 60 / (2 * np.pi) * FINAL_DRIVE
    gear_rpm = np.where(p.gear > 0, p.rpm, 0.0)
    v: dict[str, np.ndarray] = {
        "EngineSpeed": p.rpm, "ThrottlePosition": np.where(run, 2.5 + 0.9 * p.pedal, 0.0), "EngineLoad": load,
        "EngineTorqueActual": np.where(run, 3.2 * p.pedal, 0.0), "TorqueDriverRequest": 3.2 * p.pedal,
        "TorqueFriction": np.where(run, 12.0 + p.rpm / 250.0, 0.0), "TorqueMaxAvailable": np.where(run, 320.0, 0.0),
        "AccelPedalPosition": p.pedal, "AccelPedalRaw1": 0.6 + 0.034 * p.pedal,
        "AccelPedalRaw2": (0.6 + 0.034 * p.pedal) / 2, "KickdownActive": (p.pedal > 95).astype(float),
        "MassAirFlow": np.where(run, p.rpm / 120.0 * 2.4 * load / 100.0 + 0.5, 0.0),
        "FuelConsumptionRate": p.fuel_rate,
        "InstantConsumption": np.where(kmh > 3, np.minimum(99.9, p.fuel_rate / np.maximum(kmh, 3) * 100.0), 0.0),
        "EngineState": np.where(run, 2.0, np.where(drive & (p.phase_t == ENGINE_START_S), 1.0, 0.0)),
        "IgnitionState": ign, "IdleActive": (run & (p.pedal == 0) & (kmh < 1)).astype(float),
        "MilLamp": f.dtc.astype(float), "IdleTargetSpeed": np.where(run, IDLE_RPM, 0.0),
        "EngineRunTime": np.where(run, np.minimum(65535.0, p.run_t), 0.0),
        "GearSelector": np.where(drive, 3.0, 0.0), "GearActual": np.where(drive, p.gear, 14.0),
        "GearTarget": np.where(drive, p.gear, 14.0), "TurbineSpeed": gear_rpm, "TransOutputSpeed": out_rpm,
        "TorqueConverterLocked": (p.gear >= 3).astype(float),
        "VehicleSpeed": kmh, "VehicleSpeedValid": one, "Standstill": (~moving).astype(float),
        "DrivingDirection": moving.astype(float),
        "SteeringAngle": np.clip(15.0 * np.degrees(np.arctan(2.7 * p.kappa)), -780, 780), "SteeringAngleValid": one,
        "YawRate": np.clip(np.degrees(yaw) + 0.05 * noise[0], -150, 150),
        "LateralAccel": np.clip(p.v * yaw + 0.03 * noise[1], -20, 20),
        "LongitudinalAccel": np.clip(p.a + 0.03 * noise[2], -20, 20),
        "VerticalAccel": 9.81 + 0.04 * noise[3],
        "BrakePedalPosition": np.minimum(100.0, p.brake_bar * 1.1), "BrakePressure": p.brake_bar,
        "BrakeSwitch": brake_on, "BrakeLightsOn": brake_on,
        "ParkingBrakeState": np.where(drive, 0.0, 1.0),
        "AirbagWarningLamp": crashed.astype(float), "CrashDetected": crashed.astype(float),
        "CrashSeverity": f.crash_severity, "BeltPretensionerFired": crashed.astype(float),
        "HeadlightSwitch": np.where(f.lights_stuck, 2.0, p.headlight_switch), "LowBeamOn": p.lights.astype(float),
        "DaytimeRunningLights": (run & ~p.lights).astype(float), "HazardSwitch": crashed.astype(float),
        "CentralLockState": np.where(((p.phase == PARKED) & (p.phase_t > 8)) | (drive & (kmh > 15)),
                                     1.0, 0.0),
        "KeyInCabin": (drive | (p.phase == DISABLED)).astype(float),
        "CoolantTemp": p.coolant, "OilTemp": p.oil, "IntakeAirTemp": p.ambient + 5.0 + 10.0 * np.exp(-kmh / 20),
        "OilPressure": np.where(run, np.clip(1.0 + p.rpm / 1000 * 0.9, 0, 10), 0.0),
        "AmbientTemp": p.ambient, "CabinTemp": p.cabin,
        "CabinCo2": np.clip(420.0 + np.where(drive, 350.0 * p.occupants * np.minimum(1.0, p.trip_t / 600), 0.0),
                            0, 4000),
        "FuelLevel": np.minimum(100.0, p.fuel_l / 55.0 * 100.0), "FuelVolume": np.minimum(80.0, p.fuel_l),
        "RangeRemaining": np.minimum(2000.0, p.fuel_l / 6.5 * 100.0), "LowFuelWarning": (p.fuel_l < 7.0) * 1.0,
        "BatteryVoltage": np.clip(p.batt_v, 0, 20), "BatteryCurrent": np.clip(p.batt_i, -500, 500),
        "BatterySOC": p.soc, "BatteryTemp": (p.ambient + p.coolant) / 2,
        "AlternatorLoad": np.where(run, np.clip((p.batt_i + 25.0) / 150.0 * 100.0, 0, 100), 0.0),
        "DisplayedSpeed": np.where(kmh > 0.5, np.floor(kmh * 1.03 + 1), 0.0),
        "Odometer": p.odometer, "TripDistance": np.minimum(9999.99, p.trip_km),
        "TripTime": np.minimum(65535.0, p.trip_t),
        "DtcActiveCount": dtc_count, "DtcIndex": zero, "DtcCode0": dtc_code0, "DtcStatus0": dtc_status0,
        "Latitude": p.lat, "Longitude": (p.lon + 180.0) % 360.0 - 180.0, "GnssAltitude": p.alt,
        "GnssHeading": np.minimum(359.99, p.heading), "GnssSpeed": kmh, "GnssFixType": np.full(n, 3.0),
        "GnssSatellites": np.full(n, 12.0), "TcuState": np.full(n, 2.0), "CellularTech": np.full(n, 3.0),
    }
    for i, w in enumerate(("FL", "FR", "RL", "RR")):
        v[f"WheelSpeed{w}"] = wheel[i]
        v[f"BrakePressure{w}"] = p.brake_bar * (1.0 if i < 2 else 0.7)
        v[f"Door{w}"] = door_fl if i == 0 else zero
    v["SeatBeltDriver"] = (drive & (p.phase_t >= 3)).astype(float)
    return v
