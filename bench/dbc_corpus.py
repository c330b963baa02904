"""Run the end-to-end demo over a corpus of DBC files and sort the outcomes.

``python -m bench.dbc_corpus DIR [--jobs N] [--timeout S] [--duration 65] [--out results.jsonl]``

Every ``*.dbc`` under ``DIR`` (recursively) is first loaded with the project's
own loader (:func:`dbc.load`); a file it refuses is recorded as
``dbc_refused`` and not run. Every other file runs
``dcm demo --dbc F --vehicles 1 --duration D --json`` in its own subprocess
(own session, so a timeout kills the demo's private broker too). One JSON
line per DBC goes to ``--out`` as soon as it is known (``--resume`` skips
paths already there); a JSON summary is printed at the end.

Outcomes: ``ok`` (exit 0), ``mismatch`` (cells differ from cantools),
``rows_missing`` (no mismatch but fewer rows than vehicle-seconds),
``quarantined`` (the sink quarantined packets), ``no_data`` (no vehicle-second
was expected, so nothing was checked; the demo exits 1), ``frames_malformed`` (the
cells compared are equal, but the gateway could not decode some frames), ``input_error`` (exit 2),
``crash:<Exception>`` (a traceback), ``timeout`` and ``no_json``.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def find_dbcs(root: Path) -> list[Path]:
    """Every DBC file under ``root``, sorted (the suffix is matched case-insensitively)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".dbc")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def classify(code: int | None, demo: dict[str, Any] | None, stderr: str) -> str:
    """The outcome category of one demo run (see the module docstring)."""
    if code is None:
        return "timeout"
    if demo is not None:
        if demo.get("mismatches"):
            return "mismatch"
        if demo.get("quarantined"):
            return "quarantined"
        rows = demo.get("rows_written", demo.get("rows_stored"))  # older demos: rows_stored
        if rows != demo.get("vehicle_seconds"):
            return "rows_missing"
        if not demo.get("vehicle_seconds"):
            return "no_data"  # nothing was sent or decoded, so nothing was checked
        if demo.get("frames_malformed"):
            return "frames_malformed"  # equal where compared, but frames the gateway could not decode
        return "ok" if code == 0 else "no_json"
    if code == 2:
        return "input_error"
    if "Traceback (most recent call last)" in stderr:
        return "crash:" + _last_line(stderr).split(":", 1)[0]
    return "no_json"


def run_one(path: Path, *, duration: int, timeout: float) -> dict[str, Any]:
    """Run the demo on one DBC and return its result record."""
    cmd = [sys.executable, "-m", "dcm.cli", "demo", "--dbc", str(path.resolve()), "--vehicles", "1",
           "--duration", str(duration), "--fleet", "0", "--json"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the demo and the broker it started
        out, err = proc.communicate()
        code = None
    demo: dict[str, Any] | None = None
    try:
        parsed = json.loads(_last_line(out) or "null")
        demo = parsed if isinstance(parsed, dict) else None
    except ValueError:
        pass
    record: dict[str, Any] = {"path": str(path), "exit": code, "outcome": classify(code, demo, err),
                              "elapsed_s": round(time.monotonic() - t0, 1)}
    if demo is not None:
        record["demo"] = demo
    else:
        record["stderr"] = _last_line(err)[:500]
    return record


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts over all records: DBCs, loaded, ok, mismatching and failures by category."""
    outcomes = collections.Counter(r["outcome"] for r in records)
    return {
        "dbcs": len(records),
        "loaded": sum(r["outcome"] != "dbc_refused" for r in records),
        "ok": outcomes.get("ok", 0),
        "mismatching": outcomes.get("mismatch", 0),
        "failed": {k: v for k, v in sorted(outcomes.items()) if k not in ("ok", "mismatch")},
        "mismatched_cells": sum(r.get("demo", {}).get("mismatches", 0) for r in records),
    }


def _refusal(path: Path) -> dict[str, Any] | None:
    """A ``dbc_refused`` record when the project's loader refuses the file, else None."""
    import dbc as dbc_files

    try:
        dbc_files.load(path)
    except dbc_files.DbcError as exc:
        return {"path": str(path), "exit": None, "outcome": "dbc_refused", "elapsed_s": 0.0,
                "stderr": str(exc).splitlines()[0][:500]}
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dbc_corpus", description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="directory searched recursively for *.dbc")
    ap.add_argument("--jobs", type=int, default=1, help="demos run at once (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a demo is killed")
    ap.add_argument("--duration", type=int, default=65, help="simulated seconds per demo")
    ap.add_argument("--out", type=Path, default=Path("results.jsonl"), help="one JSON line per DBC")
    ap.add_argument("--resume", action="store_true", help="keep --out and skip the DBCs already in it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.dir.is_dir():
        ap.error(f"{args.dir} is not a directory")

    records: list[dict[str, Any]] = []
    if args.resume and args.out.exists():
        records = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    done = {r["path"] for r in records}
    todo: list[Path] = []
    with args.out.open("a" if args.resume else "w") as out:
        def keep(record: dict[str, Any]) -> None:
            records.append(record)
            out.write(json.dumps(record) + "\n")
            out.flush()
            log.info("%s %s (%.1f s)", record["outcome"], record["path"], record["elapsed_s"])

        for path in find_dbcs(args.dir):
            if str(path) in done:
                continue
            refused = _refusal(path)
            if refused is not None:
                keep(refused)
            else:
                todo.append(path)
        log.info("%d DBCs to run, %d jobs", len(todo), args.jobs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_one, p, duration=args.duration, timeout=args.timeout) for p in todo]
            for future in concurrent.futures.as_completed(futures):
                keep(future.result())
    print(json.dumps(summarise(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
