"""``dcm sink``: store packets from the broker in a Parquet lake; ``init``, ``gaps`` and ``compact`` subcommands.

::

    dcm sink init --config sink.toml [--broker URL] [--lake ROOT]   make the secrets (0600) and a config
    dcm sink [--config sink.toml] [flags]          run the sink (flags override the file; secret_file required)
    dcm sink --config sink.toml --check-config     validate the configuration and exit
    dcm sink gaps --config sink.toml [--state DB]  missing seq ranges per vehicle and boot
    dcm sink compact --config sink.toml            merge small files of each lake partition
    dcm sink retain --config sink.toml [--json]    expire lake partitions, rejects, events, keys, alerts by age
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("sink", help="store packets from the broker in a Parquet lake"
                                    " (also: init, gaps, compact, retain)")
    s.add_argument("action", nargs="?", choices=("run", "init", "gaps", "compact", "retain"),
                   default="run")
    s.add_argument("--config", type=Path, help="TOML config file (see cloud_sink/config.py)")
    s.add_argument("--broker")
    s.add_argument("--allow-plaintext", action="store_true", default=None,
                   help="plaintext mqtt:// beyond loopback, by explicit choice (default: refused; use mqtts://)")
    s.add_argument("--lake", help="lake root: a folder or a URI (file:///..., s3://bucket/prefix)")
    s.add_argument("--layout", choices=("vehicle", "bucket"))
    s.add_argument("--state", type=Path, action="append", default=[],
                   help="staging database (gaps: repeat to combine the workers of a share group)")
    s.add_argument("--quarantine", type=Path)
    s.add_argument("--dbc", type=Path, action="append", default=[], help="DBC whose schema is known up front")
    s.add_argument("--secret-file", type=Path, help="key for masking vehicle ids (required; `dcm sink init` makes one)")
    s.add_argument("--topic-prefix")
    s.add_argument("--share-group", help="MQTT v5 shared subscription group, for N workers")
    s.add_argument("--client-id")
    s.add_argument("--worker-id", help="goes into lake file names (default: the client id)")
    s.add_argument("--roll-interval", type=float, help="seconds before waiting packets are written (default 900)")
    s.add_argument("--roll-mib", type=float, help="MiB of waiting packets that trigger a write (default 128)")
    s.add_argument("--http", help="host:port for /metrics and /vehicles/{masked}/latest")
    s.add_argument("--http-token-file", type=Path, help="file holding the bearer token the HTTP API requires")
    s.add_argument("--ca-file", type=Path, help="CA certificate of an mqtts:// broker")
    s.add_argument("--min-age", type=float, default=3600.0, help="compact: only files older than this (s)")
    s.add_argument("--json", action="store_true", help="init/gaps/compact/retain: print JSON")
    s.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return s


def _config(args: argparse.Namespace, *, need_secret: bool = True):
    from cloud_sink.config import load_config

    overrides = {
        "mqtt.url": args.broker, "mqtt.allow_plaintext": args.allow_plaintext,
        "lake.root": args.lake, "lake.layout": args.layout,
        "state": args.state[0] if args.state else None, "quarantine": args.quarantine,
        "dbc": [str(p) for p in args.dbc] or None, "secret_file": args.secret_file,
        "mqtt.topic_prefix": args.topic_prefix, "mqtt.share_group": args.share_group, "mqtt.client_id": args.client_id,
        "worker_id": args.worker_id, "lake.roll_interval_s": args.roll_interval, "lake.roll_mib": args.roll_mib,
        "http": args.http, "http_token_file": args.http_token_file, "mqtt.ca_file": args.ca_file,
    }
    return load_config(args.config, overrides, need_secret=need_secret, connects=need_secret)


def run(args: argparse.Namespace) -> int:
    from cloud_sink.config import check

    from dcm.cli import print_check

    if args.action == "init":
        return _init(args)
    config = _config(args, need_secret=args.action == "run")  # gaps, compact and retain never mask an id
    if args.check_config:
        print_check(check(config, str(args.config) if args.config else "command line"))
        return 0
    if args.action == "gaps":
        return _gaps(args, config)
    if args.action == "compact":
        return _compact(args, config)
    if args.action == "retain":
        return _retain(args, config)
    return _serve(config)


def _init(args: argparse.Namespace) -> int:
    from dcm_base.errors import InputError

    from dcm.sink_init import init_sink

    if args.config is None:
        raise InputError("init: --config PATH names the sink.toml to create (its secrets go beside it)")
    made = init_sink(args.config, broker=args.broker or "mqtt://127.0.0.1:1883", lake=args.lake or "lake")
    if args.json:
        print(json.dumps(made))
    else:
        print(f"wrote {made['config']}, {made['secret_file']} and {made['http_token_file']} (mode 0600);"
              f" check it: dcm sink --config {made['config']} --check-config")
    return 0


def _serve(config) -> int:
    from cloud_sink.service import Sink
    from dcm.service_runner import run_until_signal

    from dcm.allocator import keep_freed_memory

    keep_freed_memory()  # the lake writer reuses its chunk arrays instead of faulting in fresh pages
    run_until_signal(Sink(config))
    return 0


def _gaps(args: argparse.Namespace, config) -> int:
    from cloud_sink.gaps import union_gaps

    from dcm_base.errors import InputError

    paths = args.state or [config.state_path]
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such staging database")
    gaps = union_gaps(paths)
    if args.json:
        print(json.dumps([{"vehicle": g.vehicle, "boot": g.boot.hex(), "first": g.first, "last": g.last,
                           "missing": g.missing} for g in gaps]))
    else:
        for g in gaps:
            span = str(g.first) if g.first == g.last else f"{g.first}-{g.last}"
            print(f"{g.vehicle}\t{g.boot.hex()}\t{span}\t{g.missing}")
        print(f"{len(gaps)} gaps, {sum(g.missing for g in gaps)} packets missing", file=sys.stderr)
    return 0


def _retain(args: argparse.Namespace, config) -> int:
    from cloud_sink.retention import DAY_S, retain

    now = time.time()
    report = retain(config, now)
    if config.alerts_days is not None:
        from speed_layer.store import Store

        report["alerts"] = {}
        for path in config.alert_stores:
            store = Store(path)  # beside a live rule worker: one transaction, WAL, busy timeout
            try:
                report["alerts"][str(path)] = store.expire_alerts(now - config.alerts_days * DAY_S)
            finally:
                store.close()
    if args.json:
        print(json.dumps(report))
    else:
        for part, figures in report.items():
            print(f"{part}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return 0


def _compact(args: argparse.Namespace, config) -> int:
    from cloud_sink.compact import compact_lake
    from cloud_sink.lake import Lake

    lake = Lake(config.lake_root, layout=config.layout, buckets=config.buckets, compression=config.compression)
    report = compact_lake(lake, min_age_s=args.min_age, target_bytes=config.roll_bytes,
                          compression=config.compact_compression)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['partitions']} partitions: {report['merged_files']} files merged into "
              f"{report['outputs']}, {report['rows']} rows, {report['duplicate_rows']} duplicate rows dropped")
    return 0
