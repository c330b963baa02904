"""Exactly once, in order, per vehicle: dedupe, apply in (start_time, boot, seq) order, replay late ones.

:meth:`Sequencer.ingest` takes one packet's bytes inside the caller's transaction:

1. a (vehicle, boot, seq) already seen is a duplicate: nothing else happens;
2. a packet whose schema is not known yet waits (bounded; applied when the schema arrives);
3. a packet later than the vehicle's newest applied one is applied: its checkpoint (the state
   before it) and bytes go into the history, its alert changes into the alert table with their
   before-images;
4. a *late* packet (older than the newest applied) triggers a replay: the alert changes of every
   history entry after it are undone, the state is reset to the checkpoint of the first of them,
   and the late packet plus those entries are applied again in order. A late packet older than
   the retained history (``history`` packets per vehicle) cannot be placed: it is counted
   (``late_beyond_history``) and left out of the rules (the lake still has it).

So any delivery order and any number of duplicates give the alert table of the in-order run,
as long as no packet is later than the history bound. Notifications are derived once per
transaction from the net effect on each touched alert (:meth:`Sequencer.notifications`).
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from minute_packet import Schema, codec, columns

from .config import RulesConfig
from .engine import VehicleRules
from .store import Order, Store

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 120
DEFAULT_WAITING = 10_000
BINDINGS_CACHE = 4096


class Sequencer:
    """Applies one worker's packets; the caller owns the transaction and acknowledges after it."""

    def __init__(self, store: Store, rules: RulesConfig, schema_of: Callable[[bytes], Schema | None], *,
                 history: int = DEFAULT_HISTORY, waiting_limit: int = DEFAULT_WAITING) -> None:
        self.store, self.rules, self.schema_of = store, rules, schema_of
        self.history, self.waiting_limit = history, waiting_limit
        self._bindings: collections.OrderedDict[tuple[str, bytes], VehicleRules] = collections.OrderedDict()
        self.touched: dict[str, str] = {}  # alert id -> vehicle, changed since the last notifications()

    def rebind(self, rules: RulesConfig) -> None:
        """Apply ``rules`` from the next packet on (the state of each vehicle's rules stays in the store)."""
        self.rules = rules
        self._bindings.clear()

    def _bound(self, vehicle: str, fingerprint: bytes, schema: Schema) -> VehicleRules:
        key = (vehicle, fingerprint)
        vr = self._bindings.get(key)
        if vr is None:
            vr = self._bindings[key] = VehicleRules(self.rules, vehicle, schema)
            if len(self._bindings) > BINDINGS_CACHE:
                self._bindings.popitem(last=False)
            for rule, reason in vr.skipped.items():
                if self.store.report_skipped(vehicle, rule, reason):
                    log.warning("rule %s skipped for vehicle %s: %s", rule, vehicle, reason)
                    self.store.count("rules_skipped")
        else:
            self._bindings.move_to_end(key)
        return vr

    def ingest(self, data: bytes, info: codec.PacketInfo | None = None) -> str:
        """Take one packet (validated by the caller or here); returns what happened:
        ``duplicate``, ``waiting``, ``applied``, ``replayed`` or ``too_late``."""
        info = info or codec.validate(data)
        if not self.store.mark_seen(info.vehicle_id, info.boot_id, info.seq):
            self.store.count("duplicates")
            return "duplicate"
        return self._place(data, info)

    def _place(self, data: bytes, info: codec.PacketInfo) -> str:
        vehicle = info.vehicle_id
        order: Order = (info.start_time, info.boot_id, info.seq)
        schema = self.schema_of(info.fingerprint)
        if schema is None:
            dropped = self.store.add_waiting(vehicle, order, info.fingerprint, data, self.waiting_limit)
            self.store.count("waiting_for_schema")
            if dropped:
                self.store.count("waiting_dropped", dropped)
            return "waiting"
        if len(schema.columns) != info.columns:
            self.store.count("schema_mismatch")
            return "schema_mismatch"
        known = self.store.vehicle(vehicle)
        if known is None:
            state: dict[str, Any] = {}
            trimmed = False
        else:
            state, last, trimmed = known
            if order < last:
                return self._replay(vehicle, order, data, info, trimmed)
        self._apply(vehicle, state, order, data, info, schema)
        self._finish(vehicle, state, order, trimmed)
        self.store.count("applied")
        return "applied"

    def _replay(self, vehicle: str, order: Order, data: bytes, info: codec.PacketInfo, trimmed: bool) -> str:
        oldest = self.store.oldest_history(vehicle)
        if trimmed and (oldest is None or order < oldest):
            self.store.count("late_beyond_history")
            log.info("packet %s/%d of %s is older than the retained history: left out of the rules",
                     info.boot_id.hex(), info.seq, vehicle)
            return "too_late"
        later = self.store.history_after(vehicle, order)
        checkpoint = json.loads(later[0][2])
        self.touched.update(dict.fromkeys(self.store.drop_history_after(vehicle, order), vehicle))
        state = checkpoint
        redo = [(order, data, info)] + [(o, p, codec.validate(p)) for o, p, _ in later]
        last = order
        for o, p, i in redo:
            schema = self.schema_of(i.fingerprint)
            if schema is None:  # cannot happen: every history entry was applied with a known schema
                raise RuntimeError(f"schema {i.fingerprint.hex()} vanished during a replay")
            self._apply(vehicle, state, o, p, i, schema)
            last = o
        self._finish(vehicle, state, last, trimmed)
        self.store.count("replays")
        self.store.count("replayed_packets", len(later))
        return "replayed"

    def _apply(self, vehicle: str, state: dict[str, Any], order: Order, data: bytes, info: codec.PacketInfo,
               schema: Schema) -> None:
        before = json.dumps(state, sort_keys=True)
        packet = columns.materialize(info)
        changes = self._bound(vehicle, info.fingerprint, schema).apply(state, packet)
        # round-trip through JSON so the in-memory state is exactly what a checkpoint restores
        fresh = json.loads(json.dumps(state))
        state.clear()
        state.update(fresh)
        for n, change in enumerate(changes):
            rec = change.record(vehicle)
            self.store.upsert_alert(vehicle, order, n, rec)
            self.touched[rec["id"]] = vehicle
        self.store.add_history(vehicle, order, data, before)

    def _finish(self, vehicle: str, state: dict[str, Any], last: Order, trimmed: bool) -> None:
        if self.store.trim_history(vehicle, self.history):
            trimmed = True
        self.store.save_vehicle(vehicle, state, last, trimmed)

    def schema_arrived(self, fingerprint: bytes) -> int:
        """Apply the packets that waited for this schema (inside the caller's transaction)."""
        waiting = self.store.take_waiting(fingerprint)
        for _, data in waiting:
            self._place(data, codec.validate(data))
        return len(waiting)

    def notifications(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """(alert id, status, record) not yet notified, from the net effect on the touched alerts:
        its current version (status, times, details), or ``retracted`` for an alert a replay
        removed. A version is notified once; a replay that corrects a notified alert (a late
        packet extended its episode) notifies the corrected version under the same id."""
        return [(a, s, r) for a, s, r, _ in self.notifications_with_vehicle()]

    def notifications_with_vehicle(self) -> list[tuple[str, str, dict[str, Any] | None, str]]:
        """:meth:`notifications` with the vehicle of each alert."""
        out = []
        for alert_id, vehicle in sorted(self.touched.items()):
            rec = self.store.alert(alert_id)
            if rec is None:
                if self.store.was_notified(alert_id) and self.store.notify_once(alert_id, "retracted"):
                    out.append((alert_id, "retracted", None, vehicle))
            elif self.store.notify_once(alert_id, rec["status"], digest(rec)):
                out.append((alert_id, rec["status"], rec, vehicle))
        self.touched.clear()
        return out

def digest(rec: dict[str, Any]) -> str:
    """Digest of an alert version: status, start, end and details."""
    body = json.dumps([rec["status"], rec["start"], rec["end"], rec["details"]], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]
