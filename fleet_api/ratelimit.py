"""Per-token rate limits: one token bucket per key in a bounded, least-recently-used table."""
from __future__ import annotations

import collections
import time
from collections.abc import Callable


class RateLimiter:
    """``per_s`` requests a second on average, bursts of ``burst``; at most ``max_keys`` buckets are
    kept (the least recently used is dropped and counted in ``evicted``: it starts full again)."""

    def __init__(self, per_s: float, burst: float, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.burst, self.max_keys = per_s, burst, max_keys
        self.clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self.limited = 0  # requests refused (429)
        self.evicted = 0

    def take(self, key: str) -> float:
        """Spend one request of ``key``: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.per_s
            self.limited += 1
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
            self.evicted += 1
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
