"""CanSource: error frames counted, a failing bus reopened and the outage reported."""
from __future__ import annotations

import uuid

import can

from gateway.can_source import CanSource


class FlakyBus(can.BusABC):
    """A bus whose interface 'goes down' for the first ``fail`` receive calls of the process."""

    failures_left = 0
    opened = 0

    def __init__(self, channel: str, **kw) -> None:
        super().__init__(channel=channel, **kw)
        FlakyBus.opened += 1
        self._inner = can.Bus(interface="virtual", channel=channel)

    def _recv_internal(self, timeout):
        if FlakyBus.failures_left:
            FlakyBus.failures_left -= 1
            raise can.CanOperationError("Network is down")
        return self._inner.recv(timeout), False

    def send(self, msg, timeout=None):
        self._inner.send(msg)

    def shutdown(self) -> None:
        self._inner.shutdown()
        super().shutdown()


def test_error_frames_are_counted_not_returned():
    ch = uuid.uuid4().hex
    with can.Bus(interface="virtual", channel=ch) as rx, can.Bus(interface="virtual", channel=ch) as tx:
        src = CanSource(rx)
        tx.send(can.Message(is_error_frame=True, arbitration_id=0x20000004))
        tx.send(can.Message(arbitration_id=0x123, data=b"\x01"))
        got = [src.recv(0.5), src.recv(0.5)]
    assert [m.arbitration_id if m else None for m in got] == [None, 0x123]
    assert (src.stats.error_frames, src.stats.frames) == (1, 1)


def test_a_failing_bus_is_reopened_and_the_outage_reported():
    ch = uuid.uuid4().hex
    FlakyBus.failures_left, FlakyBus.opened = 3, 0
    src = CanSource(opener=lambda: FlakyBus(ch), backoff_min_s=0.01, backoff_max_s=0.02)
    with can.Bus(interface="virtual", channel=ch) as tx:
        assert src.recv(0.05) is None  # first failure
        frames = []
        for _ in range(20):
            tx.send(can.Message(arbitration_id=0x42, data=b"\x00"))
            msg = src.recv(0.2)
            if msg is not None:
                frames.append(msg)
                break
    src.close()
    assert frames and frames[0].arbitration_id == 0x42
    assert src.stats.bus_errors == 3
    assert src.stats.outages == 1 and src.stats.last_outage is not None
    assert FlakyBus.opened >= 2


def test_without_an_opener_bus_errors_propagate():
    FlakyBus.failures_left = 1
    bus = FlakyBus(uuid.uuid4().hex)
    src = CanSource(bus)
    try:
        src.recv(0.01)
        raised = False
    except can.CanOperationError:
        raised = True
    finally:
        bus.shutdown()
    assert raised


def test_remote_frames_are_counted_not_sampled():
    ch = uuid.uuid4().hex
    with can.Bus(interface="virtual", channel=ch) as rx, can.Bus(interface="virtual", channel=ch) as tx:
        src = CanSource(rx)
        tx.send(can.Message(arbitration_id=0xB4, is_extended_id=False, is_remote_frame=True, dlc=8))
        tx.send(can.Message(arbitration_id=0xB4, is_extended_id=False, data=b"\x01" * 8))
        got = [src.recv(0.5), src.recv(0.5)]
    assert got[0] is None and got[1].data == b"\x01" * 8
    assert (src.stats.remote_frames, src.stats.frames) == (1, 1)
