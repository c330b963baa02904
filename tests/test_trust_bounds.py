"""Nothing silently unbounded at the sink's edges: the quarantine is bounded in bytes and files
(oldest evicted first, counted), a full or failing quarantine never stops intake, and the schema
registry is bounded in schemas and bytes (unused schemas pruned, counted; used ones never)."""
from __future__ import annotations

import errno
import os
import stat
import uuid

import pytest

import dbc
import faultpoints
from cloud_sink.intake import Incoming
from cloud_sink.quarantine import Quarantine
from cloud_sink.registry import RegistryFull, SchemaRegistry
from cloud_sink.service import Sink
from cloud_sink.staging import Staging
from dcm.broker import BrokerUrl
from minute_packet import Collection, encode, schema_from_dbc

from helpers.smallfs import small_fs
from test_sink import _config, _packet


def _disk_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_the_quarantine_is_bounded_in_bytes_oldest_evicted_first_and_counted(tmp_path):
    q = Quarantine(tmp_path / "q", max_files=1000, max_bytes=20_000)
    payloads = [os.urandom(3000) + bytes([i]) for i in range(40)]  # 40 x 3 KB against a 20 KB budget
    for i, p in enumerate(payloads):
        assert q.put("too_large", f"dcm/V{i}/telemetry", p, "test") is True
    assert q.total == 40 and q.by_reason["too_large"] == 40
    assert q.bytes <= 20_000 and _disk_bytes(tmp_path / "q") == q.bytes
    assert q.evicted == 40 - q.files and q.evicted_bytes > 0 and q.dropped == 0
    kept = sorted((tmp_path / "q" / "too_large").glob("*.bin"))
    assert [k.read_bytes() for k in kept] == payloads[-len(kept):]  # the newest survive
    # the bound holds across a restart, with a smaller budget too
    again = Quarantine(tmp_path / "q", max_files=2, max_bytes=20_000)
    assert again.files == 2 and [k.read_bytes() for k in sorted((tmp_path / "q").rglob("*.bin"))] == payloads[-2:]
    # a payload larger than the whole budget is counted, not kept, and evicts nothing
    assert again.put("too_large", "t", os.urandom(30_000), "huge") is False
    assert again.dropped == 1 and again.files == 2
    # files are private: rejects carry raw vehicle ids
    assert stat.S_IMODE(os.stat(tmp_path / "q" / "too_large").st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in (tmp_path / "q").rglob("*.*"))


def _sink(tmp_path, **kw) -> Sink:
    return Sink(_config(tmp_path, BrokerUrl("127.0.0.1", 1), "dcm", dbc_paths=(dbc.REFERENCE_DBC,), **kw))


def _mixed(schema, n: int) -> list[Incoming]:
    """``n`` good packets of V1, each followed by a bad payload."""
    boot = uuid.uuid4().bytes
    out = []
    for s in range(n):
        out.append(Incoming("dcm/V1/telemetry", encode(_packet(schema, "V1", s, boot, rows=5)), 2 * s + 1, 1))
        out.append(Incoming("dcm/V1/telemetry", b"\x00garbage" * 100 + bytes([s]), 2 * s + 2, 1))
    return out


def test_a_failing_quarantine_write_never_stops_intake(tmp_path, schema):
    """ENOSPC at the quarantine's write (a deterministic fault point): every bad payload is
    counted and dropped, every good packet is still staged, nothing raises."""
    sink = _sink(tmp_path)

    def disk_full(point: str) -> None:
        if point == "sink.quarantine.write":
            raise OSError(errno.ENOSPC, "No space left on device")

    faultpoints.set_hook(disk_full)
    try:
        sink.ingest(_mixed(schema, 10))
    finally:
        faultpoints.reset()
    assert sink.stats.packets_staged == 10 and sink.quarantine.total == 10
    assert sink.quarantine.dropped == 10 and sink.quarantine.write_errors == 10 and sink.quarantine.files == 0
    samples = {name: v for name, _, _, _, v in sink.metric_samples()}
    assert samples["dcm_sink_quarantine_write_errors_total"] == 10
    assert samples["dcm_sink_quarantine_unsaved_total"] == 10
    assert sink.flush() == 10
    sink.staging.close()


def test_a_quarantine_on_a_full_real_filesystem_never_stops_intake(tmp_path, schema):
    """The quarantine on a 1 MiB tmpfs filled to the last byte: intake goes on, rejects counted."""
    with small_fs(tmp_path / "small", 1) as mount:
        filler = mount / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        sink = _sink(tmp_path, quarantine_dir=mount / "q")
        sink.ingest(_mixed(schema, 10))
        assert sink.stats.packets_staged == 10 and sink.quarantine.total == 10
        assert sink.quarantine.write_errors == 10 and sink.quarantine.dropped == 10
        filler.unlink()  # room again: rejects are kept again
        sink.ingest(_mixed(schema, 1)[1:])
        assert sink.quarantine.files == 1
        sink.staging.close()


def _small_schemas(n: int):
    db = dbc.load(dbc.REFERENCE_DBC)
    names = [c.name for c in schema_from_dbc(db).columns][:n]
    return [schema_from_dbc(db, Collection(signals=frozenset({name}))) for name in names]


def test_the_schema_registry_prunes_unused_schemas_oldest_first_and_never_a_used_one(tmp_path):
    staging = Staging(tmp_path / "s.sqlite")
    schemas = _small_schemas(30)
    reg = SchemaRegistry(staging, max_schemas=5)
    reg.learn(schemas[0], schemas[0].to_json())
    reg.observe([("m", "V1", schemas[0].fingerprint)])  # used by a vehicle: must stay
    for s in schemas[1:20]:
        assert reg.learn(s, s.to_json()) is True
    held = list(reg.schemas)
    assert len(held) == 5 and reg.pruned == 15
    assert held == [schemas[0].fingerprint] + [s.fingerprint for s in schemas[16:20]]  # newest unused kept
    assert {bytes(f) for f, _ in staging.schemas.all()} == set(held)  # pruned from the database too
    # bounded in bytes as well
    size = len(schemas[0].to_json())
    by_bytes = SchemaRegistry(Staging(tmp_path / "b.sqlite"), max_bytes=3 * size + size // 2)
    for s in schemas[:10]:
        by_bytes.learn(s, s.to_json())
    assert len(by_bytes.schemas) <= 3 and by_bytes.bytes <= 3 * size + size // 2 and by_bytes.pruned >= 7
    # all used: a new schema is refused rather than dropping one the lake may need
    reg.observe([("m", f"V{i}", s.fingerprint) for i, s in enumerate(schemas[16:20])])
    with pytest.raises(RegistryFull):
        reg.learn(schemas[25], schemas[25].to_json())
    assert reg.refused == 1 and len(reg.schemas) == 5
    # a restart with a smaller bound prunes what is unused (nothing here) and holds the rest
    assert len(SchemaRegistry(staging, max_schemas=2).schemas) == 5
    staging.close()


def test_a_schema_flood_is_bounded_and_a_full_registry_quarantines_with_a_reason(tmp_path, schema):
    sink = _sink(tmp_path, max_schemas=4)  # the reference DBC's schemas are pinned beyond the bound
    pinned = set(sink.schemas)
    flood = _small_schemas(40)
    sink.ingest([Incoming(f"dcm/schemas/{s.fingerprint.hex()}", s.to_json(), i + 1, 1) for i, s in enumerate(flood)])
    assert pinned <= set(sink.schemas) and len(sink.schemas) <= max(4, len(pinned) + 1)
    assert sink.registry.pruned >= 40 - 4
    # every schema held in use: the next one is quarantined as schema_registry_full, intake goes on
    sink.registry.observe([("m", f"V{i}", fp) for i, fp in enumerate(sink.schemas)])
    extra = _small_schemas(41)[-1]
    boot = uuid.uuid4().bytes
    sink.ingest([Incoming(f"dcm/schemas/{extra.fingerprint.hex()}", extra.to_json(), 90, 1),
                 Incoming("dcm/V1/telemetry", encode(_packet(schema, "V1", 0, boot, rows=5)), 91, 1)])
    assert sink.quarantine.by_reason["schema_registry_full"] == 1 and sink.stats.packets_staged == 1
    assert extra.fingerprint not in sink.schemas
    sink.staging.close()
