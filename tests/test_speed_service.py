"""The rules service through a real Mosquitto: two workers on their own sessions, duplicates and
out-of-order arrival, a worker SIGKILLed after a commit and before its acknowledgements (redelivery),
alerts published QoS 1 per vehicle, webhooks that fail then recover."""
from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt

import dbc
from dcm.testing import until
from minute_packet.masking import mask_vehicle
from speed_layer.sequencer import digest
from speed_layer.service import RulesService, owner
from speed_layer.service_config import load_service_config
from speed_layer.store import Store

from helpers.mqtt_recorder import Recorder
from test_speed_sequencer import as_set, packets, run

RULES_TOML = """builtins = false
[rules.speeding]
limit_kmh = 130
min_duration_s = 10
[rules.harsh_braking]
[rules.crash]
[rules.dtc]
"""
VEHICLES = ["VA", "VB", "VC", "VD", "VE"]
ORDER = [0, 2, 1, 3, 3, 4, 6, 5, 7, 0, 2]  # out of order, with duplicates


def publish(broker, items: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    infos = [c.publish(topic, payload, qos=1) for topic, payload in items]
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def write_config(tmp_path: Path, broker, prefix: str, worker: int, workers: int, extra: str = "") -> Path:
    (tmp_path / "rules.toml").write_text(RULES_TOML)
    path = tmp_path / f"worker{worker}.toml"
    path.write_text(f'''broker = "mqtt://{broker.host}:{broker.port}"
topic_prefix = "{prefix}"
worker = {worker}
workers = {workers}
client_id = "{prefix}-rules-{worker}"
state = "w{worker}.sqlite"
rules = "rules.toml"
dbc = ["{dbc.REFERENCE_DBC}"]
batch = 5
{extra}''')
    return path


class Worker:
    """``dcm rules`` in a process of its own, with -v so it logs when it has subscribed."""

    def __init__(self, config: Path, log: Path, fault: str | None = None) -> None:
        env = dict(os.environ)
        env.pop("DCM_RULES_FAULT", None)
        if fault:
            env["DCM_RULES_FAULT"] = fault
        self.log = log
        self.out = open(log, "ab")
        start = log.stat().st_size
        self.proc = subprocess.Popen([sys.executable, "-m", "dcm.cli", "rules", "-v", "--config", str(config)],
                                     stdout=self.out, stderr=subprocess.STDOUT, env=env)
        assert until(lambda: b"subscribed as" in log.read_bytes()[start:] or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(30)
        self.out.close()
        return rc


def test_two_workers_kill_9_and_redelivery_give_the_in_order_alerts(tmp_path, broker):
    prefix = f"r{uuid.uuid4().hex[:6]}"
    owners = {v: owner(v, 2) for v in VEHICLES}
    assert set(owners.values()) == {0, 1}  # both workers have vehicles
    expected = as_set(sorted(sum((run(packets(v))[0] for v in VEHICLES), []),
                             key=lambda a: (a["vehicle"], a["start"], a["id"])))
    recorder = Recorder(broker, [f"{prefix}/+/alerts"], client_id=f"{prefix}-rec")
    configs = [write_config(tmp_path, broker, prefix, k, 2) for k in range(2)]
    logs = [tmp_path / f"w{k}.log" for k in range(2)]
    w0 = Worker(configs[0], logs[0], fault="kill_after_commit:2")
    w1 = Worker(configs[1], logs[1])
    items = [(f"{prefix}/{v}/telemetry", packets(v)[i]) for i in ORDER for v in VEHICLES]
    publish(broker, items)
    assert w0.proc.wait(60) == -9  # killed itself after its 2nd commit, before acknowledging it
    w0.out.close()
    w0 = Worker(configs[0], logs[0])  # same client id: its session redelivers what was not acknowledged

    stores = [Store(tmp_path / f"w{k}.sqlite") for k in range(2)]

    def union():
        return as_set(sorted(stores[0].alerts() + stores[1].alerts(), key=lambda a: (a["vehicle"], a["start"], a["id"])))
    try:
        assert until(lambda: union() == expected and all(s.outbox_depth() == 0 for s in stores), 60), union()
    finally:
        assert w0.stop() == 0 and w1.stop() == 0
    for k, s in enumerate(stores):
        assert {a["vehicle"] for a in s.alerts()} == {v for v, o in owners.items() if o == k}
    injected = len(ORDER) - 8  # duplicate deliveries per vehicle
    dups = [s.counters().get("duplicates", 0) for s in stores]
    own = [sum(1 for o in owners.values() if o == k) for k in range(2)]
    assert dups[1] == injected * own[1]
    assert dups[0] > injected * own[0]  # plus the redelivered batch, dropped as duplicates
    assert all(s.counters().get("replays", 0) > 0 for s in stores)
    # every alert's final version went out on its vehicle's alerts topic
    assert until(lambda: all(any(t == f"{prefix}/{a['vehicle']}/alerts" and json.loads(p)["digest"] == digest(a)
                                 for t, p, _ in recorder.messages)
                             for s in stores for a in s.alerts()), 10)
    recorder.close()


class _Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, fail_first: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first = fail_first
        self.requests = 0
        self.accepted: list[tuple[str, dict]] = []
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv: _Receiver = self.server  # type: ignore[assignment]
        with srv.lock:
            srv.requests += 1
            fail = srv.requests <= srv.fail_first
            if not fail:
                srv.accepted.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.send_response(500 if fail else 204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_webhook_that_fails_then_recovers_gets_every_alert_once(tmp_path, broker):
    prefix = f"h{uuid.uuid4().hex[:6]}"
    receiver = _Receiver(fail_first=4)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    (tmp_path / "hook.token").write_text("s3cret-token-0123456789\n")
    (tmp_path / "mask.key").write_bytes(b"lake-masking-key")
    cfg_path = write_config(tmp_path, broker, prefix, 0, 1, extra=f'''lake = "lake"
secret_file = "mask.key"
[[webhooks]]
name = "ops"
url = "http://127.0.0.1:{receiver.server_address[1]}/alerts"
token_file = "hook.token"
''')
    service = RulesService(load_service_config(cfg_path))
    service.webhooks.backoff = lambda attempts, rng: 0.05 * (attempts + 1)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.connected.wait(10)
        publish(broker, [(f"{prefix}/VA/telemetry", p) for p in packets("VA")] +
                [(f"{prefix}/VA/events", b"not yet specified")])
        store = Store(tmp_path / "w0.sqlite")
        assert until(lambda: len(store.alerts()) == 5 and store.outbox_depth() == 0, 30)
    finally:
        service.stop()
        thread.join(30)
    notified = store.db.execute("SELECT alert_id, status, digest FROM notified ORDER BY 1, 2").fetchall()
    keys = sorted(k for k, _ in receiver.accepted)
    assert keys == sorted(f"{a}:{s}:{d}" for a, s, d in notified)  # each version once, none lost
    assert len(set(keys)) == len(keys)
    counters = store.counters()
    assert counters["webhook_failures:ops"] == 4 and counters["webhook_sent:ops"] == len(keys)
    assert counters["rejected_event:bad_magic"] == 1
    final = {a["id"]: a for a in store.alerts()}
    last = {}
    for _, body in receiver.accepted:
        last[body["id"]] = body
    assert {i: (b["status"], b["digest"]) for i, b in last.items()} == {i: (a["status"], digest(a)) for i, a in final.items()}
    assert store.acknowledge(next(iter(final))) and store.alert(next(iter(final)))["acknowledged_at"]
    receiver.shutdown()
    # the lake has the same alerts under the masked vehicle id, never the raw one
    rows = duckdb.connect().execute(
        f"SELECT id, vehicle, status, worker FROM read_parquet('{tmp_path}/lake/alerts/*/*.parquet',"
        " hive_partitioning = true) ORDER BY id").fetchall()
    assert rows == sorted((i, mask_vehicle(b"lake-masking-key", "VA"), a["status"], 0) for i, a in final.items())


def test_service_config_errors_name_the_key(tmp_path):
    import pytest
    from speed_layer.errors import RulesConfigError
    bad = tmp_path / "bad.toml"
    for body, message in [('state = "x"', "broker: missing"),
                          ('broker = "http://x"\nstate = "x"', "broker: broker URL must look like mqtt://"),
                          ('broker = "mqtt://h"\nstate = "x"\nworker = 2\nworkers = 2', "worker: must be below workers"),
                          ('broker = "mqtt://h"\nstate = "x"\n[[webhooks]]\nname = "a"\nurl = "ftp://x"',
                           "webhooks[0].url: must be an http"),
                          ('broker = "mqtt://h"\nstate = "x"\ncolour = 1', "colour: unknown key"),
                          ('broker = "mqtt://h"\nstate = "x"\nlake = "lake"', "secret_file: required with lake")]:
        bad.write_text(body)
        with pytest.raises(RulesConfigError, match=re.escape(message)):
            load_service_config(bad)


def test_dcm_rules_lists_and_acknowledges_alerts(tmp_path, capsys):
    from dcm.cli import main
    from speed_layer.sequencer import Sequencer

    from test_speed_sequencer import RULES, fingerprint, schema

    store = Store(tmp_path / "w.sqlite")
    seq = Sequencer(store, RULES, lambda fp: schema() if fp == fingerprint() else None)
    for data in packets("VA"):
        with store.transaction():
            seq.ingest(data)
    assert main(["rules", "alerts", "--state", str(tmp_path / "w.sqlite"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listed] == [a["id"] for a in store.alerts()] and len(listed) == 5
    assert main(["rules", "ack", listed[0]["id"], "--state", str(tmp_path / "w.sqlite")]) == 0
    assert main(["rules", "ack", listed[0]["id"], "--state", str(tmp_path / "w.sqlite")]) == 1  # already
    assert main(["rules", "alerts", "--state", str(tmp_path / "w.sqlite")]) == 0
    assert "acknowledged" in capsys.readouterr().out.splitlines()[0]
    assert main(["rules", "alerts", "--state", str(tmp_path / "missing.sqlite")]) == 2
    assert main(["rules", "--check-config", "--state", "x.sqlite"]) == 2
    assert "broker: missing" in capsys.readouterr().err


def test_a_running_worker_takes_up_geofences_the_api_writes(tmp_path):
    """PUT /geofences writes the fence store (fleet_api.geofences.GeofenceStore); the rule worker
    reloads its rules when the store changes, keeps them when the new file is refused."""
    from dcm_base.broker_url import BrokerUrl
    from fleet_api.geofences import GeofenceStore
    from speed_layer.service_config import ServiceConfig

    rules_path = tmp_path / "rules.toml"
    rules_path.write_text('geofences_file = "fences.json"\n[rules.yard_watch]\ntype = "geofence"\nfences = []\n')
    service = RulesService(ServiceConfig(broker=BrokerUrl("127.0.0.1", 1), state_path=tmp_path / "rules.sqlite",
                                         rules_path=rules_path, client_id="reload-test"))
    try:
        assert service.rules.fences == () and not service.maybe_reload()
        GeofenceStore(rules_path).put("yard", {"circle": {"lat": 48.1, "lon": 11.5, "radius_m": 300}})
        assert service.maybe_reload() and [f.name for f in service.rules.fences] == ["yard"]
        assert service.sequencer.rules is service.rules  # the next packet is applied with them
        (tmp_path / "fences.json").write_text("{not json")
        assert not service.maybe_reload() and [f.name for f in service.rules.fences] == ["yard"]
        assert service.store.counters().get("rules_reload_refused") == 1
    finally:
        service.store.close()
