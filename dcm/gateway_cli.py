"""``dcm gateway``: read a CAN bus (or replay a log) and publish minute packets.

Configuration comes from ``--config FILE`` (TOML, see deploy/gateway.example.toml);
flags override it. ``--check-config`` validates, prints the same JSON summary as
``dcm sink --check-config`` (``{"ok": true, ...}``) and exits.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    g = sub.add_parser("gateway", help="read a CAN bus (or replay a log) and publish minute packets")
    g.add_argument("--config", type=Path, help="gateway TOML file")
    g.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    g.add_argument("--replay", type=Path, help="replay a candump -l .log, .asc or .blf file instead of a bus")
    g.add_argument("--replay-speed", type=float, default=1.0, help="replay speed factor (0 = as fast as possible)")
    g.add_argument("--vehicle-id")
    g.add_argument("--model")
    g.add_argument("--broker", help="mqtt://host:port or mqtts://host:port")
    g.add_argument("--allow-plaintext", action="store_true", default=None,
                   help="plaintext mqtt:// beyond loopback, by explicit choice (default: refused; use mqtts://)")
    g.add_argument("--interface")
    g.add_argument("--channel")
    g.add_argument("--bitrate", type=int)
    g.add_argument("--dbc", type=Path)
    g.add_argument("--outbox", type=Path)
    g.add_argument("--topic-prefix")
    return g


def run(args: argparse.Namespace) -> int:
    from dcm.cli import print_check
    from dcm.service_runner import run_until_signal
    from dcm_base.errors import InputError
    from gateway.config import check, load
    from gateway.outbox import OutboxError
    from gateway.replay import LogReplay
    from gateway.service import Gateway

    overrides = {
        "vehicle_id": args.vehicle_id, "model": args.model, "mqtt.url": args.broker,
        "can.interface": args.interface, "can.channel": args.channel, "can.bitrate": args.bitrate,
        "dbc.path": str(args.dbc) if args.dbc else None, "outbox.path": str(args.outbox) if args.outbox else None,
        "mqtt.topic_prefix": args.topic_prefix, "mqtt.allow_plaintext": args.allow_plaintext,
    }
    where = str(args.config) if args.config else "command line"
    config = load(args.config, overrides)
    summary = check(config, where)
    if args.check_config:
        print_check(summary)
        return 0
    replay = LogReplay(args.replay, speed=args.replay_speed or None) if args.replay else None
    try:
        try:
            gateway = Gateway(config, bus=replay)
        except OutboxError as exc:  # the outbox named in the config cannot be opened: bad input, not a failure
            raise InputError(str(exc)) from None
        run_until_signal(gateway)
    finally:
        if replay is not None:
            replay.shutdown()
    return 0
