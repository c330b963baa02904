"""Schema registry: learned schemas plus change detection per vehicle and per model.

The first fingerprint seen for a model or vehicle is recorded silently (for a
model it also raises a ``new`` event); any *other* fingerprint afterwards
raises a ``change`` event naming the previous fingerprint and, when both
schemas are known, the columns added and removed. Events are stored in the
staging database (``schema_events``), then put in an
:class:`~cloud_sink.events.EventOutbox`, from which the sink's intake loop
publishes them on ``<prefix>/events/schema``.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Iterable

from minute_packet import Schema

from .events import EventOutbox
from .staging import Staging

log = logging.getLogger(__name__)


class SchemaRegistry:
    """Known schemas by fingerprint and the current fingerprint of every model and vehicle.

    The per-key state (current fingerprint, fingerprints ever used) of at most ``cached_keys``
    models and vehicles is kept in memory, least recently seen evicted first (``evicted``
    counts them); the rest is read back from the staging database when the key shows up, so
    memory does not grow with the fleet."""

    def __init__(self, staging: Staging, outbox: EventOutbox | None = None, *,
                 cached_keys: int = 200_000) -> None:
        self.staging = staging
        self.outbox = outbox if outbox is not None else EventOutbox()
        self.schemas: dict[bytes, Schema] = {}
        self.evicted = 0
        self.cached_keys = cached_keys
        # (scope, key) -> (current fingerprint, every fingerprint used)
        self._state: collections.OrderedDict[tuple[str, str], tuple[bytes, set[bytes]]] = collections.OrderedDict()
        for fp, payload in staging.schemas.all():
            self.schemas[fp] = Schema.from_json(payload)

    def learn(self, schema: Schema, payload: bytes) -> bool:
        """Store a schema; True when it was not known before."""
        fp = schema.fingerprint
        new = fp not in self.schemas
        self.schemas[fp] = schema
        self.staging.schemas.save(fp, payload, time.time())
        if new:
            log.info("schema %s learned (%d columns, %s)", fp.hex(), len(schema.columns), schema.source)
        return new

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
