"""Generate ``dbc/reference_car.dbc``, the DBC of our own reference passenger car.

Run from the repository root::

    .venv/bin/python dbc/make_reference_car.py          # writes dbc/reference_car.dbc
    .venv/bin/python dbc/make_reference_car.py --check  # fails if the file is stale

The car is described below as plain Python data (messages, signals, value
tables); bit positions are allocated automatically: every message is either
Intel (little-endian) or Motorola (big-endian) throughout, signals of 8 bits or
more start on a byte boundary when possible, and messages with ``alive=True``
end in a 4-bit rolling counter plus an 8-bit checksum in the last byte
(checksum = (id & 0xFF) + (id >> 8 & 0xFF) + dlc + sum of the first dlc-1
bytes, modulo 256; the same rule opendbc's Toyota files use).
The result must load with ``cantools.database.load_file(path, strict=True)``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).with_name("reference_car.dbc")
EXTENDED = 0x80000000  # DBC marks 29-bit identifiers by setting bit 31


@dataclass
class Sig:
    """One signal: bit length, signedness, scaling, range, unit, value table."""

    name: str
    bits: int
    scale: float = 1.0
    offset: float = 0.0
    lo: float = 0.0
    hi: float | None = None
    unit: str = ""
    signed: bool = False
    choices: dict[int, str] | None = None
    comment: str = ""
    mux: int | None = None  # multiplexed signal: present only for this mux value
    is_mux: bool = False  # the multiplexer switch itself


@dataclass
class Msg:
    """One message: identifier, name, length, cycle time, byte order, sender."""

    frame_id: int
    name: str
    cycle_ms: int
    sender: str
    signals: list[Sig]
    big_endian: bool = False
    dlc: int = 8
    alive: bool = False  # append rolling counter + checksum
    extended: bool = False
    comment: str = ""
    layout: list[tuple[Sig, int]] = field(default_factory=list)


def onoff(name: str, comment: str = "", **kw: object) -> Sig:
    """A 1-bit flag with an Off/On value table."""
    return Sig(name, 1, hi=1, choices={0: "Off", 1: "On"}, comment=comment, **kw)  # type: ignore[arg-type]


DOOR = {0: "Closed", 1: "Ajar", 2: "Open", 3: "SNA"}
BELT = {0: "Unbuckled", 1: "Buckled", 2: "Fault", 3: "SNA"}
TYRE = ("FL", "FR", "RL", "RR")
GEAR_SEL = {0: "P", 1: "R", 2: "N", 3: "D", 4: "M", 7: "SNA"}
GEAR_ACT = {0: "Neutral", 1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th", 6: "6th",
            7: "7th", 8: "8th", 13: "Reverse", 14: "Park", 15: "SNA"}
IGNITION = {0: "Off", 1: "Accessory", 2: "On", 3: "Start"}
ENGINE_STATE = {0: "Off", 1: "Cranking", 2: "Running", 3: "Stalled", 4: "AutoStop"}
DTC_STATUS = {0: "NoFault", 1: "Pending", 2: "Confirmed", 3: "ConfirmedMilOn", 4: "HistoryCleared"}


def messages() -> list[Msg]:
    """The reference car's messages."""
    speed = dict(bits=16, scale=0.01, hi=300.0, unit="km/h")
    accel = dict(bits=12, scale=0.01, lo=-20.0, hi=20.0, unit="m/s^2", signed=True)
    degc8 = dict(bits=8, offset=-40.0, lo=-40.0, hi=215.0, unit="degC")
    return [
        # ---- 10 ms: powertrain and chassis ------------------------------------------
        Msg(0x0A0, "ENGINE_DATA", 10, "ECM", [
            Sig("EngineSpeed", 16, 0.25, hi=16000.0, unit="rpm"),
            Sig("ThrottlePosition", 8, 0.4, hi=100.0, unit="%"),
            Sig("EngineLoad", 8, 0.4, hi=100.0, unit="%"),
            Sig("EngineTorqueActual", 16, 0.5, lo=-500.0, hi=1000.0, unit="Nm", signed=True),
        ], big_endian=True, alive=True),
        Msg(0x0A4, "ENGINE_TORQUE", 10, "ECM", [
            Sig("TorqueDriverRequest", 16, 0.5, lo=-500.0, hi=1000.0, unit="Nm", signed=True),
            Sig("TorqueFriction", 8, 1.0, hi=250.0, unit="Nm"),
            Sig("TorqueMaxAvailable", 12, 0.5, hi=1000.0, unit="Nm"),
            onoff("FuelCutActive", "overrun fuel cut-off"),
        ]),
        Msg(0x0A8, "ACCEL_PEDAL", 10, "ECM", [
            Sig("AccelPedalPosition", 8, 0.4, hi=100.0, unit="%"),
            Sig("AccelPedalRaw1", 12, 0.001, hi=4.095, unit="V", comment="pedal track 1 voltage"),
            Sig("AccelPedalRaw2", 12, 0.001, hi=4.095, unit="V", comment="pedal track 2 voltage"),
            onoff("KickdownActive"),
        ], alive=True),
        Msg(0x0B0, "WHEEL_SPEEDS", 10, "ESP", [
            Sig(f"WheelSpeed{w}", **speed) for w in TYRE  # type: ignore[arg-type]
        ], big_endian=True),
        Msg(0x0B2, "WHEEL_PULSES", 10, "ESP", [
            Sig(f"WheelPulses{w}", 8, hi=255.0, comment="rolling count of ABS ring teeth (48 per revolution)")
            for w in TYRE
        ]),
        Msg(0x0B4, "VEHICLE_SPEED", 10, "ESP", [
            Sig("VehicleSpeed", **speed),  # type: ignore[arg-type]
            Sig("VehicleSpeedValid", 1, hi=1, choices={0: "Invalid", 1: "Valid"}),
            onoff("Standstill"),
            Sig("DrivingDirection", 2, hi=3, choices={0: "Standstill", 1: "Forward", 2: "Reverse", 3: "SNA"}),
        ], alive=True),
        Msg(0x025, "STEERING_ANGLE", 10, "SAS", [
            Sig("SteeringAngle", 16, 0.1, lo=-780.0, hi=780.0, unit="deg", signed=True,
                comment="steering wheel angle, positive = left"),
            Sig("SteeringRate", 12, 1.0, lo=-2000.0, hi=2000.0, unit="deg/s", signed=True),
            Sig("SteeringAngleValid", 1, hi=1, choices={0: "Invalid", 1: "Valid"}),
        ], big_endian=True, alive=True),
        Msg(0x028, "EPS_STATUS", 10, "EPS", [
            Sig("EpsDriverTorque", 12, 0.01, lo=-20.0, hi=20.0, unit="Nm", signed=True),
            Sig("EpsMotorTorque", 12, 0.01, lo=-20.0, hi=20.0, unit="Nm", signed=True),
            Sig("EpsState", 3, hi=7, choices={0: "Init", 1: "Ready", 2: "Active", 3: "Degraded", 4: "Fault",
                                              7: "SNA"}),
        ], big_endian=True, alive=True),
        Msg(0x024, "YAW_ACCEL", 10, "ESP", [
            Sig("YawRate", 16, 0.01, lo=-150.0, hi=150.0, unit="deg/s", signed=True, comment="positive = left"),
            Sig("LateralAccel", **accel, comment="positive = left"),  # type: ignore[arg-type]
            Sig("LongitudinalAccel", **accel),  # type: ignore[arg-type]
            Sig("VerticalAccel", **accel, comment="includes gravity (about 9.81 at rest)"),  # type: ignore[arg-type]
        ], alive=True),
        Msg(0x0C0, "BRAKE_DATA", 10, "ESP", [
            Sig("BrakePedalPosition", 8, 0.4, hi=100.0, unit="%"),
            Sig("BrakePressure", 12, 0.1, hi=250.0, unit="bar", comment="master cylinder pressure"),
            Sig("BrakeSwitch", 1, hi=1, choices={0: "Released", 1: "Pressed"}),
            onoff("BrakeLightsOn"),
        ], alive=True),
        Msg(0x0C4, "BRAKE_PRESSURES", 10, "ESP", [
            Sig(f"BrakePressure{w}", 12, 0.1, hi=250.0, unit="bar") for w in TYRE
        ]),
        Msg(0x0D0, "ESP_STATUS", 10, "ESP", [
            onoff("AbsActive"), onoff("EspActive"), onoff("TcsActive"),
            onoff("EspOff", "ESP switched off by the driver"), onoff("HillHoldActive"),
            Sig("ParkingBrakeState", 2, hi=3, choices={0: "Released", 1: "Applied", 2: "InTransition", 3: "Fault"}),
        ], alive=True),
        Msg(0x0F0, "TRANSMISSION_DATA", 10, "TCM", [
            Sig("GearSelector", 3, hi=7, choices=GEAR_SEL),
            Sig("GearActual", 4, hi=15, choices=GEAR_ACT),
            Sig("TurbineSpeed", 16, 0.25, hi=16000.0, unit="rpm"),
            Sig("TransOutputSpeed", 16, 0.25, hi=16000.0, unit="rpm"),
            onoff("TorqueConverterLocked"),
            onoff("ShiftInProgress"),
        ], big_endian=True, alive=True),
        Msg(0x0F4, "ENGINE_AIR", 10, "ECM", [
            Sig("MassAirFlow", 16, 0.01, hi=600.0, unit="g/s"),
            Sig("ManifoldPressure", 8, 1.0, hi=255.0, unit="kPa"),
            Sig("IgnitionTiming", 8, 0.5, lo=-64.0, hi=63.5, unit="deg", signed=True),
            Sig("LambdaActual", 8, 0.005, 0.5, lo=0.5, hi=1.775),
            Sig("FuelRailPressure", 12, 0.1, hi=400.0, unit="bar"),
        ]),
        Msg(0x026, "IMU_RATES", 10, "ESP", [
            Sig("RollRate", 16, 0.01, lo=-150.0, hi=150.0, unit="deg/s", signed=True),
            Sig("PitchRate", 16, 0.01, lo=-150.0, hi=150.0, unit="deg/s", signed=True),
            Sig("ImuTemp", 8, 1.0, offset=-40.0, lo=-40.0, hi=125.0, unit="degC"),
        ], alive=True),
        Msg(0x0F8, "POWERTRAIN_COORD", 10, "TCM", [
            Sig("GearTarget", 4, hi=15, choices=GEAR_ACT),
            Sig("EngineSpeedTarget", 16, 0.25, hi=16000.0, unit="rpm"),
            Sig("TransTorqueLimit", 12, 0.5, hi=1000.0, unit="Nm"),
        ], big_endian=True),
        Msg(0x0FC, "DRIVETRAIN_TORQUE", 10, "TCM", [
            Sig("WheelTorqueFront", 16, 1.0, lo=-10000.0, hi=10000.0, unit="Nm", signed=True),
            Sig("WheelTorqueRear", 16, 1.0, lo=-10000.0, hi=10000.0, unit="Nm", signed=True),
        ]),
        # ---- 20 ms ------------------------------------------------------------------
        Msg(0x130, "AIRBAG_STATUS", 20, "SRS", [
            onoff("AirbagWarningLamp"),
            Sig("CrashDetected", 1, hi=1, choices={0: "NoCrash", 1: "Crash"}),
            Sig("CrashSeverity", 3, hi=7, choices={0: "None", 1: "Minor", 2: "Moderate", 3: "Severe", 7: "SNA"}),
            Sig("PassengerAirbagState", 2, hi=3, choices={0: "Enabled", 1: "Disabled", 2: "Fault", 3: "SNA"}),
            onoff("BeltPretensionerFired"),
        ], alive=True),
        Msg(0x134, "CRUISE_CONTROL", 20, "ECM", [
            Sig("CruiseState", 3, hi=7, choices={0: "Off", 1: "Standby", 2: "Active", 3: "Override", 4: "Fault"}),
            Sig("CruiseSetSpeed", 8, 1.0, hi=250.0, unit="km/h"),
            Sig("AccFollowDistance", 2, hi=3, choices={0: "Off", 1: "Near", 2: "Medium", 3: "Far"}),
            onoff("AccLeadDetected"),
        ], alive=True),
        Msg(0x1A0, "ENGINE_FUEL", 20, "ECM", [
            Sig("FuelConsumptionRate", 16, 0.01, hi=100.0, unit="l/h"),
            Sig("InstantConsumption", 10, 0.1, hi=99.9, unit="l/100km"),
            Sig("FuelInjectionQuantity", 12, 0.01, hi=40.0, unit="mg/stroke"),
        ]),
        Msg(0x1A4, "ENGINE_EXHAUST", 20, "ECM", [
            Sig("ExhaustGasTemp", 10, 1.0, offset=-40.0, lo=-40.0, hi=983.0, unit="degC"),
            Sig("TurboBoostPressure", 10, 0.01, lo=0.0, hi=3.0, unit="bar"),
        ], big_endian=True),
        # ---- 100 ms -----------------------------------------------------------------
        Msg(0x1C0, "ENGINE_STATUS", 100, "ECM", [
            Sig("EngineState", 3, hi=7, choices=ENGINE_STATE),
            Sig("IgnitionState", 2, hi=3, choices=IGNITION),
            onoff("IdleActive"),
            onoff("MilLamp", "malfunction indicator lamp"),
            onoff("StartStopEnabled"),
            Sig("IdleTargetSpeed", 8, 10.0, hi=2550.0, unit="rpm"),
            Sig("EngineRunTime", 16, 1.0, hi=65535.0, unit="s", comment="since engine start"),
        ]),
        Msg(0x1C4, "BATTERY_12V", 100, "BMS", [
            Sig("BatteryVoltage", 12, 0.01, hi=20.0, unit="V"),
            Sig("BatteryCurrent", 12, 0.25, lo=-500.0, hi=500.0, unit="A", signed=True,
                comment="positive = charging"),
            Sig("BatterySOC", 8, 0.5, hi=100.0, unit="%"),
            Sig("BatteryTemp", **degc8),  # type: ignore[arg-type]
            Sig("AlternatorLoad", 8, 0.5, hi=100.0, unit="%"),
        ]),
        Msg(0x3B0, "DOORS", 100, "BCM", [
            Sig(f"Door{w}", 2, hi=3, choices=DOOR) for w in TYRE
        ] + [Sig("Trunk", 2, hi=3, choices=DOOR), Sig("Hood", 2, hi=3, choices=DOOR)]),
        Msg(0x3C0, "LIGHTS", 100, "BCM", [
            Sig("HeadlightSwitch", 2, hi=3, choices={0: "Off", 1: "Parking", 2: "LowBeam", 3: "Auto"}),
            onoff("LowBeamOn"), onoff("HighBeamOn"), onoff("DaytimeRunningLights"),
            Sig("TurnIndicator", 2, hi=3, choices={0: "Off", 1: "Left", 2: "Right", 3: "SNA"},
                comment="stalk position"),
            onoff("TurnLampLeft"), onoff("TurnLampRight"), onoff("HazardSwitch"),
            onoff("FogLightFront"), onoff("FogLightRear"), onoff("ReverseLights"),
            Sig("AmbientLight", 16, 1.0, hi=65000.0, unit="lux"),
        ]),
        Msg(0x3C4, "WIPERS", 200, "BCM", [
            Sig("WiperMode", 3, hi=7, choices={0: "Off", 1: "Interval", 2: "Low", 3: "High", 4: "Auto",
                                               7: "SNA"}),
            Sig("RainIntensity", 8, 0.4, hi=100.0, unit="%"),
            onoff("WasherActive"),
        ]),
        Msg(0x3D0, "LOCKS", 200, "BCM", [
            Sig("CentralLockState", 2, hi=3, choices={0: "Unlocked", 1: "Locked", 2: "DoubleLocked", 3: "SNA"}),
            Sig("LockSource", 3, hi=7, choices={0: "None", 1: "KeyFob", 2: "InteriorButton", 3: "AutoLockSpeed",
                                                4: "Remote", 5: "Crash"}),
            onoff("ChildLockRear"),
            Sig("KeyInCabin", 1, hi=1, choices={0: "NotDetected", 1: "Detected"}),
            onoff("AlarmArmed"),
        ]),
        Msg(0x3D4, "SEATBELTS", 500, "SRS", [
            Sig(f"SeatBelt{seat}", 2, hi=3, choices=BELT) for seat in ("Driver", "Passenger", "RL", "RM", "RR")
        ] + [Sig(f"Occupant{seat}", 1, hi=1, choices={0: "Empty", 1: "Occupied"})
             for seat in ("Passenger", "RL", "RM", "RR")]),
        Msg(0x3E0, "TEMPERATURES", 500, "ECM", [
            Sig("CoolantTemp", **degc8),  # type: ignore[arg-type]
            Sig("OilTemp", **degc8),  # type: ignore[arg-type]
            Sig("IntakeAirTemp", **degc8),  # type: ignore[arg-type]
            Sig("TransOilTemp", **degc8),  # type: ignore[arg-type]
            Sig("OilPressure", 8, 0.04, hi=10.0, unit="bar"),
            Sig("OilLevel", 8, 0.5, hi=100.0, unit="%"),
        ], big_endian=True),
        Msg(0x3E4, "CLIMATE", 500, "HVAC", [
            Sig("AmbientTemp", 8, 0.5, offset=-40.0, lo=-40.0, hi=87.5, unit="degC"),
            Sig("CabinTemp", 8, 0.5, offset=-40.0, lo=-40.0, hi=87.5, unit="degC"),
            Sig("ClimateSetpoint", 6, 0.5, offset=15.0, lo=15.0, hi=31.5, unit="degC"),
            Sig("BlowerLevel", 4, hi=10.0),
            onoff("AcCompressorOn"), onoff("Recirculation"), onoff("RearDefrost"),
        ]),
        Msg(0x3F0, "FUEL", 200, "ECM", [
            Sig("FuelLevel", 8, 0.4, hi=100.0, unit="%"),
            Sig("FuelVolume", 10, 0.1, hi=80.0, unit="l"),
            Sig("RangeRemaining", 11, 1.0, hi=2000.0, unit="km"),
            onoff("LowFuelWarning"),
        ]),
        Msg(0x5A0, "CLUSTER", 200, "IPC", [
            Sig("DisplayedSpeed", 8, 1.0, hi=255.0, unit="km/h"),
            onoff("OilPressureWarning"), onoff("BatteryWarning"), onoff("CoolantTempWarning"),
            onoff("TpmsWarning"), onoff("DoorAjarWarning"), onoff("SeatbeltReminder"),
            Sig("ServiceDueDistance", 16, 1.0, lo=-32768.0, hi=32767.0, unit="km", signed=True),
            Sig("ServiceDueDays", 10, 1.0, lo=-512.0, hi=511.0, unit="d", signed=True),
        ], big_endian=True),
        Msg(0x5B0, "ODOMETER", 1000, "IPC", [
            Sig("Odometer", 32, 0.1, hi=1000000.0, unit="km"),
            Sig("TripDistance", 20, 0.01, hi=9999.99, unit="km", comment="since engine start"),
        ]),
        Msg(0x5B4, "TRIP", 1000, "IPC", [
            Sig("TripTime", 16, 1.0, hi=65535.0, unit="s"),
            Sig("TripAvgSpeed", 12, 0.1, hi=300.0, unit="km/h"),
            Sig("TripAvgConsumption", 10, 0.1, hi=99.9, unit="l/100km"),
            Sig("TripFuelUsed", 16, 0.01, hi=655.0, unit="l"),
        ]),
        Msg(0x385, "TPMS", 250, "TPMS", [
            Sig("TpmsWheel", 2, hi=3, choices={i: w for i, w in enumerate(TYRE)}, is_mux=True),
            Sig("TpmsSensorState", 2, hi=3, choices={0: "OK", 1: "LowBattery", 2: "Fault", 3: "NoSignal"}),
        ] + [s for i, w in enumerate(TYRE) for s in (
            Sig(f"TyrePressure{w}", 8, 0.02, hi=5.1, unit="bar", mux=i),
            Sig(f"TyreTemp{w}", 8, 1.0, offset=-50.0, lo=-50.0, hi=150.0, unit="degC", mux=i),
        )], comment="tyre pressure monitoring, one wheel per frame"),
        Msg(0x6F0, "DTC_STATUS", 1000, "CGW", [
            Sig("DtcIndex", 3, hi=7, is_mux=True, comment="slot of the DTC carried in this frame"),
            Sig("DtcActiveCount", 5, hi=31),
        ] + [s for i in range(4) for s in (
            Sig(f"DtcCode{i}", 24, hi=16777215.0, mux=i, comment="UDS 3-byte DTC (e.g. 0x042000 = P0420-00)"),
            Sig(f"DtcStatus{i}", 3, hi=7, choices=DTC_STATUS, mux=i),
        )], comment="active diagnostic trouble codes, one slot per frame"),
        # ---- GNSS / telematics: 29-bit identifiers --------------------------------
        Msg(0x18F00100, "GNSS_POSITION", 100, "TCU", [
            Sig("Latitude", 32, 1e-7, lo=-90.0, hi=90.0, unit="deg", signed=True),
            Sig("Longitude", 32, 1e-7, lo=-180.0, hi=180.0, unit="deg", signed=True),
        ], extended=True),
        Msg(0x18F00200, "GNSS_MOTION", 100, "TCU", [
            Sig("GnssAltitude", 16, 0.1, offset=-1000.0, lo=-1000.0, hi=5000.0, unit="m"),
            Sig("GnssHeading", 16, 0.01, hi=359.99, unit="deg"),
            Sig("GnssSpeed", 16, 0.01, hi=300.0, unit="km/h"),
            Sig("GnssFixType", 3, hi=7, choices={0: "NoFix", 1: "DeadReckoning", 2: "Fix2D", 3: "Fix3D",
                                                 4: "DGNSS", 5: "RtkFloat", 6: "RtkFixed"}),
            Sig("GnssSatellites", 5, hi=31.0),
        ], extended=True, big_endian=True),
        Msg(0x18F00300, "GNSS_QUALITY", 1000, "TCU", [
            Sig("GnssHdop", 8, 0.1, hi=25.5),
            Sig("GnssVdop", 8, 0.1, hi=25.5),
            Sig("GnssHorizontalAccuracy", 12, 0.1, hi=409.5, unit="m"),
            Sig("GnssVerticalAccuracy", 12, 0.1, hi=409.5, unit="m"),
        ], extended=True),
        Msg(0x18F00400, "TELEMATICS_STATUS", 1000, "TCU", [
            Sig("CellularSignal", 8, 1.0, offset=-140.0, lo=-140.0, hi=-40.0, unit="dBm"),
            Sig("CellularTech", 3, hi=7, choices={0: "None", 1: "2G", 2: "3G", 3: "4G", 4: "5G"}),
            Sig("TcuState", 2, hi=3, choices={0: "Sleep", 1: "Standby", 2: "Online", 3: "Fault"}),
        ], extended=True),
    ]


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def layout(msg: Msg) -> None:
    """Assign start bits (DBC numbering) to every signal of ``msg``."""
    total = msg.dlc * 8
    limit = total - 12 if msg.alive else total
    sigs = list(msg.signals)
    if msg.alive:
        prefix = msg.name.title().replace("_", "")
        sigs += [Sig(f"{prefix}Counter", 4, hi=15, comment="rolling counter"),
                 Sig(f"{prefix}Checksum", 8, hi=255, comment="(id lo + id hi + dlc + bytes 0..dlc-2) mod 256")]

    def place(sig: Sig, pos: int) -> int:
        """``pos`` is a sequential position: LSB-first for Intel, MSB-first for Motorola."""
        if sig.bits % 8 == 0 and pos % 8 and (pos // 8 + 1) * 8 + sig.bits <= limit:
            pos = (pos // 8 + 1) * 8
        if msg.big_endian:
            start = (pos // 8) * 8 + (7 - pos % 8)
        else:
            start = pos
        msg.layout.append((sig, start))
        return pos + sig.bits

    pos = 0
    mux_base = None
    mux_end: dict[int, int] = {}
    for sig in sigs[: len(msg.signals)]:
        if sig.mux is None:
            pos = place(sig, pos)
            continue
        if mux_base is None:
            mux_base = pos
        end = place(sig, mux_end.get(sig.mux, mux_base))
        mux_end[sig.mux] = end
    pos = max([pos, *mux_end.values()])
    if pos > limit:
        raise ValueError(f"{msg.name}: {pos} bits do not fit in {limit}")
    if msg.alive:
        place(sigs[-2], total - 12)
        place(sigs[-1], total - 8)


def render(msgs: list[Msg]) -> str:
    """The DBC text for ``msgs``."""
    nodes = sorted({m.sender for m in msgs} | {"DCM"})
    out = ['VERSION "reference_car 1.0"', "", "NS_ :", "    CM_", "    BA_DEF_", "    BA_", "    VAL_",
           "    BA_DEF_DEF_", "", "BS_:", "", "BU_: " + " ".join(nodes), ""]
    comments, vals, attrs = [], [], []
    for m in msgs:
        fid = m.frame_id | (EXTENDED if m.extended else 0)
        out.append(f"BO_ {fid} {m.name}: {m.dlc} {m.sender}")
        for sig, start in m.layout:
            order = "0" if m.big_endian else "1"
            sign = "-" if sig.signed else "+"
            mux = " M" if sig.is_mux else (f" m{sig.mux}" if sig.mux is not None else "")
            hi = sig.hi if sig.hi is not None else (2 ** sig.bits - 1) * sig.scale + sig.offset
            receivers = "DCM" if m.sender != "DCM" else "Vector__XXX"
            out.append(f' SG_ {sig.name}{mux} : {start}|{sig.bits}@{order}{sign} ({_fmt(sig.scale)},'
                       f'{_fmt(sig.offset)}) [{_fmt(sig.lo)}|{_fmt(hi)}] "{sig.unit}" {receivers}')
            if sig.comment:
                comments.append(f'CM_ SG_ {fid} {sig.name} "{sig.comment}";')
            if sig.choices:
                pairs = " ".join(f'{k} "{v}"' for k, v in sorted(sig.choices.items(), reverse=True))
                vals.append(f"VAL_ {fid} {sig.name} {pairs} ;")
        out.append("")
        if m.comment:
            comments.append(f'CM_ BO_ {fid} "{m.comment}";')
        attrs.append(f'BA_ "GenMsgCycleTime" BO_ {fid} {m.cycle_ms};')
    out += ['CM_ "Reference connected passenger car, generated by dbc/make_reference_car.py";', *comments,
            'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 10000;', 'BA_DEF_ BO_ "GenMsgSendType" ENUM "Cyclic","Event";',
            'BA_DEF_DEF_ "GenMsgCycleTime" 100;', 'BA_DEF_DEF_ "GenMsgSendType" "Cyclic";', *attrs, *vals, ""]
    return "\n".join(out)


def build() -> str:
    """Lay out every message and return the DBC text."""
    msgs = messages()
    for m in msgs:
        layout(m)
    return render(msgs)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) ``dbc/reference_car.dbc``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the DBC on disk is out of date")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        return 0 if OUT.exists() and OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
