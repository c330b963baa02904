"""The roll policy, pure: when the staged packets waiting for the lake are cut into a batch."""
from __future__ import annotations

import dataclasses

from .staging import Backlog


@dataclasses.dataclass(frozen=True)
class RollPolicy:
    """Roll when ``roll_bytes`` of packets wait, when ``max_packets`` wait, or when the oldest
    waiting packet is ``interval_s`` old; an unfinished batch (a crash, a failed write) is
    always redone at once."""

    roll_bytes: int
    max_packets: int
    interval_s: float

    @property
    def tick_s(self) -> float:
        """How often the lake writer asks (a quarter of the interval, at most a second)."""
        return min(1.0, self.interval_s / 4)

    def due(self, unfinished: bool, backlog: Backlog, now: float) -> bool:
        if unfinished:
            return True
        if backlog.packets == 0:
            return False
        return (backlog.bytes >= self.roll_bytes or backlog.packets >= self.max_packets
                or now - (backlog.oldest or 0) >= self.interval_s)
