"""Schema registry over a real staging database: change events per model and vehicle, a vehicle
going back to an older schema, a bounded in-memory cache that reads evicted vehicles back, and
the current fingerprint surviving a restart."""
from __future__ import annotations

import dbc
from cloud_sink.registry import SchemaRegistry
from cloud_sink.staging import Staging
from minute_packet import Collection, schema_from_dbc


def _schemas():
    db = dbc.load(dbc.REFERENCE_DBC)
    return schema_from_dbc(db), schema_from_dbc(db, Collection(aggregates={"YawRate": ("last", "max")}))


def _kinds(events):
    return [(e["kind"], e["scope"], e["key"], e["old_fingerprint"], e["new_fingerprint"]) for e in events]


def test_events_with_an_evicting_cache_and_a_restart(tmp_path):
    a, b = _schemas()
    fa, fb = a.fingerprint, b.fingerprint
    staging = Staging(tmp_path / "s.sqlite")
    reg = SchemaRegistry(staging, cached_keys=2)
    for s in (a, b):
        reg.learn(s, s.to_json())
    assert _kinds(reg.observe([("m", "V1", fa), ("m", "V2", fa), ("m", "V3", fa)])) == [
        ("new", "model", "m", None, fa.hex())]
    assert reg.evicted >= 2 and len(reg._state) <= 2  # bounded: V1 and V2's states left memory
    # V1 changes schema: its old fingerprint comes back from the database
    assert _kinds(reg.observe([("m", "V1", fb)])) == [
        ("change", "model", "m", fa.hex(), fb.hex()), ("change", "vehicle", "V1", fa.hex(), fb.hex())]
    # V1 goes back to the older schema: a change for the vehicle, none for the model
    assert _kinds(reg.observe([("m", "V1", fa)])) == [("change", "vehicle", "V1", fb.hex(), fa.hex())]
    assert reg.observe([("m", "V1", fa), ("m", "V2", fa)]) == []
    published = reg.outbox.take()  # every event raised waits in the outbox, in order
    assert len(published) == 4 and all(e["id"] for e in published) and reg.outbox.take() == []
    # after a restart, V1's current schema is the one it went back to: no spurious event
    again = SchemaRegistry(staging, cached_keys=2)
    assert again.observe([("m", "V1", fa)]) == []
    assert _kinds(again.observe([("m", "V2", fb)])) == [("change", "vehicle", "V2", fa.hex(), fb.hex())]
    stored = [(scope, key, old, new) for _, _, scope, key, old, new, _ in staging.schemas.events()]
    assert stored == [("model", "m", None, fa), ("model", "m", fa, fb), ("vehicle", "V1", fa, fb),
                      ("vehicle", "V1", fb, fa), ("vehicle", "V2", fa, fb)]
    staging.close()


def test_many_key_lookups_search_the_key_indexes_instead_of_scanning(tmp_path):
    """At fleet scale a table scan per intake commit is the difference between microseconds and
    a fraction of a second: each batched key lookup must search its table's key index."""
    import sqlite3

    from cloud_sink import staging_keys as keys
    from cloud_sink import staging_schemas as schemas

    Staging(tmp_path / "s.sqlite").close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    for sql, width, table, alias in ((keys.SEEN_SQL, 3, "packets", "p"), (keys.FLOORS_SQL, 3, "streams", "s"),
                                     (schemas.USES_SQL, 2, "schema_use", "u"),
                                     (schemas.CURRENT_SQL, 2, "schema_current", "c")):
        assert f"JOIN {table} {alias} " in sql
        marks = ",".join(["(" + ", ".join("?" * width) + ")"] * 2)
        plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql.format(marks=marks), [1] * (2 * width))]
        assert not any(step.split()[:2] in (["SCAN", alias], ["SCAN", table]) for step in plan), (table, plan)
        assert any(step.startswith(f"SEARCH {alias} USING") for step in plan), (table, plan)
    db.close()


def test_a_failed_commit_leaves_memory_as_the_database_so_the_retry_raises_the_events(tmp_path):
    import pytest

    from cloud_sink.staging import StagingError

    a, b = _schemas()
    staging = Staging(tmp_path / "s.sqlite")
    reg = SchemaRegistry(staging)
    reg.observe([("m", "V1", a.fingerprint)])
    real = staging.schemas.record_use

    def failing(*args, **kwargs):
        raise StagingError("disk full")

    staging.schemas.record_use = failing
    with pytest.raises(StagingError):
        reg.observe([("m", "V1", b.fingerprint)])
    staging.schemas.record_use = real
    assert _kinds(reg.observe([("m", "V1", b.fingerprint)])) == [
        ("change", "model", "m", a.fingerprint.hex(), b.fingerprint.hex()),
        ("change", "vehicle", "V1", a.fingerprint.hex(), b.fingerprint.hex())]
    assert len(reg.outbox.take()) == 3  # the failed observe put nothing in the outbox
    staging.close()


def test_the_event_outbox_is_bounded_and_counts_what_it_drops():
    from cloud_sink.events import EventOutbox

    box = EventOutbox(capacity=2)
    for i in range(3):
        box.put({"id": i})
    assert (box.added, box.dropped, [e["id"] for e in box.take()]) == (3, 1, [1, 2])


def test_stores_that_commit_together_roll_back_together(tmp_path):
    """finish_batch marks the batch done and merges latest state in one transaction: when the
    merge fails the batch is still unfinished and its packets still pending."""
    import sqlite3

    import pytest

    from cloud_sink.staging import NewPacket, StagingError

    staging = Staging(tmp_path / "s.sqlite")
    staging.schemas.save(b"f" * 8, b"{}", 0.0)
    staging.stage([NewPacket("V1", bytes(16), 0, b"f" * 8, "m", "00", 0, 60, b"x", 0.0)])
    batch, _, staged = staging.queue.assign_batch([b"f" * 8], 10)

    def broken(_c, _latest):
        raise sqlite3.OperationalError("disk I/O error")

    staging.latest._merge = broken
    with pytest.raises(StagingError, match="disk I/O error"):
        staging.finish_batch(batch, ["a.parquet"], {"V1": {"s": (1, 1.0)}})
    assert staging.queue.unfinished_batch() and staging.queue.pending() == 1
    assert staging.queue.payloads([staged[0].id]) == {staged[0].id: b"x"}
    del staging.latest._merge
    staging.finish_batch(batch, ["a.parquet"], {"V1": {"s": (1, 1.0)}})
    assert not staging.queue.unfinished_batch() and staging.queue.pending() == 0
    assert staging.latest.get("V1") == {"s": (1, 1.0)}
    staging.close()
