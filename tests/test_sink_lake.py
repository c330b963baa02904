"""The lake without a broker: schema evolution read back by plain DuckDB, out-of-range flags, latest
state, schema-change events, the bucket layout, a ``file://`` root and crash-safe compaction."""
from __future__ import annotations

import json
import time
from pathlib import Path
import uuid

import duckdb
import numpy as np
import pytest

import dbc
from cloud_sink.compact import compact_lake
from cloud_sink.config import SinkConfig
from cloud_sink.intake import Incoming
from cloud_sink.lake import Lake, mask_vehicle
from cloud_sink.service import Sink
from dcm.broker import BrokerUrl
from minute_packet import Collection, MinutePacket, encode, schema_from_dbc

T0 = 1_767_225_600
SECRET = b"test-secret"


@pytest.fixture(scope="module")
def schemas():
    db = dbc.load(dbc.REFERENCE_DBC)
    return schema_from_dbc(db), schema_from_dbc(db, Collection(aggregates={"YawRate": ("last", "max")}))


def _packet(schema, vehicle, seq, boot, rows=20, start=None, yaw_raw=None):
    rng = np.random.default_rng(seq + 1000 * len(schema.columns))
    n = len(schema.columns)
    values = rng.integers(0, 50, size=(n, rows), dtype=np.uint64)
    if yaw_raw is not None:
        values[0, :] = yaw_raw
    present = np.ones((n, rows), dtype=bool)
    return MinutePacket(vehicle_id=vehicle, model="ref", boot_id=boot, seq=seq,
                        start_time=start if start is not None else T0 + 60 * seq,
                        fingerprint=schema.fingerprint, values=values, present=present)


def _sink(tmp_path, name="w1", **kw) -> Sink:
    base = dict(broker=BrokerUrl("127.0.0.1", 1), lake_root=(tmp_path / "lake").as_uri(),
                state_path=tmp_path / f"{name}.sqlite", quarantine_dir=tmp_path / "quarantine",
                vehicle_secret=SECRET, client_id=name, roll_interval_s=1)
    base.update(kw)
    return Sink(SinkConfig(**base))


def _feed(sink: Sink, schemas, packets) -> None:
    msgs = [Incoming(f"dcm/schemas/{s.fingerprint.hex()}", s.to_json(), 0, 1) for s in schemas]
    msgs += [Incoming(f"dcm/{p.vehicle_id}/telemetry", encode(p), i, 1) for i, p in enumerate(packets)]
    sink.ingest(msgs)


def _sql(sql: str):
    return duckdb.connect().execute(sql).fetchall()


def test_new_signals_become_columns_readable_by_plain_duckdb(tmp_path, schemas):
    old, new = schemas
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path)
    _feed(sink, [old], [_packet(old, "CAR1", 0, boot), _packet(old, "CAR1", 1, boot, yaw_raw=20_000)])
    assert sink.flush() == 2
    _feed(sink, [new], [_packet(new, "CAR1", 2, boot), _packet(new, "CAR1", 3, boot)])
    assert sink.flush() == 2
    glob = f"{tmp_path}/lake/**/*.parquet"
    rows = _sql(f"SELECT seq, count(*), count(YawRate__max), count(YawRate) FROM read_parquet('{glob}',"
                f" hive_partitioning = true, union_by_name = true) GROUP BY seq ORDER BY seq")
    assert rows == [(0, 20, 0, 20), (1, 20, 0, 20), (2, 20, 20, 20), (3, 20, 20, 20)]
    # the vehicle partition holds the masked id, never the raw one
    masked = mask_vehicle(SECRET, "CAR1")
    assert _sql(f"SELECT DISTINCT vehicle FROM read_parquet('{glob}', hive_partitioning = true,"
                f" union_by_name = true)") == [(masked,)]
    # YawRate raw 20000 * 0.01 = 200 deg/s > the DBC's 150: flagged, not altered
    flagged = _sql(f"SELECT seq, count(*), min(YawRate) FROM read_parquet('{glob}', union_by_name = true)"
                   f" WHERE list_contains(out_of_range, 'YawRate') GROUP BY seq")
    assert flagged == [(1, 20, 200.0)]
    assert sink.stats.out_of_range["YawRate"] == 20
    # latest state: the last second of seq 3
    latest = sink.staging.latest.get(masked)
    assert latest["YawRate__max"][0] == T0 + 60 * 3 + 19
    # a new fingerprint for the vehicle and for the model is a stored schema-change event
    events = [(scope, old_fp, new_fp, json.loads(detail)) for _, _, scope, _, old_fp, new_fp, detail
              in sink.staging.schemas.events()]
    assert ("vehicle", old.fingerprint, new.fingerprint, {"added": ["YawRate__max"], "removed": []}) in events
    assert ("model", old.fingerprint, new.fingerprint, {"added": ["YawRate__max"], "removed": []}) in events
    assert sink.outbox.added == len(events) == 3  # model new, model change, vehicle change
    sink.staging.close()


def test_bucket_layout_answers_the_same_query(tmp_path, schemas):
    schema = schemas[0]
    sink = _sink(tmp_path, layout="bucket", buckets=4)
    boot = uuid.uuid4().bytes
    _feed(sink, [schema], [_packet(schema, f"CAR{v}", s, boot) for v in range(6) for s in range(3)])
    sink.flush()
    parts = sorted(p.name for p in (tmp_path / "lake" / "model=ref").glob("date=*/vehicle_bucket=*"))
    assert 1 <= len(parts) <= 4
    rows = _sql(f"SELECT vehicle, count(DISTINCT seq), count(*) FROM read_parquet('{tmp_path}/lake/**/*.parquet',"
                f" hive_partitioning = true, union_by_name = true) GROUP BY vehicle ORDER BY vehicle")
    assert sorted(rows) == sorted((mask_vehicle(SECRET, f"CAR{v}"), 3, 60) for v in range(6))
    sink.staging.close()


def test_a_lake_root_records_its_layout_and_refuses_another(tmp_path, schemas):
    from cloud_sink.lake import LakeRootError

    sink = _sink(tmp_path, layout="bucket", buckets=4)
    sink.staging.close()
    assert json.loads((tmp_path / "lake" / "_dcm_lake.json").read_text()) == {"format": 1, "layout": "bucket", "buckets": 4}
    _sink(tmp_path, name="w2", layout="bucket", buckets=4).staging.close()  # a second worker alike: fine
    for other in (dict(layout="bucket", buckets=8), dict(layout="vehicle")):
        with pytest.raises(LakeRootError, match="holds layout 'bucket' with buckets 4"):
            _sink(tmp_path, name="w3", **other)


def test_a_lake_written_before_it_recorded_its_layout_refuses_the_other_layout(tmp_path, schemas):
    """A vehicle-layout lake from before ``_dcm_lake.json`` (the default layout was "vehicle"
    then) is not mixed with bucket folders by a sink that now defaults to "bucket"."""
    from cloud_sink.lake import LAKE_DESCRIPTION, LakeRootError

    sink = _sink(tmp_path, layout="vehicle")
    _feed(sink, schemas[:1], [_packet(schemas[0], "OLD1", 0, bytes(16))])
    sink.flush()
    sink.staging.close()
    (tmp_path / "lake" / LAKE_DESCRIPTION).unlink()  # as an older sink left it
    with pytest.raises(LakeRootError, match="vehicle=.* of the other layout"):
        _sink(tmp_path, name="w2")  # the default layout: bucket
    _sink(tmp_path, name="w3", layout="vehicle").staging.close()  # its own layout: fine, and recorded again
    assert json.loads((tmp_path / "lake" / LAKE_DESCRIPTION).read_text())["layout"] == "vehicle"


def test_row_groups_gather_many_decode_chunks_and_end_at_partitions(tmp_path, schemas):
    """Packets are decoded 3 at a time but written in row groups of at least 100 rows (5 packets
    of 20); a row group never spans two files, and every row is stored once, in time order."""
    import pyarrow.parquet as pq

    schema = schemas[0]
    sink = _sink(tmp_path, layout="bucket", buckets=2, chunk_packets=3, row_group_rows=100)
    boot = uuid.uuid4().bytes
    _feed(sink, [schema], [_packet(schema, f"CAR{v}", s, boot) for v in range(5) for s in range(7)])
    assert sink.flush() == 35
    files = sorted((tmp_path / "lake").rglob("*.parquet"))
    assert 1 <= len(files) <= 2
    for f in files:
        meta = pq.ParquetFile(f).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(n >= 100 for n in sizes[:-1]) and sum(sizes) == meta.num_rows
        assert all(n % 20 == 0 for n in sizes)  # chunks are cut at packet boundaries only
        # the masked id (16 characters) stays dictionary-encoded across the chunks of a row group:
        # far below the 20 bytes per row of plain strings
        vehicle = meta.schema.names.index("vehicle")
        for i in range(meta.num_row_groups):
            assert meta.row_group(i).column(vehicle).total_uncompressed_size < 5 * sizes[i] + 300, sizes[i]
        table = pq.read_table(f, columns=["vehicle", "ts"]).to_pydict()
        for vehicle in set(table["vehicle"]):
            times = [t for v, t in zip(table["vehicle"], table["ts"]) if v == vehicle]
            assert times == sorted(times) and len(times) == 7 * 20
    rows = _sql(f"SELECT vehicle, seq, count(*) FROM read_parquet('{tmp_path}/lake/**/*.parquet',"
                f" hive_partitioning = true) GROUP BY ALL ORDER BY ALL")
    assert rows == sorted((mask_vehicle(SECRET, f"CAR{v}"), s, 20) for v in range(5) for s in range(7))
    sink.staging.close()


def _lake_counts(tmp_path):
    return _sql(f"SELECT vehicle, seq, count(*), count(DISTINCT ts) FROM read_parquet("
                f"'{tmp_path}/lake/**/*.parquet', hive_partitioning = true, union_by_name = true)"
                f" GROUP BY ALL ORDER BY ALL")


def test_compaction_merges_dedupes_and_is_safe_to_rerun(tmp_path, schemas, monkeypatch):
    old, new = schemas
    boot = uuid.uuid4().bytes
    w1, w2 = _sink(tmp_path, "w1"), _sink(tmp_path, "w2")
    for seq in range(4):  # four batches -> four small files per vehicle partition
        schema = old if seq < 2 else new
        _feed(w1, [schema], [_packet(schema, v, seq, boot) for v in ("CAR1", "CAR2")])
        w1.flush()
    # a publisher retry that a shared subscription handed to the other worker: stored twice for now
    _feed(w2, [old], [_packet(old, "CAR1", 0, boot)])
    w2.flush()
    assert [r[2] for r in _lake_counts(tmp_path)].count(40) == 1
    lake = Lake((tmp_path / "lake").as_uri())
    expected = [(mask_vehicle(SECRET, v), s, 20, 20) for v in ("CAR1", "CAR2") for s in range(4)]

    # crash after the merged file appeared, before all inputs were deleted
    real_delete = Lake.delete
    calls = {"n": 0}

    def flaky_delete(self, rel):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash")
        real_delete(self, rel)

    monkeypatch.setattr(Lake, "delete", flaky_delete)
    with pytest.raises(OSError):
        compact_lake(lake, min_age_s=0)
    monkeypatch.setattr(Lake, "delete", real_delete)

    report = compact_lake(lake, min_age_s=0)  # recovers, then compacts what is left
    assert report["recovered"] >= 1
    assert _lake_counts(tmp_path) == sorted(expected)
    files = sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet"))
    assert len(files) == 2 and all(f.startswith("compact-") for f in files)
    again = compact_lake(lake, min_age_s=0)
    assert again["merged_files"] == 0 and _lake_counts(tmp_path) == sorted(expected)
    # both schemas' columns survive the merge
    assert _sql(f"SELECT count(YawRate__max), count(*) FROM read_parquet('{tmp_path}/lake/**/*.parquet')") == [(80, 160)]
    w1.staging.close()
    w2.staging.close()


def test_an_interrupted_batch_already_compacted_is_not_written_twice(tmp_path, schemas):
    schema = schemas[0]
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path)
    _feed(sink, [schema], [_packet(schema, "CAR1", 0, boot)])
    sink.flush()
    _feed(sink, [schema], [_packet(schema, "CAR1", 1, boot)])
    batch, redo, staged = sink.staging.queue.assign_batch(list(sink.schemas), 100)
    sink.writer.write_batch(batch, redo, staged)  # files written, then "killed" before finish_batch
    compact_lake(Lake((tmp_path / "lake").as_uri()), min_age_s=0)
    assert sink.flush() == 1  # the redo finds its file merged: it finishes the batch without writing
    assert sink.staging.queue.pending() == 0
    assert [r[1:] for r in _lake_counts(tmp_path)] == [(0, 20, 20), (1, 20, 20)]
    sink.staging.close()


def test_compaction_rolls_back_an_uncommitted_intent(tmp_path, schemas):
    schema = schemas[0]
    sink = _sink(tmp_path)
    boot = uuid.uuid4().bytes
    for seq in range(2):
        _feed(sink, [schema], [_packet(schema, "CAR1", seq, boot)])
        sink.flush()
    lake = Lake(str(tmp_path / "lake"))
    (partition,) = lake.partitions()
    lake.write_bytes(f"{partition}/_compaction-deadbeef.json",
                     json.dumps({"inputs": ["x.parquet"], "output": "compact-deadbeef.parquet"}).encode())
    report = compact_lake(lake, min_age_s=0)
    assert report["recovered"] == 1 and report["merged_files"] == 2
    assert not (tmp_path / "lake" / partition / "_compaction-deadbeef.json").exists()
    assert [r[1:] for r in _lake_counts(tmp_path)] == [(0, 20, 20), (1, 20, 20)]
    sink.staging.close()


def test_the_readme_query_runs_on_both_layouts(tmp_path, schemas):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## The data lake"):]
    sql = section[section.index("```sql") + 6:section.index("```", section.index("```sql") + 6)]
    schema = schemas[0]
    boot = uuid.uuid4().bytes
    for layout in ("vehicle", "bucket"):
        root = tmp_path / layout
        sink = _sink(root, layout=layout, buckets=2)
        _feed(sink, [schema], [_packet(schema, f"CAR{v}", s, boot, yaw_raw=20_000 if s == 1 else None)
                               for v in range(3) for s in range(3)])
        sink.flush()
        sink.staging.close()
        rows = _sql(sql.replace("'lake/", f"'{root}/lake/"))
        assert len(rows) == 9 and {r[0] for r in rows} == {mask_vehicle(SECRET, f"CAR{v}") for v in range(3)}
        assert all(r[2] is not None and r[4] == 20 for r in rows)  # random raw values leave some ranges


def test_pruned_dedupe_keys_keep_gaps_and_turn_late_copies_stale(tmp_path, schemas):
    schema = schemas[0]
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path)
    _feed(sink, [schema], [_packet(schema, "CAR1", s, boot) for s in (0, 1, 2, 5, 6)])
    sink.flush()
    _feed(sink, [schema], [_packet(schema, "CAR1", 7, boot)])  # staged, not yet in the lake: never pruned
    assert sink.staging.keys.prune(time.time() + 1) == 5
    assert sink.staging.keys.count() == 1 and sink.gap_count(0) == 2
    assert [(g.first, g.last) for g in sink.staging.keys.gaps()] == []  # 3-4 lie below the pruned floor (6)
    _feed(sink, [schema], [_packet(schema, "CAR1", 1, boot), _packet(schema, "CAR1", 9, boot)])
    assert sink.quarantine.by_reason["older_than_dedupe_window"] == 1
    assert [(g.first, g.last) for g in sink.staging.keys.gaps()] == [(8, 8)]
    assert sink.flush() == 2
    assert [r[1] for r in _lake_counts(tmp_path)] == [0, 1, 2, 5, 6, 7, 9]
    sink.staging.close()


def test_batches_roll_by_size_and_by_age(tmp_path, schemas):
    schema = schemas[0]
    boot = uuid.uuid4().bytes
    packets = [_packet(schema, "CAR1", s, boot) for s in range(2)]
    size = sum(len(encode(p)) for p in packets)
    big = _sink(tmp_path / "a", roll_bytes=10 * size, roll_interval_s=3600)
    _feed(big, [schema], packets)
    assert not big.lake_loop.roll_due()  # small and young: keep waiting
    small = _sink(tmp_path / "b", roll_bytes=size, roll_interval_s=3600)
    _feed(small, [schema], packets)
    assert small.lake_loop.roll_due()  # enough bytes
    young = _sink(tmp_path / "c", roll_bytes=10 * size, roll_interval_s=0.05)
    _feed(young, [schema], packets)
    time.sleep(0.1)
    assert young.lake_loop.roll_due()  # old enough
    for s in (big, small, young):
        s.staging.close()


def test_a_parked_packet_whose_schema_differs_is_quarantined_at_write_time(tmp_path, schemas):
    """A packet parked under a fingerprint not known yet but with the wrong column count for it:
    once the schema arrives the packet is quarantined with its reason, the good one is stored."""
    import dataclasses

    old, new = schemas
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path, validated_cache=0)  # bytes read back from staging, as after a restart
    liar = dataclasses.replace(_packet(old, "CAR1", 0, boot), fingerprint=new.fingerprint)
    _feed(sink, [], [liar])
    assert sink.flush() == 0 and sink.staging.queue.pending() == 1  # parked
    _feed(sink, [new], [_packet(new, "CAR2", 0, boot)])
    assert sink.flush() == 1 and sink.staging.queue.pending() == 0
    reasons = [json.loads(p.read_text())["reason"] for p in (tmp_path / "quarantine").rglob("*.json")]
    assert reasons == ["schema_mismatch"]
    assert sink.staging.keys.count() == 2  # both keys stay for dedupe
    sink.staging.close()


_LAYOUT_1 = """
CREATE TABLE packets (
    id INTEGER PRIMARY KEY, vehicle TEXT NOT NULL, boot BLOB NOT NULL, seq INTEGER NOT NULL,
    fingerprint BLOB NOT NULL, model TEXT NOT NULL, part TEXT NOT NULL, start_time INTEGER NOT NULL,
    rows INTEGER NOT NULL, size INTEGER NOT NULL, payload BLOB, batch INTEGER, received REAL NOT NULL,
    UNIQUE (vehicle, boot, seq)
);
CREATE INDEX packets_pending ON packets (batch) WHERE payload IS NOT NULL;
CREATE TABLE batches (id INTEGER PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0, files TEXT);
"""


def test_a_staging_database_of_layout_1_is_migrated_and_its_pending_packets_written(tmp_path, schemas):
    """The previous layout kept packet bytes inside ``packets``: one stored packet (bytes gone) and
    one pending packet. Opening it moves the pending bytes; the pending packet reaches the lake
    and the stored one stays a duplicate."""
    import sqlite3

    from cloud_sink.lake import Lake

    schema = schemas[0]
    boot = uuid.uuid4().bytes
    state = tmp_path / "w1.sqlite"
    db = sqlite3.connect(state)
    db.executescript(_LAYOUT_1)
    part = Lake(tmp_path / "lake").part_key(mask_vehicle(SECRET, "CAR1"))
    for seq, payload in ((0, None), (1, encode(_packet(schema, "CAR1", 1, boot)))):
        db.execute("INSERT INTO packets (vehicle, boot, seq, fingerprint, model, part, start_time, rows, size,"
                   " payload, received) VALUES ('CAR1', ?, ?, ?, 'ref', ?, ?, 20, 0, ?, 0)",
                   (boot, seq, schema.fingerprint, part, T0 + 60 * seq, payload))
    db.commit()
    db.close()
    sink = _sink(tmp_path)
    assert sink.staging.queue.pending() == 1
    _feed(sink, [schema], [_packet(schema, "CAR1", 0, boot)])
    assert sink.stats.duplicates == 1
    assert sink.flush() == 1
    assert _lake_counts(tmp_path) == [(mask_vehicle(SECRET, "CAR1"), 1, 20, 20)]
    sink.staging.close()
    db = sqlite3.connect(state)
    assert db.execute("PRAGMA user_version").fetchone() == (3,)
    assert db.execute("SELECT COUNT(*) FROM payloads").fetchone() == (0,)
    db.close()


def test_a_staging_database_of_a_newer_layout_is_refused(tmp_path):
    import sqlite3

    from cloud_sink.staging import Staging, StagingError

    db = sqlite3.connect(tmp_path / "new.sqlite")
    db.execute("PRAGMA user_version = 4")
    db.close()
    with pytest.raises(StagingError, match="layout 4 is newer"):
        Staging(tmp_path / "new.sqlite")


def test_packets_whose_schema_never_arrives_are_quarantined_after_park_days(tmp_path, schemas):
    old, new = schemas
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path, park_days=2)
    _feed(sink, [], [_packet(new, "CAR1", 0, boot), _packet(new, "CAR1", 1, boot)])  # `new` never arrives
    _feed(sink, [old], [_packet(old, "CAR2", 0, boot)])
    assert sink.expire_parked(now=time.time() + 86400) == 0  # one day: still waiting
    assert sink.expire_parked(now=time.time() + 3 * 86400) == 2
    assert sink.staging.queue.pending() == 1 and sink.quarantine.by_reason["schema_never_arrived"] == 2
    notes = [json.loads(p.read_text()) for p in (tmp_path / "quarantine" / "schema_never_arrived").glob("*.json")]
    assert sorted(n["detail"].split(":")[0] for n in notes) == ["seq 0", "seq 1"]
    assert all(new.fingerprint.hex() in n["detail"] for n in notes)
    _feed(sink, [new], [_packet(new, "CAR1", 1, boot)])  # a late copy: its key is still known
    assert sink.stats.duplicates == 1
    assert sink.flush() == 1  # CAR2's packet, whose schema is known
    sink.staging.close()


def test_parked_packets_stay_when_the_quarantine_is_full_or_fails(tmp_path, schemas):
    """Expiry never loses a packet: with no room in the quarantine they stay parked; when writing
    the quarantine copy fails (a full disk), they stay staged too and are not counted as rejects."""
    import errno

    import faultpoints

    _, new = schemas
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path, park_days=1)
    _feed(sink, [], [_packet(new, "CAR1", s, boot) for s in range(3)])
    later = time.time() + 2 * 86400
    sink.quarantine.max_files = 0
    assert sink.expire_parked(now=later) == 0 and sink.staging.queue.pending() == 3
    sink.quarantine.max_files = 10

    def disk_full(point: str) -> None:
        if point == "sink.quarantine.write":
            raise OSError(errno.ENOSPC, "No space left on device")

    faultpoints.set_hook(disk_full)
    try:
        assert sink.expire_parked(now=later) == 0
    finally:
        faultpoints.reset()
    assert sink.staging.queue.pending() == 3 and sink.quarantine.write_errors == 1
    assert sink.quarantine.by_reason["schema_never_arrived"] == 0 and sink.quarantine.dropped == 0
    assert sink.expire_parked(now=later) == 3 and sink.staging.queue.pending() == 0
    assert len(list((tmp_path / "quarantine" / "schema_never_arrived").glob("*.bin"))) == 3
    sink.staging.close()


def test_a_staging_database_of_layout_2_gains_schema_current(tmp_path):
    import sqlite3

    from cloud_sink.staging import Staging

    Staging(tmp_path / "s.sqlite").close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute("DROP TABLE schema_current")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    Staging(tmp_path / "s.sqlite").close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("PRAGMA user_version").fetchone() == (3,)
    assert db.execute("SELECT COUNT(*) FROM schema_current").fetchone() == (0,)
    db.close()
