"""The gateway's promise under a SIGKILL at every boundary of its outbox and publisher (fault
points, not random timing): every packet Outbox.put returned for reaches the broker, once the
gateway restarts; re-sends are allowed (the sink dedupes). `dcm bench faults` runs >= 50 trials
per point; CI runs one per point, each checking that the kill really happened there."""
from __future__ import annotations

import pytest

from dcm.faulttrials import GATEWAY_POINTS, gateway_trial


@pytest.mark.parametrize("point", GATEWAY_POINTS)
def test_kill_at_a_boundary_loses_no_finished_packet(tmp_path, broker, point):
    n = 2 if point.startswith("outbox.put") else 1
    r = gateway_trial(broker.host, broker.port, tmp_path, point, n)
    assert r.killed, r  # the risky path ran: the child died at this very boundary
    assert r.lost == 0 and r.finished >= n - 1, r
    assert r.received >= r.finished
