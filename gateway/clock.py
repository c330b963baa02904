"""Sample time that never runs backwards, whatever the wall clock does (pure, no I/O but one probe).

Kernel CAN timestamps follow the system's wall clock, which can step: NTP
fixing a Pi's clock after boot (no RTC battery), an operator's ``date -s``.
The reader reports the system's wall-minus-monotonic offset every few
hundred frames (:meth:`ClockGuard.observe`); a change of that offset larger
than ``step_s`` is a step. A forward step is followed (time simply advances and
the packets say so); a backward step is absorbed into a correction added
to frame times, so sample time continues where it was, and the correction
is then slewed away (sample time runs ``slew`` slower than real time until
it is gone), so packets never go backwards or overlap.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

log = logging.getLogger(__name__)

TIMESYNC_DIR = Path("/run/systemd/timesync")


@dataclasses.dataclass
class ClockStats:
    steps_forward: int = 0
    steps_backward: int = 0
    largest_step_s: float = 0.0


class ClockGuard:
    def __init__(self, *, step_s: float = 1.0, slew: float = 0.1) -> None:
        self.step_s = step_s
        self.slew = slew
        self.correction = 0.0  # seconds added to frame times
        self.stats = ClockStats()
        self._offset: float | None = None  # last wall - monotonic
        self._last_mono = 0.0
        self._last_out = float("-inf")

    def observe(self, wall_minus_mono: float, mono: float) -> None:
        """Check the system clock (``time.time() - time.monotonic()`` at ``mono``) for a step.

        Cheap but not free: the gateway calls it every few hundred frames and when idle."""
        if self._offset is not None:
            if self.correction > 0:
                self.correction = max(0.0, self.correction - self.slew * (mono - self._last_mono))
            jump = wall_minus_mono - self._offset
            if abs(jump) > self.step_s:
                self.stats.largest_step_s = max(self.stats.largest_step_s, abs(jump))
                if jump > 0:
                    self.stats.steps_forward += 1
                    self.correction = max(0.0, self.correction - jump)
                    log.warning("wall clock stepped forward by %.3f s", jump)
                else:
                    self.stats.steps_backward += 1
                    self.correction -= jump
                    log.warning("wall clock stepped back by %.3f s; absorbing it and slewing at %.0f%%",
                                -jump, 100 * self.slew)
        self._offset = wall_minus_mono
        self._last_mono = mono

    def sample_time(self, frame_ts: float) -> float:
        """A frame's sample time: its timestamp plus the correction, never earlier than the last."""
        out = frame_ts + self.correction
        if out < self._last_out:
            return self._last_out
        self._last_out = out
        return out

    @property
    def correction_ms(self) -> int:
        return round(self.correction * 1000)


def clock_synchronised(timesync_dir: Path = TIMESYNC_DIR) -> bool | None:
    """Whether systemd-timesyncd reports the clock synchronised; None when it is not running."""
    if (timesync_dir / "synchronized").exists():
        return True
    return False if timesync_dir.is_dir() else None
