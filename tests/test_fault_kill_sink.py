"""The sink's exactly-once under a SIGKILL at every boundary of a batch (fault points: stage,
ack, assign, write, rename, finish), in a forked sink with its queue waiting at a real Mosquitto;
after a restart the lake (DuckDB) holds every packet exactly once. One trial per point here;
`dcm bench faults` runs >= 50 per point."""
from __future__ import annotations

import pytest

from dcm.faulttrials import SINK_POINTS, sink_trial


@pytest.mark.parametrize("point", SINK_POINTS)
def test_kill_at_a_batch_boundary_stores_every_packet_once(tmp_path, broker, point):
    n = 2 if point.startswith("sink.stage") or point.startswith("sink.ack") else 1
    r = sink_trial(broker.host, broker.port, tmp_path, point, n)
    assert r.killed, r  # the risky path ran: the sink died at this very boundary
    assert (r.stored, r.duplicated, r.lost) == (r.sent, 0, 0), r
