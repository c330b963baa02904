"""The schema-event outbox: the registry puts events here; the intake loop publishes them after
each commit. Events are stored in staging first, so one lost here is still on record."""
from __future__ import annotations

import collections
import threading


class EventOutbox:
    """Events waiting to be published, oldest first; bounded (beyond ``capacity`` the oldest
    waiting event is dropped and counted in ``dropped``)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.added = 0
        self.dropped = 0
        self._events: collections.deque[dict] = collections.deque()
        self._lock = threading.Lock()

    def put(self, event: dict) -> None:
        with self._lock:
            self.added += 1
            self._events.append(event)
            if len(self._events) > self.capacity:
                self._events.popleft()
                self.dropped += 1

    def take(self) -> list[dict]:
        """Every waiting event, oldest first; the outbox is empty afterwards."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def __len__(self) -> int:
        return len(self._events)
