"""Webhook delivery from the durable outbox: HTTP POST with retries and backoff, never in the way of ingestion.

A thread of its own with its own database connection takes the due deliveries of each webhook
(oldest first), POSTs each alert version as JSON and deletes it on a 2xx answer. Anything else
(an error status, a refused connection, a timeout) counts as a failure and the delivery is kept
and retried after an exponential backoff with jitter (1 s doubling to 5 min). The queue per
webhook is bounded when deliveries are queued (:meth:`Store.enqueue`), the oldest dropped and
counted. Each request carries ``Idempotency-Key: <alert id>:<status>:<digest>`` so a receiver
can drop the one duplicate a lost 2xx answer can cause.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request

from collections.abc import Callable

from .service_config import Webhook
from .store import Store

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
BATCH = 50


def backoff_s(attempts: int, rng: random.Random) -> float:
    """Delay before retry number ``attempts + 1``: 1, 2, 4, ... s up to 5 min, ±20 % jitter."""
    base = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(attempts, 20))
    return base * rng.uniform(0.8, 1.2)


class WebhookSender:
    """Delivers the outbox rows of every configured webhook until :meth:`stop`."""

    def __init__(self, state_path, hooks: tuple[Webhook, ...], *, poll_s: float = 0.2,
                 backoff: Callable[[int, random.Random], float] = backoff_s) -> None:
        self.state_path, self.hooks, self.poll_s, self.backoff = state_path, hooks, poll_s, backoff
        self.sent = 0
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()

    def start(self) -> None:
        if self.hooks:
            self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        store = Store(self.state_path)
        try:
            while not self._stop.is_set():
                busy = False
                for hook in self.hooks:
                    busy |= self._deliver(store, hook)
                if not busy:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
        except Exception:  # a broken database stops delivery, never ingestion; logged
            log.exception("webhook delivery stopped")
        finally:
            store.close()

    def _deliver(self, store: Store, hook: Webhook) -> bool:
        due = store.due(hook.target, BATCH)
        for outbox_id, alert_id, status, payload, attempts in due:
            if self._stop.is_set():
                return False
            error = self._post(hook, alert_id, status, payload)
            with store.transaction():
                if error is None:
                    store.delivered(outbox_id)
                    store.count(f"webhook_sent:{hook.name}")
                else:
                    delay = self.backoff(attempts, self._rng)
                    store.retry_later(outbox_id, time.time() + delay, error)
                    store.count(f"webhook_failures:{hook.name}")
            if error is None:
                self.sent += 1
            else:
                self.failures += 1
                log.info("webhook %s: %s (attempt %d), retrying", hook.name, error, attempts + 1)
                return False  # the receiver is failing: retry later, keep order
        return bool(due)

    @staticmethod
    def _post(hook: Webhook, alert_id: str, status: str, payload: bytes) -> str | None:
        """None on a 2xx answer, else what went wrong."""
        body = json.loads(payload)
        key = f"{alert_id}:{status}:{body.get('digest', '')}"
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, "User-Agent": "dcm-rules"}
        if hook.token:
            headers["Authorization"] = f"Bearer {hook.token}"
        req = urllib.request.Request(hook.url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=hook.timeout_s) as resp:
                resp.read(1024)
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
