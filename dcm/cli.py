"""``dcm``: the command line. Each subcommand imports its service lazily, so ``dcm gateway``
on a Pi never loads pyarrow. Library errors become one-line messages: exit 2 for bad
input (config, DBC, URL), 1 for runtime failures."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dcm", description="Edge-to-cloud vehicle telemetry")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run simulator → gateway → broker → sink and print a summary")
    d.add_argument("--vehicles", type=int, default=2)
    d.add_argument("--duration", type=int, default=150, help="simulated seconds per vehicle")
    d.add_argument("--dbc", type=Path, help="any DBC file (default: the reference car)")
    d.add_argument("--broker", help="mqtt://host:port (default: a private mosquitto on a free port)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--workdir", type=Path, help="keep the lake, outboxes and sink state here")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    _add_common(d)

    g = sub.add_parser("gateway", help="read a CAN bus and publish minute packets")
    g.add_argument("--vehicle-id", required=True)
    g.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    g.add_argument("--interface", default="socketcan")
    g.add_argument("--channel", default="can0")
    g.add_argument("--bitrate", type=int)
    g.add_argument("--dbc", type=Path)
    g.add_argument("--model", default="reference-car")
    g.add_argument("--outbox", type=Path, default=Path("dcm-outbox.sqlite"))
    g.add_argument("--topic-prefix", default="dcm")
    _add_common(g)

    s = sub.add_parser("sink", help="store packets from the broker in a Parquet lake")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--lake", type=Path, default=Path("lake"))
    s.add_argument("--state", type=Path, default=Path("sink-state/state.sqlite"))
    s.add_argument("--quarantine", type=Path, default=Path("sink-state/quarantine"))
    s.add_argument("--dbc", type=Path, action="append", default=[], help="DBC whose schema is known up front")
    s.add_argument("--secret-file", type=Path, help="key for masking vehicle ids (required outside demos)")
    s.add_argument("--topic-prefix", default="dcm")
    s.add_argument("--share-group", help="MQTT v5 shared subscription group, for N workers")
    s.add_argument("--client-id", default="dcm-sink")
    s.add_argument("--flush-interval", type=float, default=60.0)
    _add_common(s)

    m = sub.add_parser("simulate", help="drive one simulated vehicle's frames onto a CAN bus")
    m.add_argument("--interface", default="socketcan")
    m.add_argument("--channel", default="vcan0")
    m.add_argument("--dbc", type=Path)
    m.add_argument("--duration", type=float, default=60.0)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--fast", action="store_true", help="send as fast as the bus takes frames (default: real time)")
    _add_common(m)
    return ap


def _run_until_signal(service) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    asyncio.run(main())


def _demo(args: argparse.Namespace) -> int:
    import dbc as dbc_files
    from dcm.demo import DemoSettings, run_demo

    settings = DemoSettings(vehicles=args.vehicles, duration_s=args.duration, dbc_path=args.dbc or dbc_files.REFERENCE_DBC,
                            broker=args.broker, seed=args.seed, workdir=args.workdir)
    progress = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr))
    result = run_demo(settings, progress)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"""
dcm demo: {result['vehicles']} vehicles × {result['duration_s']} s of driving ({result['dbc']}, {result['signals']} signals)
  frames sent / read by gateways   {result['frames_sent']:,} / {result['frames_read']:,}
  minute packets published/stored  {result['packets_published']} / {result['packets_stored']} (duplicates {result['duplicates']}, quarantined {result['quarantined']})
  rows in the Parquet lake         {result['rows_stored']:,} of {result['vehicle_seconds']:,} vehicle-seconds
  cells differing from cantools    {result['mismatches']}
  bytes per vehicle-minute         {result['bytes_per_vehicle_minute']}
  elapsed                          {result['elapsed_s']} s  (broker {result['broker']})""")
    ok = result["mismatches"] == 0 and result["rows_stored"] == result["vehicle_seconds"]
    return 0 if ok else 1


def _gateway(args: argparse.Namespace) -> int:
    import dbc as dbc_files
    from dcm.broker import BrokerUrl
    from gateway.service import Gateway, GatewayConfig

    config = GatewayConfig(vehicle_id=args.vehicle_id, broker=BrokerUrl.parse(args.broker), outbox_path=args.outbox,
                           dbc_path=args.dbc or dbc_files.REFERENCE_DBC, model=args.model, interface=args.interface,
                           channel=args.channel, bitrate=args.bitrate, topic_prefix=args.topic_prefix)
    _run_until_signal(Gateway(config))
    return 0


def _sink(args: argparse.Namespace) -> int:
    from cloud_sink.service import Sink, SinkConfig
    from dcm.broker import BrokerUrl

    if args.secret_file:
        secret = args.secret_file.read_bytes().strip()
    else:
        logging.getLogger("dcm").warning("no --secret-file: masking vehicle ids with the public demo key")
        secret = b"dcm-demo-secret"
    config = SinkConfig(broker=BrokerUrl.parse(args.broker), lake_root=args.lake, state_path=args.state,
                        quarantine_dir=args.quarantine, vehicle_secret=secret, topic_prefix=args.topic_prefix,
                        share_group=args.share_group, client_id=args.client_id, dbc_paths=tuple(args.dbc),
                        flush_interval_s=args.flush_interval)
    _run_until_signal(Sink(config))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import time

    import can

    import dbc as dbc_files
    from simulator.bus_writer import send_frames
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(args.dbc or dbc_files.REFERENCE_DBC)
    vehicle = CanVehicle(db, seed=args.seed, start_time=time.time())
    with can.Bus(interface=args.interface, channel=args.channel) as bus:
        try:
            sent = send_frames(bus, vehicle.frames(args.duration), realtime=not args.fast)
        except KeyboardInterrupt:
            return 130
    print(f"sent {sent} frames on {args.interface}:{args.channel}")
    return 0


_COMMANDS = {"demo": _demo, "gateway": _gateway, "sink": _sink, "simulate": _simulate}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dbc import DbcError
    from dcm.broker import BrokerError
    from minute_packet import PacketError

    try:
        return _COMMANDS[args.command](args)
    except (DbcError, BrokerError, PacketError, OSError, ValueError) as exc:
        print(f"dcm {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
