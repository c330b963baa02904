"""``dcm``: the command line.

Each subcommand has its own module here (``dcm.gateway_cli``,
``dcm.sink_cli``, ``dcm.simulate_cli``, ``dcm.demo_cli``, ``dcm.bench_cli``, ``dcm.rules_cli``;
``dcm.views_cli``, ``dcm.trips_cli`` and ``dcm.scores_cli`` share ``dcm.batch_cli``),
which defines ``add_parser(subparsers)`` and ``run(args) -> int`` and imports
its heavy dependencies only inside ``run``, so ``dcm gateway`` on a Pi never
loads pyarrow. Subcommands raise; :func:`main` alone turns an error of the
project's tree (:mod:`dcm_base.errors`) into a one-line message and its exit
code: 2 for bad input (config, DBC, URL), 1 for runtime failures.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from dcm_base.errors import DcmError, exit_code

SUBCOMMANDS = {
    "demo": "dcm.demo_cli",
    "gateway": "dcm.gateway_cli",
    "sink": "dcm.sink_cli",
    "simulate": "dcm.simulate_cli",
    "bench": "dcm.bench_cli",
    "rules": "dcm.rules_cli",
    "views": "dcm.views_cli",
    "trips": "dcm.trips_cli",
    "scores": "dcm.scores_cli",
    "api": "dcm.api_cli",
}


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    ap = argparse.ArgumentParser(prog="dcm", description="Edge-to-cloud vehicle telemetry")
    sub = ap.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = module.add_parser(sub)
        p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
        modules[name] = module
    return ap, modules


def print_check(summary: dict) -> None:
    """What ``--check-config`` prints for every service: one JSON object, ``"ok": true`` first."""
    print(json.dumps({"ok": True, **summary}))


def main(argv: list[str] | None = None) -> int:
    ap, modules = _parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return modules[args.command].run(args)
    except DcmError as exc:
        print(f"dcm {args.command}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt as exc:
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
