"""The live stream: new and changed alerts and vehicle positions as Server-Sent Events.

One background task (:func:`poll`) reads the sink's latest state and the alert stores every
``interval`` seconds and hands each change to :class:`Hub`, which fans it out to the open
streams whose token may see the vehicle. Each stream has a bounded queue; when a slow client
lets it fill, further events for it are dropped and counted (``stream_dropped``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from .access import Access

NO_VINS = Access("stream")  # what the shared position events are rendered as

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
MAX_STREAMS = 200


@dataclasses.dataclass(eq=False)
class Subscriber:
    access: Access
    queue: asyncio.Queue = dataclasses.field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


class Hub:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.dropped = 0
        self.published = 0

    def subscribe(self, access: Access) -> Subscriber | None:
        if len(self.subscribers) >= MAX_STREAMS:
            return None
        s = Subscriber(access)
        self.subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    def publish(self, event: str, vehicle: str, data: dict[str, Any], catalog) -> None:
        self.published += 1
        for s in list(self.subscribers):
            if not s.access.sees_vehicle(vehicle, catalog):
                continue
            try:
                s.queue.put_nowait((event, data))
            except asyncio.QueueFull:
                self.dropped += 1


async def poll(app, interval: float = 1.0) -> None:
    """Forever: publish what changed in the latest state and the alert stores since the last round."""
    from .keys import ALERTS, HUB, STATE, VIEWS
    from .routes_vehicles import vehicle_json

    hub, state, alerts, views = app[HUB], app[STATE], app[ALERTS], app[VIEWS]
    since = time.time()
    full_at = 0.0
    while True:
        try:
            full = time.monotonic() >= full_at
            changed = await asyncio.to_thread(state.refresh, full)
            if full:
                full_at = time.monotonic() + 60
            catalog = views.snapshot.catalog
            if hub.subscribers:
                for s in changed:
                    # one event for every subscriber: never with a VIN
                    hub.publish("position", s.vehicle, vehicle_json(app, s.vehicle, s, NO_VINS), catalog)
            new = await asyncio.to_thread(alerts.changed_since, since)
            for a in new:
                since = max(since, a["updated_at"], a["acknowledged_at"] or 0)
                hub.publish("alert", a["vehicle"], a, catalog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a source that is briefly unreadable: try again next round
            log.warning("live poll failed: %s", exc)
        await asyncio.sleep(interval)
