"""``dcm bench <target>``: run a benchmark and print its figures (``--json`` for one JSON object).

Targets are modules ``bench.<target>`` with ``add_arguments(parser)`` and ``run(args) -> dict``.
"""
from __future__ import annotations

import argparse
import importlib
import json

TARGETS = {"codec": "bench.codec_bench", "gateway": "bench.gateway_bench", "simulate": "bench.simulate_bench",
           "sink": "bench.sink_bench", "staging": "bench.staging_bench",
           "alerts": "bench.alerts_bench", "views": "bench.views_bench",
           "api": "bench.api_bench", "faults": "bench.faults_bench"}


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help="run a benchmark (" + ", ".join(TARGETS) + ")")
    targets = b.add_subparsers(dest="target", required=True)
    for name, module_name in TARGETS.items():
        t = targets.add_parser(name)
        t.add_argument("--json", action="store_true", help="print one JSON object")
        importlib.import_module(module_name).add_arguments(t)
    return b


def run(args: argparse.Namespace) -> int:
    result = importlib.import_module(TARGETS[args.target]).run(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0
