"""``dcm simulate``: one vehicle onto a CAN bus (``can``), or a whole fleet (``fleet``).

``dcm simulate --interface ... --channel ...`` (no subcommand) still runs
the single-vehicle CAN mode.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _can_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    sup = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--interface", default=sup("socketcan"))
    p.add_argument("--channel", default=sup("vcan0"))
    p.add_argument("--dbc", type=Path, default=sup(None))
    p.add_argument("--duration", type=float, default=sup(60.0))
    p.add_argument("--seed", type=int, default=sup(1))
    p.add_argument("--fast", action="store_true", default=sup(False),
                   help="send as fast as the bus takes frames (default: real time)")


def add_parser(sub) -> argparse.ArgumentParser:
    m = sub.add_parser("simulate", help="simulate one vehicle onto a CAN bus, or a fleet (simulate fleet -h)")
    _can_args(m, defaults=True)
    modes = m.add_subparsers(dest="simulate_mode")
    _can_args(modes.add_parser("can", help="one simulated vehicle's frames onto a CAN bus"), defaults=False)
    f = modes.add_parser("fleet", help="a fleet of simulated vehicles publishing to a broker")
    f.add_argument("--vehicles", type=int, default=100)
    f.add_argument("--interval", type=int, default=60, help="seconds per packet (divides 60)")
    f.add_argument("--duration", type=int, default=600, help="simulated seconds")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--broker", help="mqtt://host:port (omit for a dry run that only generates)")
    f.add_argument("--mode", choices=("packet", "can"), default="packet")
    f.add_argument("--connections", type=int, default=4, help="MQTT connections, 0 = one per vehicle")
    f.add_argument("--speed", type=float, default=1.0, help="1 real time, k = k x faster, 0 as fast as possible")
    f.add_argument("--start", type=int, help="Unix second of the first row (default: so the run ends now)")
    f.add_argument("--topic-prefix", default="dcm")
    f.add_argument("--manifest", type=Path, help="write the ground-truth manifest (JSON) here")
    f.add_argument("--level", type=int, default=3, help="zstd level of packets (gateways use 19)")
    f.add_argument("--scenarios-per-kind", type=int, default=1)
    f.add_argument("--battery-decline", type=float, default=0.5, help="V/day of the battery-decline scenario")
    for kind in ("duplicate", "delay", "reorder", "corrupt", "disconnect"):
        f.add_argument(f"--{kind}", type=float, default=0.0, help=f"fraction of packets to {kind}"
                       if kind != "disconnect" else "per connection and interval: chance of an abrupt drop")
    f.add_argument("--delay-s", type=float, default=5.0)
    f.add_argument("--interface", default="virtual", help="CAN mode: virtual, or socketcan for vcan0..k")
    f.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return m


def run(args: argparse.Namespace) -> int:
    if getattr(args, "simulate_mode", None) == "fleet":
        return _run_fleet(args)
    return _run_can(args)


def _run_can(args: argparse.Namespace) -> int:
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


def _line(p: dict) -> str:
    rem = p.get("remaining_s")
    return (f"vehicles {p['vehicles']:,}  packets/s {p['packets_per_s']:,.0f}  bytes/s {p['bytes_per_s']:,.0f}  "
            f"acked {p['messages_acked']:,}  errors {p['errors']}  elapsed {p['elapsed_s']:.0f} s  "
            f"remaining {'-' if rem is None else f'{rem:.0f} s'}")


def _run_fleet(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import signal
    import threading
    import time

    from dcm_base.broker_url import BrokerUrl
    from dcm_base.errors import InputError
    from simulator.fleet_spec import FaultRates, FleetSpec

    broker = BrokerUrl.parse(args.broker) if args.broker else None
    if args.interval < 1 or 60 % args.interval:
        raise InputError("--interval must divide 60")
    now = int(time.time()) // args.interval * args.interval
    start = args.start if args.start is not None else (now - args.interval if args.speed == 1 else now - args.duration)
    start -= start % args.interval
    spec = FleetSpec(vehicles=args.vehicles, duration_s=args.duration, start_time=start, seed=args.seed,
                     interval_s=args.interval, scenarios_per_kind=args.scenarios_per_kind,
                     battery_decline_v_per_day=args.battery_decline,
                     faults=FaultRates(duplicate=args.duplicate, delay=args.delay, reorder=args.reorder,
                                       corrupt=args.corrupt, disconnect=args.disconnect, delay_s=args.delay_s))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), print("stopping...", file=sys.stderr)))

    def progress(p: dict) -> None:
        print(_line(p), file=sys.stderr, flush=True)

    if args.mode == "can":
        from dcm.fleet_can import CanFleetConfig, run_can_fleet

        if broker is None:
            raise InputError("CAN mode needs --broker (the gateways publish to it)")
        summary = asyncio.run(run_can_fleet(CanFleetConfig(spec, broker, topic_prefix=args.topic_prefix,
                                                           interface=args.interface, realtime=args.speed == 1),
                                            stop, progress))
    else:
        from simulator.fleet_runner import FleetRun, FleetRunConfig

        fleet = FleetRun(FleetRunConfig(spec, broker=broker, topic_prefix=args.topic_prefix,
                                        connections=args.connections, speed=max(0.0, args.speed),
                                        level=args.level, manifest_path=args.manifest))
        summary = fleet.run(stop, progress)
    if args.json:
        print(json.dumps(summary))
    else:
        print(_line(summary), file=sys.stderr)
        for key in ("complete", "packets_generated", "messages_sent", "messages_acked", "unacked", "expected",
                    "manifest"):
            if key in summary:
                print(f"{key}: {summary[key]}")
    return 0 if summary.get("complete") else 130
