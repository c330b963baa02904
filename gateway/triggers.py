"""Edge triggers: conditions over signals evaluated on every decoded frame, sent at once as event packets.

Configured as ``[[triggers]]`` in the gateway's TOML::

    [[triggers]]
    name = "crash"
    condition = "CrashDetected == 1"     # the condition language of the rules (minute_packet.condition)
    mode = "rising"                      # "rising": when it becomes true; "always": whenever it is true
    min_interval_s = 10                  # no second event of this trigger sooner (FleetWise's minimum interval)
    capture = ["VehicleSpeed", "LongitudinalAccel"]
    before_s = 5                         # full-rate values from 5 s before the trigger ...
    after_s = 2                          # ... to 2 s after it (a second packet, part 1)

Semantics follow AWS IoT FleetWise's condition-based collection: a trigger's condition is
evaluated on each frame that carries one of its signals, with the frame's timestamp (so ``for``
durations run in real time); ``rising`` fires on a false→true change, ``always`` on every true
evaluation; either waits ``min_interval_s`` after a firing (suppressed firings are counted). A
firing produces part 0 at once (the trigger, its time to the millisecond, the captured values
from ``before_s`` before it); with ``after_s`` a part 1 follows once the window has passed.
Pure: :meth:`TriggerEngine.on_frame` takes a frame and returns finished event packets.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dcm_base.errors import ConfigError
from dbc.frames import decode_frame
from minute_packet.condition import ConditionError, parse, signals
from minute_packet.condition_eval import compile_condition
from minute_packet.event_packet import MAX_WINDOW_MS, EventPacket

from .decoder import frame_key

MAX_BUFFER = 20_000  # samples kept per captured signal (100 Hz for 200 s)
MAX_GAP_S = 1.0  # frame-level ``for``: a silence longer than this restarts the count
MODES = ("rising", "always")


class TriggerError(ConfigError, ValueError):
    """A trigger definition is invalid or names a signal the DBC lacks (a config error: exit 2)."""


@dataclasses.dataclass(frozen=True)
class TriggerSpec:
    name: str
    condition: str
    mode: str = "rising"
    min_interval_s: float = 0.0
    capture: tuple[str, ...] = ()
    before_s: float = 0.0
    after_s: float = 0.0


def triggers_from_config(raw: Any) -> tuple[TriggerSpec, ...]:
    """``[[triggers]]`` tables to specs; :class:`TriggerError` names the entry and key."""
    if not isinstance(raw, list):
        raise TriggerError("must be an array of tables ([[triggers]])")
    out = []
    for i, t in enumerate(raw):
        at = f"[{i}]"
        if not isinstance(t, dict):
            raise TriggerError(f"{at}: must be a table")
        unknown = set(t) - {f.name for f in dataclasses.fields(TriggerSpec)}
        if unknown:
            raise TriggerError(f"{at}.{sorted(unknown)[0]}: unknown key")
        name, cond = t.get("name"), t.get("condition")
        if not isinstance(name, str) or not name or not isinstance(cond, str):
            raise TriggerError(f"{at}: needs a name and a condition")
        try:
            parse(cond)
        except ConditionError as exc:
            raise TriggerError(f"{at}.condition: {exc}") from None
        if t.get("mode", "rising") not in MODES:
            raise TriggerError(f"{at}.mode: must be one of {', '.join(MODES)}")
        for key in ("min_interval_s", "before_s", "after_s"):
            v = t.get(key, 0.0)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v * 1000 <= MAX_WINDOW_MS:
                raise TriggerError(f"{at}.{key}: must be a number of seconds in 0..{MAX_WINDOW_MS // 1000}")
        capture = t.get("capture", [])
        if not isinstance(capture, list) or not all(isinstance(s, str) and s for s in capture):
            raise TriggerError(f"{at}.capture: must be a list of signal names")
        out.append(TriggerSpec(name, cond, t.get("mode", "rising"), float(t.get("min_interval_s", 0.0)),
                               tuple(capture), float(t.get("before_s", 0.0)), float(t.get("after_s", 0.0))))
    if len({s.name for s in out}) != len(out):
        raise TriggerError("trigger names must be unique")
    return tuple(out)


@dataclasses.dataclass
class TriggerStats:
    fired: int = 0
    suppressed: int = 0  # true within min_interval_s of the previous firing
    decode_errors: int = 0
    buffer_drops: int = 0  # captured samples beyond MAX_BUFFER per signal


@dataclasses.dataclass
class _Pending:
    spec: TriggerSpec
    t: float
    samples: dict[str, list[tuple[float, float]]]


class TriggerEngine:
    """Every trigger of one gateway. Signal names are the DBC's (``Signal`` or ``Message.Signal``)."""

    def __init__(self, db: Any, specs: Sequence[TriggerSpec], *, vehicle_id: str, model: str, boot_id: bytes) -> None:
        self.specs = tuple(specs)
        self.vehicle_id, self.model, self.boot_id = vehicle_id, model, boot_id
        self.stats = TriggerStats()
        self.seq = 0
        names: dict[str, tuple[Any, Any]] = {}
        for m in db.messages:
            for s in m.signals:
                names[f"{m.name}.{s.name}"] = (m, s)
                names.setdefault(s.name, (m, s))
        needed: set[str] = set()
        self._evaluators = []
        for spec in self.specs:
            cond_signals = signals(parse(spec.condition))
            missing = sorted((cond_signals | set(spec.capture)) - set(names))
            if missing:
                raise TriggerError(f"trigger {spec.name!r}: signal {missing[0]!r} is not in the DBC")
            choices = {n: ({int(k): str(v) for k, v in names[n][1].choices.items()} if names[n][1].choices else None)
                       for n in cond_signals}
            try:
                ev = compile_condition(spec.condition, choices, period_s=0.0, max_gap_s=MAX_GAP_S)
            except ConditionError as exc:
                raise TriggerError(f"trigger {spec.name!r}: {exc}") from None
            self._evaluators.append((spec, ev, cond_signals))
            needed |= cond_signals | set(spec.capture)
        # frame key -> (message, [(name, signal name)])
        self.watch: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
        for name in sorted(needed):
            m, s = names[name]
            key = frame_key(m.frame_id, m.is_extended_frame)
            self.watch.setdefault(key, (m, []))[1].append((name, s.name))
        self._captured = {n for spec in self.specs for n in spec.capture}
        self._before = max((s.before_s for s in self.specs), default=0.0)
        self._buffers: dict[str, collections.deque[tuple[float, float]]] = {
            n: collections.deque(maxlen=MAX_BUFFER) for n in self._captured}
        self._values: dict[str, float] = {}
        self._states: dict[str, dict[str, Any]] = {s.name: {} for s in self.specs}
        self._was: dict[str, bool] = {}
        self._last_fired: dict[str, float] = {}
        self._pending: list[_Pending] = []

    def on_frame(self, t: float, key: int, data: bytes) -> list[EventPacket]:
        """Feed one frame (timestamp in Unix seconds); the event packets now complete."""
        watched = self.watch.get(key)
        out = self.tick(t) if self._pending else []
        if watched is None:
            return out
        message, wanted = watched
        try:
            decoded = decode_frame(message, data, scaling=True)
        except Exception:  # cantools raises many types for a frame that does not fit its message
            self.stats.decode_errors += 1
            return out
        changed = set()
        for name, signal in wanted:
            if signal not in decoded:
                continue  # another multiplexer value
            value = float(decoded[signal])
            self._values[name] = value
            changed.add(name)
            if name in self._captured:
                buf = self._buffers[name]
                if len(buf) == buf.maxlen:
                    self.stats.buffer_drops += 1
                buf.append((t, value))
                while buf and buf[0][0] < t - self._before:
                    buf.popleft()
                for p in self._pending:
                    if name in p.spec.capture:
                        p.samples[name].append((t, value))
        for spec, ev, cond_signals in self._evaluators:
            if cond_signals & changed:
                out += self._evaluate(spec, ev, t)
        return out

    def _evaluate(self, spec: TriggerSpec, ev: Any, t: float) -> list[EventPacket]:
        now = ev(self._states[spec.name], t, self._values)
        was = self._was.get(spec.name, False)
        self._was[spec.name] = now
        if not now or (spec.mode == "rising" and was):
            return []
        last = self._last_fired.get(spec.name)
        if last is not None and t - last < spec.min_interval_s:
            self.stats.suppressed += 1
            return []
        self._last_fired[spec.name] = t
        self.stats.fired += 1
        before = {n: [(ts, v) for ts, v in self._buffers[n] if ts >= t - spec.before_s] for n in spec.capture}
        if spec.after_s > 0:
            self._pending.append(_Pending(spec, t, {n: [] for n in spec.capture}))
        return [self._packet(spec, t, 0, before)]

    def tick(self, now: float) -> list[EventPacket]:
        """Finish the post-trigger windows that ended by ``now`` (call when no frame came for a while)."""
        done = [p for p in self._pending if now > p.t + p.spec.after_s]
        if not done:
            return []
        self._pending = [p for p in self._pending if p not in done]
        return [self._packet(p.spec, p.t, 1, p.samples) for p in done]

    def flush(self) -> list[EventPacket]:
        """Finish every open window now (the gateway is stopping)."""
        return self.tick(float("inf"))

    def _packet(self, spec: TriggerSpec, t: float, part: int, samples: Mapping[str, list[tuple[float, float]]]
                ) -> EventPacket:
        t_ms = int(round(t * 1000))
        sig = {n: (tuple(int(round(ts * 1000)) - t_ms for ts, _ in s), tuple(v for _, v in s))
               for n, s in samples.items()}
        packet = EventPacket(vehicle_id=self.vehicle_id, model=self.model, boot_id=self.boot_id, seq=self.seq,
                             trigger=spec.name, time_ms=t_ms, condition=spec.condition, part=part,
                             before_ms=int(spec.before_s * 1000), after_ms=int(spec.after_s * 1000), signals=sig)
        self.seq += 1
        return packet
