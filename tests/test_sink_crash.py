"""Exactly once across ``kill -9``: a sink *process* (``dcm sink --config``) is SIGKILLed at random
moments while packets stream in, restarted each time; at the end the lake holds every sent packet
exactly once (plain DuckDB over the Parquet files)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt

import dbc
from cloud_sink.lake import mask_vehicle
from cloud_sink.staging import Staging
from dcm.broker import free_port
from dcm.testing import until
from minute_packet import encode

from test_sink import SECRET, _packet

ROOT = Path(__file__).resolve().parent.parent
VEHICLES = ("KILL1", "KILL2", "KILL3")
PER_VEHICLE = 50


def _start(cfg: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "dcm.cli", "sink", "--config", str(cfg)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _publisher(broker, items, done: threading.Event) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    for topic, payload in items:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
        time.sleep(0.04)
    c.disconnect()
    c.loop_stop()
    done.set()


def _wait_connected(port: int, proc: subprocess.Popen, log: Path) -> None:
    def connected() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return "dcm_sink_broker_connected 1" in r.read().decode()
        except OSError:
            return False

    assert until(connected, 30, interval=0.1), "the sink did not connect"


def _stored(lake: Path) -> list[tuple]:
    if not any(lake.rglob("*.parquet")):
        return []
    return duckdb.connect().execute(
        f"SELECT vehicle, boot_id, seq, count(*), count(DISTINCT ts) FROM read_parquet('{lake}/**/*.parquet',"
        f" hive_partitioning = true, union_by_name = true) GROUP BY ALL ORDER BY ALL").fetchall()


def test_kill_9_mid_batch_then_restart_stores_every_packet_exactly_once(tmp_path, broker, schema):
    prefix = f"k{uuid.uuid4().hex[:6]}"
    (tmp_path / "key.bin").write_bytes(SECRET)
    cfg = tmp_path / "sink.toml"
    cfg.write_text(f'secret_file = "key.bin"\nstate = "state/sink.sqlite"\n'
                   f'quarantine = "state/quarantine"\ndbc = ["{dbc.REFERENCE_DBC}"]\nintake_batch = 20\n'
                   f'[lake]\nroot = "{(tmp_path / "lake").as_uri()}"\nroll_interval_s = 0.3\nchunk_packets = 7\n'
                   f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\ntopic_prefix = "{prefix}"\n'
                   f'client_id = "crash-{prefix}"\n')
    port = free_port()
    cfg.write_text(cfg.read_text().replace("[lake]", f'http = "127.0.0.1:{port}"\n[lake]'))
    boot = uuid.uuid4().bytes
    sent = {(v, s): _packet(schema, v, s, boot, rows=10) for v in VEHICLES for s in range(PER_VEHICLE)}
    items = [(f"{prefix}/{v}/telemetry", encode(p)) for (v, s), p in sorted(sent.items(), key=lambda kv: kv[0][1])]
    done = threading.Event()
    pub = threading.Thread(target=_publisher, args=(broker, items, done), daemon=True)
    rng = random.Random(int.from_bytes(boot[:4], "big"))
    log = tmp_path / "sink.log"
    kills = 0
    for _ in range(3):
        proc = _start(cfg, log)
        if not pub.is_alive() and not done.is_set():  # the broker keeps the sink's session from now on
            _wait_connected(port, proc, log)
            pub.start()
        time.sleep(rng.uniform(1.0, 3.0))  # start-up takes ~1 s: the kill lands while packets flow
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    pub.join(60)
    assert done.is_set()
    proc = _start(cfg, log)
    _wait_connected(port, proc, log)
    until(lambda: len(_stored(tmp_path / "lake")) >= len(sent), 60, interval=0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-2000:]
    rows = _stored(tmp_path / "lake")
    expected = sorted((mask_vehicle(SECRET, v), boot.hex(), s, 10, 10) for v, s in sent)
    assert rows == expected, (kills, len(rows), len(expected))
    staging = Staging(tmp_path / "state" / "sink.sqlite")
    assert staging.queue.pending() == 0 and staging.keys.count() == len(sent) and staging.keys.gaps() == []
    staging.close()
    assert kills == 3
