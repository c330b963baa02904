"""``dcm gateway``: read a CAN bus and publish minute packets."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
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
    return g


def run(args: argparse.Namespace) -> int:
    import dbc as dbc_files
    from dcm.broker import BrokerUrl
    from dcm.service_runner import run_until_signal
    from gateway.service import Gateway, GatewayConfig

    config = GatewayConfig(vehicle_id=args.vehicle_id, broker=BrokerUrl.parse(args.broker), outbox_path=args.outbox,
                           dbc_path=args.dbc or dbc_files.REFERENCE_DBC, model=args.model, interface=args.interface,
                           channel=args.channel, bitrate=args.bitrate, topic_prefix=args.topic_prefix)
    run_until_signal(Gateway(config))
    return 0
