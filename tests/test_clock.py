"""ClockGuard: sample times never go backwards across wall-clock steps."""
from __future__ import annotations

from gateway.clock import ClockGuard, clock_synchronised


def _feed(guard, events):
    """events: (monotonic time, wall offset); frames stamped by the (stepping) wall clock."""
    out = []
    for mono, off in events:
        guard.observe(off, mono)
        out.append(guard.sample_time(mono + off))
    return out


def test_steady_clock_passes_frame_times_through():
    g = ClockGuard()
    out = _feed(g, [(t / 10, 1000.0) for t in range(50)])
    assert out == [1000.0 + t / 10 for t in range(50)]
    assert g.correction == 0 and g.stats.steps_backward == g.stats.steps_forward == 0


def test_backward_step_is_absorbed_then_slewed_away():
    g = ClockGuard(step_s=1.0, slew=0.1)
    before = _feed(g, [(t / 10, 1000.0) for t in range(100)])  # 10 s
    after = _feed(g, [(10 + t / 10, 1000.0 - 30) for t in range(0, 4000)])  # clock set back 30 s
    out = before + after
    assert all(b >= a for a, b in zip(out, out[1:]))  # never backwards
    assert g.stats.steps_backward == 1
    assert after[0] >= before[-1]
    assert g.correction == 0  # 30 s slewed away at 10 % within 300 s
    assert after[-1] == 10 + 399.9 + 1000.0 - 30  # back on the wall clock


def test_forward_step_is_followed():
    g = ClockGuard()
    out = _feed(g, [(0.0, 0.0), (0.1, 0.0), (0.2, 3600.0), (0.3, 3600.0)])
    assert out == [0.0, 0.1, 3600.2, 3600.3]
    assert g.stats.steps_forward == 1 and g.correction == 0


def test_frames_between_observations_never_go_backwards():
    g = ClockGuard()
    g.observe(100.0, 0.0)
    assert [g.sample_time(t) for t in (100.0, 100.5, 70.0, 70.1, 101.0)] == [100.0, 100.5, 100.5, 100.5, 101.0]


def test_small_jitter_is_not_a_step():
    g = ClockGuard(step_s=1.0)
    _feed(g, [(0.0, 5.0), (0.1, 5.2), (0.2, 4.9)])
    assert g.stats.steps_forward == g.stats.steps_backward == 0


def test_timesync_state(tmp_path):
    assert clock_synchronised(tmp_path / "absent") is None
    assert clock_synchronised(tmp_path) is False
    (tmp_path / "synchronized").touch()
    assert clock_synchronised(tmp_path) is True


def test_suspend_detector_sees_time_asleep():
    from gateway.publisher import SuspendDetector

    clocks = {"boot": 100.0, "mono": 50.0}
    d = SuspendDetector(boottime=lambda: clocks["boot"], monotonic=lambda: clocks["mono"])
    clocks["boot"] += 1.0
    clocks["mono"] += 1.0
    assert d.check() == 0.0
    clocks["boot"] += 600.0  # asleep for ten minutes
    clocks["mono"] += 0.5
    assert d.check() == 599.5
    assert d.check() == 0.0
