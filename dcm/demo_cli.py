"""``dcm demo``: simulator → gateway → broker → sink, with a summary."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("demo", help="run simulator → gateway → broker → sink and print a summary")
    d.add_argument("--vehicles", type=int, default=2)
    d.add_argument("--duration", type=int, default=150, help="simulated seconds per vehicle")
    d.add_argument("--dbc", type=Path, help="any DBC file (default: the reference car)")
    d.add_argument("--broker", help="mqtt://host:port (default: a private mosquitto on a free port)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--fleet", type=int, default=12, metavar="N",
                   help="also publish a packet-mode fleet of N vehicles with injected scenarios (0: none)")
    d.add_argument("--fleet-duration", type=int, default=7200, metavar="S", help="its fleet time, ending now")
    d.add_argument("--workdir", type=Path, help="keep the lake, outboxes and sink state here")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--serve", nargs="?", const="127.0.0.1:8480", metavar="HOST:PORT",
                   help="afterwards, serve the API and dashboard on the demo's data (default 127.0.0.1:8480)")
    return d


def _left_out(result: dict) -> str:
    n = len(result["signals_left_out"])
    return f"; {n} DBC signals without a column: {', '.join(result['signals_left_out'][:3])}{' ...' if n > 3 else ''}" if n else ""


def _value_layer(result: dict) -> str:
    if not result["fleet_vehicles"]:
        return ""
    found = result["scenarios_found"]
    missed = sorted(k.split("@")[0] for k, ok in found.items() if not ok)
    alerts = ", ".join(f"{k} {n}" for k, n in result["alerts"].items()) or "none"
    return f"""
  fleet (packets, value layer)     {result['fleet_vehicles']} vehicles, {result['fleet_packets']:,} packets
  alerts raised                    {alerts}
  injected scenarios alerted       {sum(found.values())} of {len(found)}{' (not found: ' + ', '.join(missed) + ')' if missed else ''}
  trips in the lake                {result['trips']}"""


def run(args: argparse.Namespace) -> int:
    import dbc as dbc_files
    from dcm.demo import DemoSettings, run_demo

    workdir = args.workdir
    if args.serve and workdir is None:  # the served data must outlive the run
        import tempfile
        workdir = Path(tempfile.mkdtemp(prefix="dcm-demo-"))
    settings = DemoSettings(vehicles=args.vehicles, duration_s=args.duration, dbc_path=args.dbc or dbc_files.REFERENCE_DBC,
                            broker=args.broker, seed=args.seed, workdir=workdir,
                            fleet_vehicles=args.fleet, fleet_duration_s=args.fleet_duration)
    progress = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr))
    result = run_demo(settings, progress)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"""
dcm demo: {result['vehicles']} vehicles × {result['duration_s']} s of driving ({result['dbc']}, {result['signals']} signals{_left_out(result)})
  frames sent / read by gateways   {result['frames_sent']:,} / {result['frames_read']:,} (undecodable {result['frames_malformed']})
  minute packets published/stored  {result['packets_published']} / {result['packets_written']} (duplicates {result['duplicates']}, quarantined {result['quarantined']})
  rows in the Parquet lake         {result['rows_written']:,} of {result['vehicle_seconds']:,} vehicle-seconds
  cells differing from cantools    {result['mismatches']}
  bytes per vehicle-minute         {result['bytes_per_vehicle_minute']}{_value_layer(result)}
  elapsed                          {result['elapsed_s']} s  (broker {result['broker']})""")
    ok = result["mismatches"] == 0 and result["rows_written"] == result["vehicle_seconds"]
    if result["vehicle_seconds"] == 0:  # nothing was compared: not a pass
        print(f"dcm demo: nothing to check: {result['dbc']} gave no signal value in "
              f"{result['frames_sent']} frames sent", file=sys.stderr)
        ok = False
    if args.serve:
        from dcm.demo_serve import serve_demo
        serve_demo(workdir, args.serve)
    return 0 if ok else 1
