"""Exponential backoff for reconnect and retry loops."""
from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double from ``initial`` up to ``maximum`` seconds, back to ``initial`` on :meth:`reset`.

    :meth:`next` returns the delay to wait now and doubles the one after it. With
    ``jitter=True`` the delay returned is drawn uniformly from [0, delay] ("full jitter"),
    so many clients that lost the same broker do not come back in step.
    """

    def __init__(self, initial: float, maximum: float, *, jitter: bool = False,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._jitter = jitter
        self._uniform = uniform
        self._delay = initial

    @property
    def delay(self) -> float:
        """The (upper bound of the) delay :meth:`next` returns next."""
        return self._delay

    def next(self) -> float:
        delay = self._uniform(0.0, self._delay) if self._jitter else self._delay
        self._delay = min(self._delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._delay = self.initial
