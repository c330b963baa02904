"""Schema registry: learned schemas plus change detection per vehicle and per model.

The first fingerprint seen for a model or vehicle is recorded silently (for a
model it also raises a ``new`` event); any *other* fingerprint afterwards
raises a ``change`` event naming the previous fingerprint and, when both
schemas are known, the columns added and removed. Events are stored in the
staging database (``schema_events``), then put in an
:class:`~cloud_sink.events.EventOutbox`, from which the sink's intake loop
publishes them on ``<prefix>/events/schema``.

The registry is bounded: at most ``max_schemas`` schemas of at most ``max_bytes`` bytes of JSON
in all (memory and the staging database). Beyond either, the oldest schemas that no model or
vehicle ever used and no pending packet carries are pruned (``pruned``); when only used ones
are left, a new schema is refused (:class:`RegistryFull`, quarantined as ``schema_registry_full``)
rather than dropping one the lake still needs. Schemas of the configured DBCs are pinned.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Iterable

from minute_packet import Schema

from dcm_base.errors import ServiceError

from .events import EventOutbox
from .staging import Staging

log = logging.getLogger(__name__)

MAX_SCHEMAS = 2000
MAX_BYTES = 64 << 20  # ~800 schemas of a 218-signal DBC (80 KB of JSON, ~215 KB parsed, each)


class RegistryFull(ServiceError):
    """No room for a new schema: every schema held is in use (the message is quarantined)."""


class SchemaRegistry:
    """Known schemas by fingerprint and the current fingerprint of every model and vehicle.

    The per-key state (current fingerprint, fingerprints ever used) of at most ``cached_keys``
    models and vehicles is kept in memory, least recently seen evicted first (``evicted``
    counts them); the rest is read back from the staging database when the key shows up, so
    memory does not grow with the fleet."""

    def __init__(self, staging: Staging, outbox: EventOutbox | None = None, *,
                 cached_keys: int = 200_000, max_schemas: int = MAX_SCHEMAS, max_bytes: int = MAX_BYTES) -> None:
        self.staging = staging
        self.outbox = outbox if outbox is not None else EventOutbox()
        self.schemas: dict[bytes, Schema] = {}  # oldest learned first
        self.evicted = 0
        self.cached_keys = cached_keys
        self.max_schemas, self.max_bytes = max_schemas, max_bytes
        self.bytes = 0  # JSON bytes of the schemas held
        self.pruned = 0  # unused schemas dropped to make room
        self.refused = 0  # new schemas refused: every one held is in use
        self._sizes: dict[bytes, int] = {}
        self._pinned: set[bytes] = set()
        self._used: set[bytes] = set()  # known to be used (a use is never forgotten)
        # (scope, key) -> (current fingerprint, every fingerprint used)
        self._state: collections.OrderedDict[tuple[str, str], tuple[bytes, set[bytes]]] = collections.OrderedDict()
        for fp, payload in staging.schemas.all():
            self.schemas[fp] = Schema.from_json(payload)
            self._sizes[fp] = len(payload)
            self.bytes += len(payload)
        if self._over(0, 0):  # a smaller bound than the last run's
            self._prune(0)

    def learn(self, schema: Schema, payload: bytes, *, pin: bool = False) -> bool:
        """Store a schema; True when it was not known before. ``pin``: never pruned (the
        configured DBCs'). Raises :class:`RegistryFull` when it cannot be held."""
        fp = schema.fingerprint
        if pin:
            self._pinned.add(fp)
        if fp in self.schemas:
            return False
        if not pin and self._over(1, len(payload)) and not self._prune(len(payload)):
            self.refused += 1
            raise RegistryFull(f"{len(self.schemas)} schemas, {self.bytes} bytes held, all in use"
                               f" (max {self.max_schemas} schemas, {self.max_bytes} bytes)")
        self.staging.schemas.save(fp, payload, time.time())
        self.schemas[fp] = schema
        self._sizes[fp] = len(payload)
        self.bytes += len(payload)
        log.info("schema %s learned (%d columns, %s)", fp.hex(), len(schema.columns), schema.source)
        return True

    def _over(self, more: int, size: int) -> bool:
        return len(self.schemas) + more > self.max_schemas or self.bytes + size > self.max_bytes

    def _prune(self, size: int) -> bool:
        """Drop the oldest unused, unpinned schemas until one more of ``size`` bytes fits (``size``
        0: until the bounds hold); True when it fits."""
        more = 1 if size else 0
        while self._over(more, size):
            candidates = [fp for fp in self.schemas if fp not in self._pinned and fp not in self._used][:400]
            if not candidates:
                return False
            used = self.staging.schemas.in_use(candidates)
            self._used |= used
            drop, count, held = [], len(self.schemas), self.bytes
            for fp in candidates:
                if fp in used:
                    continue
                drop.append(fp)
                count, held = count - 1, held - self._sizes[fp]
                if count + more <= self.max_schemas and held + size <= self.max_bytes:
                    break
            if drop:
                self.staging.schemas.forget(drop)
                for fp in drop:
                    del self.schemas[fp]
                    self.bytes -= self._sizes.pop(fp)
                self.pruned += len(drop)
                log.info("schema registry: %d unused schemas pruned (%d held)", len(drop), len(self.schemas))
        return True

    def observe(self, uses: Iterable[tuple[str, str, bytes]]) -> list[dict]:
        """Record (model, masked vehicle, fingerprint) of accepted packets; returns the events raised.

        The in-memory state changes only once the uses and events are committed: a failed commit
        (the intake retries the batch) leaves memory as the database is."""
        pairs = [(scope, key, fp) for model, vehicle, fp in uses
                 for scope, key in (("model", model), ("vehicle", vehicle))]
        keys = list(dict.fromkeys((scope, key) for scope, key, _ in pairs))
        state = {k: self._state[k] for k in keys if k in self._state}
        missing = [k for k in keys if k not in state]
        if missing:
            state.update(self.staging.schemas.state(missing))
        fresh: list[tuple[str, str, bytes]] = []
        events: list[tuple[str, str, bytes | None, bytes, str]] = []
        changed: dict[tuple[str, str], bytes] = {}
        for scope, key, fp in pairs:
            old, used = state.get((scope, key), (None, set()))
            if old == fp:
                continue
            if fp in used:
                if scope == "vehicle":  # a vehicle went back to an older schema: a change too
                    events.append((scope, key, old, fp, self._diff(old, fp)))
                    state[(scope, key)] = (fp, used)
                    changed[(scope, key)] = fp
                continue  # a model seen with an older schema again keeps the newer one as current
            fresh.append((scope, key, fp))
            state[(scope, key)] = (fp, used | {fp})
            changed[(scope, key)] = fp
            if old is not None or scope == "model":
                events.append((scope, key, old, fp, self._diff(old, fp)))
        if fresh or events:
            now = time.time()
            ids = self.staging.schemas.record_use(fresh, now, events, changed)
            self._used.update(fp for _, _, fp in fresh if fp in self.schemas)
        for k, v in state.items():  # committed: now memory may follow (most recently seen last)
            self._state[k] = v
            self._state.move_to_end(k)
        while len(self._state) > self.cached_keys:
            self._state.popitem(last=False)
            self.evicted += 1
        if not fresh and not events:
            return []
        out = []
        for event_id, (scope, key, old, new, detail) in zip(ids, events):
            event = {"id": event_id, "time": now, "kind": "new" if old is None else "change", "scope": scope,
                     "key": key, "old_fingerprint": old.hex() if old else None, "new_fingerprint": new.hex(),
                     **json.loads(detail)}
            log.info("schema event: %s %s %s -> %s", scope, key, event["old_fingerprint"], new.hex())
            out.append(event)
            self.outbox.put(event)
        return out

    def _diff(self, old: bytes | None, new: bytes) -> str:
        a, b = self.schemas.get(old) if old else None, self.schemas.get(new)
        if a is None or b is None:
            return json.dumps({"added": None, "removed": None})
        names_a, names_b = {c.name for c in a.columns}, {c.name for c in b.columns}
        return json.dumps({"added": sorted(names_b - names_a), "removed": sorted(names_a - names_b)})
