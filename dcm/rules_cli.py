"""``dcm rules``: run one rule worker of the speed layer, or list its alerts.

``dcm rules --config rules-service.toml [flags]``  run worker k of N (flags override the file)
``dcm rules --config ... --check-config``          validate the service and rules files and exit
``dcm rules alerts --state rules-0.sqlite [--vehicle V] [--json]``
``dcm rules ack --state rules-0.sqlite ALERT_ID``  mark an alert acknowledged
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("rules", help="run a rules worker (speed layer) or list its alerts")
    r.add_argument("action", nargs="?", choices=("run", "alerts", "ack"), default="run")
    r.add_argument("alert_id", nargs="?", help="for ack: the alert id")
    r.add_argument("--config", type=Path, help="rules service TOML file")
    r.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    r.add_argument("--broker", help="mqtt://host:port or mqtts://host:port")
    r.add_argument("--allow-plaintext", action="store_true", default=None,
                   help="plaintext mqtt:// and http:// webhooks beyond loopback, by explicit choice"
                        " (default: refused; use mqtts:// and https://)")
    r.add_argument("--topic-prefix")
    r.add_argument("--worker", type=int)
    r.add_argument("--workers", type=int)
    r.add_argument("--client-id")
    r.add_argument("--state", help="the worker's state database")
    r.add_argument("--rules", help="the deployment's rules TOML")
    r.add_argument("--dbc", action="append", help="a DBC whose schema is known up front (repeatable)")
    r.add_argument("--vehicle", help="for alerts: only this vehicle")
    r.add_argument("--json", action="store_true", help="for alerts: one JSON array")
    return r


def run(args: argparse.Namespace) -> int:
    """Errors propagate: :func:`dcm.cli.main` turns them into a message and an exit code."""
    if args.action == "alerts":
        return _alerts(args)
    if args.action == "ack":
        return _ack(args)
    return _run(args)


def _store(args: argparse.Namespace):
    from speed_layer.errors import StoreError
    from speed_layer.store import Store

    if not args.state or not Path(args.state).exists():
        raise StoreError(f"--state: no state database at {args.state!r}")
    return Store(args.state)


def _alerts(args: argparse.Namespace) -> int:
    alerts = _store(args).alerts(args.vehicle)
    if args.json:
        print(json.dumps(alerts))
    else:
        for a in alerts:
            state = "acknowledged" if a["acknowledged_at"] else a["status"]
            print(f"{a['id']}  {a['vehicle']}  {a['kind']:<20} {state:<12} {a['start']}..{a['end'] or ''}"
                  f"  {json.dumps(a['details'], sort_keys=True)}")
    return 0


def _ack(args: argparse.Namespace) -> int:
    if not args.alert_id:
        from dcm_base.errors import InputError

        raise InputError("ack: give the alert id")
    if not _store(args).acknowledge(args.alert_id):
        print(f"dcm rules ack: no unacknowledged alert {args.alert_id}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from speed_layer.config import load_rules
    from speed_layer.service import RulesService
    from speed_layer.service_config import load_service_config

    overrides = {"broker": args.broker, "allow_plaintext": args.allow_plaintext, "topic_prefix": args.topic_prefix,
                 "worker": args.worker, "workers": args.workers, "client_id": args.client_id, "state": args.state,
                 "rules": args.rules, "dbc": args.dbc}
    config = load_service_config(args.config, overrides)
    rules = load_rules(config.rules_path)
    if args.check_config:
        print(json.dumps({"ok": True, "worker": config.worker, "workers": config.workers,
                          "rules": [r.name for r in rules.rules], "geofences": [f.name for f in rules.fences],
                          "webhooks": [h.name for h in config.webhooks]}))
        return 0
    service = RulesService(config, rules)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    service.run()
    return 0
