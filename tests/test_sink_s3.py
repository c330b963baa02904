"""The lake on an S3-compatible object store: the sink writes through ``pyarrow.fs`` to a real
HTTP S3 endpoint on loopback (moto's server, started by this module), with no local rename or
fsync. Files land under the Hive layout, a batch interrupted after its upload is redone over
its own objects, compaction merges objects, and every row is there once."""
from __future__ import annotations

import json

import uuid

import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

import dbc
from cloud_sink.compact import compact_lake
from cloud_sink.config import SinkConfig
from cloud_sink.intake import Incoming
from cloud_sink.lake import Lake, mask_vehicle
from cloud_sink.service import Sink
from dcm.broker import BrokerUrl
from minute_packet import MinutePacket, encode, schema_from_dbc

T0 = 1_767_225_600
SECRET = b"s3-test-secret"
BUCKET = "dcm-lake"


@pytest.fixture(scope="module")
def s3_endpoint():
    server_mod = pytest.importorskip("moto.server", reason="moto[s3] (test extra) provides the S3 endpoint")
    mp = pytest.MonkeyPatch()
    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
        mp.setenv(key, value)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir(BUCKET)
        yield endpoint
    finally:
        server.stop()
        mp.undo()


@pytest.fixture(scope="module")
def schema():
    return schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))


def _root(endpoint: str, name: str) -> str:
    return f"s3://{BUCKET}/{name}?endpoint_override={endpoint}&scheme=http"


def _packet(schema, vehicle, seq, boot):
    rng = np.random.default_rng(seq)
    n = len(schema.columns)
    return MinutePacket(vehicle_id=vehicle, model="ref", boot_id=boot, seq=seq, start_time=T0 + 60 * seq,
                        fingerprint=schema.fingerprint, values=rng.integers(0, 50, (n, 20), dtype=np.uint64),
                        present=np.ones((n, 20), dtype=bool))


def _sink(tmp_path, endpoint, name, **kw) -> Sink:
    return Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=_root(endpoint, name),
                           state_path=tmp_path / "state.sqlite", quarantine_dir=tmp_path / "q",
                           vehicle_secret=SECRET, **kw))


def _feed(sink, schema, packets):
    sink.ingest([Incoming(f"dcm/schemas/{schema.fingerprint.hex()}", schema.to_json(), 0, 1)]
                + [Incoming(f"dcm/{p.vehicle_id}/telemetry", encode(p), i, 1) for i, p in enumerate(packets)])


def _rows(lake: Lake) -> list[tuple]:
    """(vehicle, seq, rows) read back with plain pyarrow over the object store."""
    data = ds.dataset(lake.base, filesystem=lake.fs, format="parquet", partitioning="hive").to_table(
        columns=["vehicle", "seq", "ts"]).to_pydict()
    counts: dict[tuple, int] = {}
    for v, s in zip(data["vehicle"], data["seq"]):
        counts[(v, s)] = counts.get((v, s), 0) + 1
    return sorted((v, s, n) for (v, s), n in counts.items())


@pytest.mark.parametrize("layout", ["vehicle", "bucket"])
def test_batches_redo_and_compaction_on_an_object_store(tmp_path, s3_endpoint, schema, layout):
    name = f"lake-{layout}-{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    sink = _sink(tmp_path, s3_endpoint, name, layout=layout, buckets=2)
    assert not sink.lake.local
    _feed(sink, schema, [_packet(schema, v, 0, boot) for v in ("CAR1", "CAR2")])
    assert sink.flush() == 2
    # a batch whose objects were uploaded but which was never marked done (a crash): redone
    _feed(sink, schema, [_packet(schema, v, 1, boot) for v in ("CAR1", "CAR2")])
    batch, redo, staged = sink.staging.queue.assign_batch(list(sink.schemas), 100)
    sink.writer.write_batch(batch, redo, staged)
    sink.staging.close()
    sink = _sink(tmp_path, s3_endpoint, name, layout=layout, buckets=2)
    assert sink.flush() == 2 and sink.staging.queue.pending() == 0
    masked = {v: mask_vehicle(SECRET, v) for v in ("CAR1", "CAR2")}
    expected = sorted((masked[v], s, 20) for v in masked for s in (0, 1))
    lake = sink.lake
    objects = [i.path for i in lake.fs.get_file_info(pafs.FileSelector(lake.base, recursive=True))
               if i.type == pafs.FileType.File and i.base_name != "_dcm_lake.json"]
    assert json.loads(lake.read_bytes("_dcm_lake.json")) == {"format": 1, "layout": layout,
                                                             "buckets": 2 if layout == "bucket" else None}
    assert all("CAR" not in o for o in objects)  # raw ids never reach the store
    assert all(o.startswith(f"{BUCKET}/{name}/model=ref/date=2026-01-01/") for o in objects)
    assert len(objects) == (4 if layout == "vehicle" else len({lake.part_key(m) for m in masked.values()}) * 2)
    if layout == "vehicle":  # the vehicle is the partition, not a column
        data = ds.dataset(lake.base, filesystem=lake.fs, format="parquet", partitioning="hive").to_table()
        assert sorted(set(data.column("vehicle").to_pylist())) == sorted(masked.values())
    assert _rows(lake) == expected
    report = compact_lake(lake, min_age_s=0)
    assert report["merged_files"] == len(objects) and report["duplicate_rows"] == 0
    assert _rows(lake) == expected
    parquet = [i.base_name for i in lake.fs.get_file_info(pafs.FileSelector(lake.base, recursive=True))
               if i.base_name.endswith(".parquet")]
    assert parquet and all(n.startswith("compact-") for n in parquet)
    sink.staging.close()
