"""Schema registry: learned schemas plus change detection per vehicle and per model.

The first fingerprint seen for a model or vehicle is recorded silently (for a
model it also raises a ``new`` event); any *other* fingerprint afterwards
raises a ``change`` event naming the previous fingerprint and, when both
schemas are known, the columns added and removed. Events are stored in the
staging database (``schema_events``) and handed to ``publish`` (the sink
sends them on ``<prefix>/events/schema``).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable

from minute_packet import Schema

from .staging import Staging

log = logging.getLogger(__name__)


class SchemaRegistry:
    """Known schemas by fingerprint and the current fingerprint of every model and vehicle."""

    def __init__(self, staging: Staging, publish: Callable[[dict], None] | None = None) -> None:
        self.staging = staging
        self.publish = publish or (lambda event: None)
        self.schemas: dict[bytes, Schema] = {}
        self.changes = 0
        self._current: dict[tuple[str, str], bytes] = {}
        self._seen: set[tuple[str, str, bytes]] = set()
        for fp, payload in staging.schemas():
            self.schemas[fp] = Schema.from_json(payload)
        for scope, key, fp in staging.schema_uses():
            self._seen.add((scope, key, fp))
            self._current[(scope, key)] = fp

    def learn(self, schema: Schema, payload: bytes) -> bool:
        """Store a schema; True when it was not known before."""
        fp = schema.fingerprint
        new = fp not in self.schemas
        self.schemas[fp] = schema
        self.staging.save_schema(fp, payload, time.time())
        if new:
            log.info("schema %s learned (%d columns, %s)", fp.hex(), len(schema.columns), schema.source)
        return new

    def observe(self, uses: Iterable[tuple[str, str, bytes]]) -> list[dict]:
        """Record (model, masked vehicle, fingerprint) of accepted packets; returns the events raised."""
        fresh: list[tuple[str, str, bytes]] = []
        events: list[tuple[str, str, bytes | None, bytes, str]] = []
        for model, vehicle, fp in uses:
            for scope, key in (("model", model), ("vehicle", vehicle)):
                if (scope, key, fp) in self._seen:
                    if self._current.get((scope, key)) != fp and scope == "vehicle":
                        # a vehicle went back to an older schema: that is a change too
                        events.append((scope, key, self._current[(scope, key)], fp, self._diff(self._current[(scope, key)], fp)))
                        self._current[(scope, key)] = fp
                    continue
                old = self._current.get((scope, key))
                self._seen.add((scope, key, fp))
                fresh.append((scope, key, fp))
                self._current[(scope, key)] = fp
                if old is not None or scope == "model":
                    events.append((scope, key, old, fp, self._diff(old, fp)))
        if not fresh and not events:
            return []
        now = time.time()
        ids = self.staging.record_schema_use(fresh, now, events)
        out = []
        for event_id, (scope, key, old, new, detail) in zip(ids, events):
            event = {"id": event_id, "time": now, "kind": "new" if old is None else "change", "scope": scope,
                     "key": key, "old_fingerprint": old.hex() if old else None, "new_fingerprint": new.hex(),
                     **json.loads(detail)}
            log.info("schema event: %s %s %s -> %s", scope, key, event["old_fingerprint"], new.hex())
            self.changes += event["kind"] == "change"
            out.append(event)
            self.publish(event)
        return out

    def _diff(self, old: bytes | None, new: bytes) -> str:
        a, b = self.schemas.get(old) if old else None, self.schemas.get(new)
        if a is None or b is None:
            return json.dumps({"added": None, "removed": None})
        names_a, names_b = {c.name for c in a.columns}, {c.name for c in b.columns}
        return json.dumps({"added": sorted(names_b - names_a), "removed": sorted(names_a - names_b)})
