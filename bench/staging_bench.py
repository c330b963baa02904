"""``dcm bench staging``: the sink's durable staging commit (dedupe lookup + insert, one
transaction of ``--batch`` packets) when the database already holds ``--keys`` dedupe keys, as a
fleet-scale sink's does; beside the baseline lookup that SQLite answers with a table scan (a
row-value ``IN (VALUES ...)``, the previous version's) in the same run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

SCANNING_SQL = "SELECT vehicle, boot, seq FROM packets WHERE (vehicle, boot, seq) IN (VALUES {marks})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", type=int, default=1_000_000, help="dedupe keys staged before measuring")
    p.add_argument("--batch", type=int, default=500, help="packets per staging commit")
    p.add_argument("--commits", type=int, default=5, help="measured commits per variant")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import cloud_sink.staging_keys as staging_mod
    from cloud_sink.staging import NewPacket, Staging

    vehicles = 100_000
    boot = bytes(16)

    def batch(first: int, seq: int) -> list[NewPacket]:
        return [NewPacket(f"V{first + i:07d}", boot, seq, b"f" * 8, "m", "00", 0, 60, b"x" * 100, 0.0)
                for i in range(args.batch)]

    result: dict[str, Any] = {"keys": 0, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="dcm-bench-staging-") as tmp:
        staging = Staging(Path(tmp) / "state.sqlite")
        try:
            seq = 0
            while staging.keys.count() < args.keys:
                for first in range(0, vehicles, args.batch):
                    staging.stage(batch(first, seq))
                seq += 1
            result["keys"] = staging.keys.count()
            ours = staging_mod.SEEN_SQL
            for name, sql in (("commit_ms", ours), ("baseline_scanning_commit_ms", SCANNING_SQL)):
                staging_mod.SEEN_SQL = sql
                t = time.perf_counter()
                for k in range(args.commits):
                    seq += 1
                    staging.stage(batch((k * args.batch) % vehicles, seq))
                result[name] = round((time.perf_counter() - t) / args.commits * 1000, 1)
            staging_mod.SEEN_SQL = ours
        finally:
            staging.close()
    result["us_per_packet"] = round(result["commit_ms"] * 1000 / args.batch, 1)
    result["baseline_us_per_packet"] = round(result["baseline_scanning_commit_ms"] * 1000 / args.batch, 1)
    return result
