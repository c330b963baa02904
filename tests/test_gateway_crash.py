"""kill -9 the gateway at random moments: no completed packet is ever lost, the outbox stays readable."""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from helpers.mqtt_recorder import Recorder

from gateway.outbox import Outbox
from minute_packet import decode

HELPER = Path(__file__).parent / "helpers" / "gateway_proc.py"
TRIALS = 20


def _start(outbox: Path, broker, prefix: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, str(HELPER), str(outbox), broker.host, str(broker.port), prefix, *extra],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def _outbox_keys(path: Path) -> set[tuple[str, int]]:
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    box = Outbox(path)
    keys = {(decode(item.payload).boot_id.hex(), decode(item.payload).seq) for item in box.peek(10_000)}
    box.close()
    return keys


def test_kill_9_at_random_points_loses_no_completed_packet(tmp_path, broker):
    rng = random.Random(1234)
    prefix = f"k{uuid.uuid4().hex[:6]}"
    outbox = tmp_path / "outbox.sqlite"
    rec = Recorder(broker, [f"{prefix}/+/telemetry"], client_id=f"rec-{prefix}")

    def received() -> set[tuple[str, int]]:
        return {(p.boot_id.hex(), p.seq) for p in (decode(m[1]) for m in list(rec.messages))}

    def parse(lines) -> set[tuple[str, int]]:
        return {(line.split()[1], int(line.split()[2])) for line in lines if line.startswith("STORED ")}

    stored: set[tuple[str, int]] = set()
    for _ in range(TRIALS):
        proc = _start(outbox, broker, prefix)
        first = proc.stdout.readline()  # packets are being made: now kill it somewhere in the stream
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        out, _ = proc.communicate()
        stored |= parse([first, *out.splitlines()])
        waiting = _outbox_keys(outbox)  # readable after every crash
        # every committed packet is either still in the outbox or reached the broker
        assert rec.wait_for(lambda ms: stored <= received() | waiting, timeout=10), stored - received() - waiting
    assert len(stored) >= TRIALS  # every crash happened while packets were being made
    # a clean start drains everything the crashes left behind
    proc = _start(outbox, broker, prefix, "--no-frames")
    assert rec.wait_for(lambda ms: stored <= received(), timeout=30), stored - received()
    # PUBACKed packets leave the outbox just after the broker has them: wait for that, then stop
    assert rec.wait_for(lambda ms: not _outbox_keys(outbox), timeout=30), _outbox_keys(outbox)
    proc.terminate()
    proc.wait(30)
    rec.close()
