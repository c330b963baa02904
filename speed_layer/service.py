"""The rules service (``dcm rules``): worker k of N applies the rules to its share of the vehicles.

Every worker subscribes, with its own persistent session (MQTT v5, clean start off, QoS 1, manual
acknowledgement), to ``<prefix>/+/telemetry``, ``<prefix>/+/events`` and ``<prefix>/schemas/+`` and
keeps only the vehicles it owns (:func:`owner`: SHA-256 of the vehicle id mod N; the vehicle is
in the topic, so the others cost no decode and are acknowledged at once). All packets of a
vehicle therefore meet one worker and its state lives in one database. A batch of messages is
applied in one transaction (:class:`~speed_layer.sequencer.Sequencer`), the resulting alert
versions are queued in the same transaction for MQTT (QoS 1 on ``<prefix>/<vehicle>/alerts``)
and each webhook, and only then are the messages acknowledged. Design: ``docs/speed-layer.md``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import dbc
from minute_packet import PacketDecodeError, Schema, SchemaError, TopicError, Topics, codec, event_packet, schema_from_dbc

from .config import RulesConfig, load_rules
from .errors import RulesConfigError
from .lake_export import export_alerts
from .rules import AlertChange
from .sequencer import Sequencer, digest
from .service_config import ServiceConfig
from .store import Store
from .webhook import WebhookSender

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
PUBLISH_BATCH = 200
MAX_INFLIGHT = 1000  # alert messages handed to paho and not yet acknowledged (bounds its queue)
PRUNE_EVERY_S = 3600
RELOAD_CHECK_S = 5.0  # how often the rules file and its geofence store are checked for changes
# "kill_after_commit:N": SIGKILL itself after the N-th commit that applied packets, before acknowledging
FAULT_ENV = "DCM_RULES_FAULT"


def owner(vehicle: str, workers: int) -> int:
    """The worker (0..workers-1) that owns a vehicle: first 8 bytes of SHA-256 of its id, mod N."""
    return int.from_bytes(hashlib.sha256(vehicle.encode()).digest()[:8], "big") % workers


@dataclasses.dataclass(frozen=True)
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int


class RulesService:
    """One rule worker. :meth:`run` blocks until :meth:`stop`."""

    def __init__(self, config: ServiceConfig, rules: RulesConfig | None = None) -> None:
        self.config = config
        self.rules = rules if rules is not None else load_rules(config.rules_path)
        self.topics = Topics(config.topic_prefix)
        self.store = Store(config.state_path)
        self.schemas: dict[bytes, Schema] = {}
        for fp, text in self.store.schemas().items():
            self.schemas[fp] = Schema.from_json(text)
        for path in config.dbc_paths:
            s = schema_from_dbc(dbc.load(path), source=Path(path).name)
            self.schemas[s.fingerprint] = s
        self.sequencer = Sequencer(self.store, self.rules, self.schemas.get, history=config.history)
        self.targets = ["mqtt", *(h.target for h in config.webhooks)]
        self.limits = {"mqtt": config.mqtt_max_queue, **{h.target: h.max_queue for h in config.webhooks}}
        self.webhooks = WebhookSender(config.state_path, config.webhooks)
        self.connected = threading.Event()
        self.commits = 0
        self.ingested = 0
        self.foreign = 0
        self._queue: queue.Queue[_Msg] = queue.Queue(maxsize=config.queue_size)
        self._pubacks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # mqtt mid -> outbox id
        self._inflight_ids: set[int] = set()
        self._stop = threading.Event()
        self._sub_mid: int | None = None
        self._fault_after = self._fault()
        self._exported: tuple[int, float] | None = None
        self._client = self._make_client()
        self._rules_stamp = self._stamp()
        self.reloads = 0

    @staticmethod
    def _fault() -> int | None:
        spec = os.environ.get(FAULT_ENV, "")
        if spec.startswith("kill_after_commit:"):
            return int(spec.split(":", 1)[1])
        return None

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        if cfg.broker.username:
            c.username_pw_set(cfg.broker.username, cfg.broker.password)
        if cfg.broker.tls:
            c.tls_set_context(ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None))
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        return c

    # -- paho callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.config.broker, reason_code)
            return
        subs = [self.topics.all_vehicles("telemetry"), self.topics.all_vehicles("events"), self.topics.all_schemas]
        _, self._sub_mid = client.subscribe([(s, 1) for s in subs])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid == self._sub_mid and not any(rc.is_failure for rc in reason_codes):
            log.info("worker %d/%d subscribed as %s", self.config.worker, self.config.workers, self.config.client_id)
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from %s: %s; reconnecting", self.config.broker, reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        item = _Msg(msg.topic, bytes(msg.payload), msg.mid, msg.qos)
        while not self._stop.is_set():  # backpressure: the broker keeps the backlog, not our memory
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._pubacks.put(mid)

    # -- rules reload -----------------------------------------------------------------------------

    def _stamp(self) -> tuple:
        """(size, mtime) of the rules file and of its geofences_file (what ``PUT /geofences`` writes)."""
        path = self.config.rules_path
        if path is None:
            return ()
        files = [Path(path)]
        if self.rules.geofences_file is not None:
            files.append(Path(self.rules.geofences_file))
        out = []
        for f in files:
            try:
                st = f.stat()
                out.append((str(f), st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((str(f), -1, -1))
        return tuple(out)

    def maybe_reload(self) -> bool:
        """Load the rules again when their files changed (a refused file keeps the rules running,
        logged once per version); True when new rules took effect. Rule state lives in the store,
        so episodes in progress go on under the new rules."""
        stamp = self._stamp()
        if stamp == self._rules_stamp:
            return False
        self._rules_stamp = stamp
        try:
            rules = load_rules(self.config.rules_path)
        except RulesConfigError as exc:
            log.warning("rules not reloaded, the running ones stay: %s", exc)
            self.store.count("rules_reload_refused")
            return False
        self.rules = rules
        self.sequencer.rebind(rules)
        self._rules_stamp = self._stamp()  # the new rules may name another geofences_file
        self.reloads += 1
        log.info("rules reloaded from %s", self.config.rules_path)
        return True

    # -- main loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        b = self.config.broker
        self._client.connect_async(b.host, b.port, keepalive=30, clean_start=False, properties=props)
        self._client.loop_start()
        self.webhooks.start()
        next_prune = 0.0
        next_reload = time.monotonic() + RELOAD_CHECK_S
        next_export = time.monotonic() + self.config.lake_interval_s
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if batch:
                    self._process(batch)
                self._settle_pubacks()
                if self.connected.is_set():
                    self._publish_due()
                if time.monotonic() >= next_prune:
                    with self.store.transaction():
                        self.store.prune_seen(self.config.dedupe_days * 86400)
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                if time.monotonic() >= next_reload:
                    self.maybe_reload()
                    next_reload = time.monotonic() + RELOAD_CHECK_S
                if time.monotonic() >= next_export:
                    self._export()
                    next_export = time.monotonic() + self.config.lake_interval_s
            self._export()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self.webhooks.stop()
            self.store.close()

    def _export(self) -> None:
        """Write the alert table to the lake when it changed since the last snapshot."""
        if self.config.lake is None or self.config.vehicle_secret is None:
            return
        version = self.store.alerts_version()
        if version == self._exported:
            return
        try:
            export_alerts(self.store.alerts(), self.config.lake, self.config.worker, self.config.vehicle_secret)
        except (OSError, ValueError) as exc:  # the lake being away never stops the rules; retried next time
            log.warning("alerts not written to the lake %s: %s", self.config.lake, exc)
            return
        self._exported = version

    def _take_batch(self) -> list[_Msg]:
        try:
            batch = [self._queue.get(timeout=0.05)]
        except queue.Empty:
            return []
        while len(batch) < self.config.batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[_Msg]) -> None:
        ingested = self.ingested
        with self.store.transaction():
            for m in batch:
                self.store.db.execute("SAVEPOINT msg")
                try:
                    self._handle(m)
                except Exception:  # one bad message never stops the worker: rolled back, counted
                    self.store.db.execute("ROLLBACK TO msg")
                    self.store.count("failed")
                    log.exception("message on %s failed; left out", m.topic)
                self.store.db.execute("RELEASE msg")
            self._queue_notifications()
        if self.ingested > ingested:
            self.commits += 1  # commits that applied packets of this worker's vehicles
        if self._fault_after is not None and self.commits >= self._fault_after:
            os.kill(os.getpid(), signal.SIGKILL)  # deterministic fault point: committed, not acknowledged
        for m in batch:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)
        self.webhooks.wake()

    def _handle(self, m: _Msg) -> None:
        try:
            topic = self.topics.parse(m.topic)
        except TopicError:
            self.store.count("bad_topic")
            return
        if topic.kind == "schema":
            self._schema(topic.fingerprint, m.payload)
            return
        assert topic.vehicle is not None
        if owner(topic.vehicle, self.config.workers) != self.config.worker:
            self.foreign += 1
            return
        if topic.kind == "events":
            self._event(topic.vehicle, m.payload)
            return
        if topic.kind != "telemetry":
            return
        try:
            info = codec.validate(m.payload)
        except PacketDecodeError as exc:
            self.store.count(f"rejected:{exc.reason}")
            return
        if info.vehicle_id != topic.vehicle:
            self.store.count("rejected:vehicle_mismatch")
            return
        self.sequencer.ingest(m.payload, info)
        self.ingested += 1

    def _event(self, vehicle: str, payload: bytes) -> None:
        """An edge trigger's event packet becomes an alert at once (kind = the trigger's name); its
        two parts (before / after the trigger) fill one alert, in whatever order they come."""
        try:
            ev = event_packet.decode(payload)
        except PacketDecodeError as exc:
            self.store.count(f"rejected_event:{exc.reason}")
            return
        if ev.vehicle_id != vehicle:
            self.store.count("rejected_event:vehicle_mismatch")
            return
        if not self.store.mark_seen(f"{vehicle}\x00events", ev.boot_id, ev.seq):
            self.store.count("event_duplicates")
            return
        start = ev.time_ms // 1000
        rec = AlertChange("edge", ev.trigger, f"{ev.trigger}:{ev.time_ms}", "closed", start, start).record(vehicle)
        old = self.store.alert(rec["id"])
        details = dict(old["details"]) if old else {}
        details.update({"trigger": ev.trigger, "time_ms": ev.time_ms, "condition": ev.condition,
                        "before_ms": ev.before_ms, "after_ms": ev.after_ms})
        details["before" if ev.part == 0 else "after"] = {
            name: {"offsets_ms": list(o), "values": list(v)} for name, (o, v) in ev.signals.items()}
        rec["details"] = details
        self.store.put_alert(rec)
        self.sequencer.touched[rec["id"]] = vehicle
        self.store.count("events_applied")

    def _schema(self, fingerprint: bytes | None, payload: bytes) -> None:
        assert fingerprint is not None
        if fingerprint in self.schemas or not payload:
            return
        try:
            s = Schema.from_json(payload)
        except SchemaError:
            self.store.count("rejected:bad_schema")
            return
        if s.fingerprint != fingerprint:
            self.store.count("rejected:schema_fingerprint_mismatch")
            return
        self.store.save_schema(fingerprint, payload)
        self.schemas[fingerprint] = s
        self.sequencer.schema_arrived(fingerprint)

    def _queue_notifications(self) -> None:
        for alert_id, status, rec, vehicle in self.sequencer.notifications_with_vehicle():
            body: dict[str, Any] = dict(rec or {"id": alert_id, "vehicle": vehicle})
            body["status"] = status
            body["digest"] = digest(rec) if rec else ""
            body.pop("acknowledged_at", None)
            payload = json.dumps(body, sort_keys=True).encode()
            for target in self.targets:
                dropped = self.store.enqueue(target, alert_id, status, payload, self.limits[target])
                if dropped:
                    self.store.count(f"outbox_dropped:{target}", dropped)
                    log.warning("outbox of %s full: dropped %d oldest deliveries", target, dropped)

    def _publish_due(self) -> None:
        if len(self._inflight) >= MAX_INFLIGHT:
            return
        due = self.store.due("mqtt", PUBLISH_BATCH + len(self._inflight_ids))
        for outbox_id, alert_id, status, payload, _ in due:
            if outbox_id in self._inflight_ids:
                continue
            vehicle = json.loads(payload)["vehicle"]
            info = self._client.publish(self.topics.alerts(vehicle), payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._inflight[info.mid] = outbox_id
            self._inflight_ids.add(outbox_id)

    def _settle_pubacks(self) -> None:
        done = []
        while True:
            try:
                mid = self._pubacks.get_nowait()
            except queue.Empty:
                break
            outbox_id = self._inflight.pop(mid, None)
            if outbox_id is not None:
                done.append(outbox_id)
        if done:
            with self.store.transaction():
                for outbox_id in done:
                    self.store.delivered(outbox_id)
                self.store.count("alerts_published", len(done))
            self._inflight_ids.difference_update(done)
