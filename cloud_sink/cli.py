"""``dcm sink``: store packets from the broker in a Parquet lake."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(sub) -> argparse.ArgumentParser:
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
    return s


def run(args: argparse.Namespace) -> int:
    from cloud_sink.service import Sink, SinkConfig
    from dcm.broker import BrokerUrl
    from dcm.service_runner import run_until_signal

    if args.secret_file:
        secret = args.secret_file.read_bytes().strip()
    else:
        log.warning("no --secret-file: masking vehicle ids with the public demo key")
        secret = b"dcm-demo-secret"
    config = SinkConfig(broker=BrokerUrl.parse(args.broker), lake_root=args.lake, state_path=args.state,
                        quarantine_dir=args.quarantine, vehicle_secret=secret, topic_prefix=args.topic_prefix,
                        share_group=args.share_group, client_id=args.client_id, dbc_paths=tuple(args.dbc),
                        flush_interval_s=args.flush_interval)
    run_until_signal(Sink(config))
    return 0
