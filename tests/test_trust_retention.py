"""Retention (``dcm sink retain``): lake partitions, quarantine, schema events, dedupe keys and
closed alerts expire by their configured age, and running it beside a live sink loses nothing
inside the window (a late write into an expiring partition is redone, not lost or crashed)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest

import dbc
import faultpoints
from cloud_sink.intake import Incoming
from cloud_sink.lake import LakeError
from cloud_sink.retention import expire_lake, retain
from cloud_sink.service import Sink, SinkConfig
from dcm.broker import BrokerUrl
from minute_packet import encode
from speed_layer.store import Store

from test_sink import SECRET, _packet

NOW = time.time()
RECENT = int(NOW) // 60 * 60 - 3600  # an hour ago


@pytest.fixture(autouse=True)
def _clean_hook():
    yield
    faultpoints.reset()


def _config(tmp_path, **kw) -> SinkConfig:
    base = dict(broker=BrokerUrl("127.0.0.1", 1), lake_root=tmp_path / "lake", state_path=tmp_path / "state.sqlite",
                quarantine_dir=tmp_path / "quarantine", vehicle_secret=SECRET, dbc_paths=(dbc.REFERENCE_DBC,),
                roll_interval_s=1)
    base.update(kw)
    return SinkConfig(**base)


def _packets(schema, vehicle, boot, seqs, start):
    return [dataclasses.replace(_packet(schema, vehicle, s, boot, rows=5), start_time=start + 60 * i)
            for i, s in enumerate(seqs)]


def _ingest(sink, packets, mid0=1):
    sink.ingest([Incoming(f"dcm/{p.vehicle_id}/telemetry", encode(p), mid0 + i, 1) for i, p in enumerate(packets)])


def _dates(root: Path) -> list[str]:
    return sorted({p.name for p in root.glob("model=*/date=*")})


def _rows(root: Path) -> int:
    return ds.dataset(root, format="parquet", partitioning="hive").count_rows() if any(root.rglob("*.parquet")) else 0


def test_every_part_expires_by_its_age_and_the_window_is_kept(tmp_path, schema):
    config = _config(tmp_path, lake_days=30, quarantine_days=1, events_days=1, dedupe_days=1)
    sink = Sink(config)
    boot = uuid.uuid4().bytes
    _ingest(sink, _packets(schema, "V1", boot, range(3), 1_767_225_600))  # 2026-01-01: long expired
    _ingest(sink, _packets(schema, "V1", boot, range(3, 6), RECENT), mid0=10)
    _ingest(sink, _packets(schema, "V2", boot, range(2), RECENT), mid0=20)
    sink.ingest([Incoming("dcm/V1/telemetry", b"garbage", 30, 1)])
    assert sink.flush() == 8 and len(sink.staging.schemas.events()) >= 1
    sink.staging.close()
    assert "date=2026-01-01" in _dates(tmp_path / "lake") and _rows(tmp_path / "lake") == 8 * 5
    # inside every window: nothing goes
    nothing = retain(dataclasses.replace(config, quarantine_days=7, events_days=7, dedupe_days=7), now=NOW)
    assert nothing["lake"]["partitions_deleted"] == 1  # only 2026-01-01 is beyond 30 days
    assert nothing["quarantine"] == {"files_deleted": 0, "bytes_deleted": 0, "files_kept": 1}
    assert nothing["staging"] == {"keys_pruned": 0, "events_deleted": 0}
    assert "date=2026-01-01" not in _dates(tmp_path / "lake") and _rows(tmp_path / "lake") == 5 * 5
    # two days later: the rejects, events and dedupe keys (of packets in the lake) older than a day go
    later = retain(config, now=NOW + 2 * 86400)
    assert later["lake"] == {"before": later["lake"]["before"], "partitions_deleted": 0,
                             "partitions_kept": len(_dates(tmp_path / "lake"))}
    assert later["quarantine"]["files_deleted"] == 1 and not list((tmp_path / "quarantine").rglob("*.bin"))
    assert later["staging"]["keys_pruned"] == 8 and later["staging"]["events_deleted"] >= 1
    assert _rows(tmp_path / "lake") == 5 * 5  # the lake's window is untouched
    # a copy of a pruned packet arriving now is kept aside, not stored twice
    again = Sink(config)
    _ingest(again, _packets(schema, "V2", boot, [0], RECENT))
    assert again.quarantine.by_reason["older_than_dedupe_window"] == 1 and again.flush() == 0
    again.staging.close()


def test_a_late_write_into_a_partition_expiring_under_it_is_redone_not_lost(tmp_path, schema):
    """Retention deletes an old partition at the instant a live sink renames a late packet's file
    into it (the fault point): that batch fails, is written again, and nothing is lost."""
    config = _config(tmp_path, lake_days=30)
    sink = Sink(config)
    boot = uuid.uuid4().bytes
    _ingest(sink, _packets(schema, "V1", boot, range(2), 1_767_225_600))
    assert sink.flush() == 2
    _ingest(sink, _packets(schema, "V1", boot, [2], 1_767_225_600 + 120), mid0=5)  # late, same old day
    fired = []

    def expire_now(point: str) -> None:
        if point == "sink.write.before_rename" and not fired:
            fired.append(expire_lake(sink.lake, "2026-06-01"))

    faultpoints.set_hook(expire_now)
    with pytest.raises((LakeError, OSError)):  # what the lake loop catches and retries
        sink.flush()
    faultpoints.set_hook(None)
    assert fired[0]["partitions_deleted"] == 1 and sink.staging.queue.pending() == 1  # not lost: still staged
    assert sink.flush() == 1 and sink.staging.queue.pending() == 0
    assert _rows(tmp_path / "lake") == 5  # the late packet, once (the next retain run removes it)
    sink.staging.close()


def _alert(store: Store, rid: str, status: str, end: int | None, updated: float) -> None:
    store.put_alert({"id": rid, "vehicle": "V1", "rule": "r", "kind": "k", "episode": rid, "status": status,
                     "start": 1000, "end": end, "details": {}})
    store.db.execute("UPDATE alerts SET updated_at = ? WHERE id = ?", (updated, rid))


def test_the_cli_expires_closed_alerts_beside_a_live_sink(tmp_path, schema):
    """``dcm sink retain --config`` from another process while this one keeps ingesting and writing:
    it exits 0, the old partition and old closed alerts go, every packet inside the window stays."""
    store = Store(tmp_path / "rules-0.sqlite")
    old = NOW - 400 * 86400
    _alert(store, "closed-old", "closed", int(old), old)
    _alert(store, "open-old", "open", None, old)
    _alert(store, "closed-new", "closed", int(NOW), NOW)
    _alert(store, "closed-old-undelivered", "closed", int(old), old)
    store.db.execute("INSERT INTO outbox(target, alert_id, status, payload) VALUES ('mqtt', 'closed-old-undelivered',"
                     " 'closed', x'00')")
    store.notify_once("closed-old", "closed")
    (tmp_path / "sink.toml").write_text(
        'state = "state.sqlite"\nquarantine = "quarantine"\n[lake]\nroot = "lake"\n'
        '[retention]\nlake_days = 30\nalerts_days = 365\nalerts = ["rules-0.sqlite"]\n')
    sink = Sink(_config(tmp_path))
    boot = uuid.uuid4().bytes
    _ingest(sink, _packets(schema, "V1", boot, range(2), 1_767_225_600))
    sink.flush()
    proc = subprocess.Popen([sys.executable, "-m", "dcm.cli", "sink", "retain", "--config", str(tmp_path / "sink.toml"),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    seq = 2
    while proc.poll() is None or seq < 12:  # the live sink keeps staging and writing meanwhile
        _ingest(sink, _packets(schema, "V2", boot, [seq], RECENT + 60 * seq), mid0=100 + seq)
        sink.flush()
        seq += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["lake"]["partitions_deleted"] == 1 and report["alerts"] == {str(tmp_path / "rules-0.sqlite"): 1}
    assert sink.stats.write_errors == 0 and sink.staging.queue.pending() == 0
    assert _rows(tmp_path / "lake") == (seq - 2) * 5  # every packet of the window, once
    assert "date=2026-01-01" not in _dates(tmp_path / "lake")
    sink.staging.close()
    left = {a["id"] for a in store.alerts()}
    assert left == {"open-old", "closed-new", "closed-old-undelivered"} and not store.was_notified("closed-old")
    store.close()
