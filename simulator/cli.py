"""``dcm simulate``: drive a simulated vehicle's frames onto a CAN bus."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    m = sub.add_parser("simulate", help="drive one simulated vehicle's frames onto a CAN bus")
    m.add_argument("--interface", default="socketcan")
    m.add_argument("--channel", default="vcan0")
    m.add_argument("--dbc", type=Path)
    m.add_argument("--duration", type=float, default=60.0)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--fast", action="store_true", help="send as fast as the bus takes frames (default: real time)")
    return m


def run(args: argparse.Namespace) -> int:
    import time

    import can

    import dbc as dbc_files
    from simulator.bus_writer import send_frames
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(args.dbc or dbc_files.REFERENCE_DBC)
    vehicle = CanVehicle(db, seed=args.seed, start_time=time.time())
    with can.Bus(interface=args.interface, channel=args.channel) as bus:
        sent = send_frames(bus, vehicle.frames(args.duration), realtime=not args.fast)
    print(f"sent {sent} frames on {args.interface}:{args.channel}")
    return 0
