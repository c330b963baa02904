"""The conformance vectors of docs/conformance/ against the project's codec, its sink conversion
and a real sink writing Parquet read back by plain DuckDB; every schema the project emits against
the JSON Schema of docs/."""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import duckdb
import jsonschema
import pytest
import rfc8785

import dbc
from cloud_sink.config import SinkConfig
from cloud_sink.intake import Incoming
from cloud_sink.service import Sink
from cloud_sink.table import TableBuilder
from dcm.broker import BrokerUrl
from minute_packet import Collection, PacketDecodeError, Schema, Topics, decode, schema_from_dbc
from minute_packet.codec import validate
from minute_packet.masking import mask_vehicle
from minute_packet.vss import load_overlay

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "docs" / "conformance"
INDEX = json.loads((VECTORS / "index.json").read_text())
JSON_SCHEMA = json.loads((ROOT / "docs" / "schema-v2.schema.json").read_text())
sys.path.insert(0, str(Path(__file__).parent))
import make_conformance  # noqa: E402  (the pure-Python reference decoder written from the spec)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_json((VECTORS / INDEX["schema"]).read_bytes())


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b) if not isinstance(a, (int, float)) else a == b and (
        isinstance(a, float) == isinstance(b, float))


def _expected(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def test_the_schema_file_its_canonical_form_and_fingerprint(schema):
    doc = json.loads((VECTORS / INDEX["schema"]).read_bytes())
    jsonschema.validate(doc, JSON_SCHEMA)
    canonical = (VECTORS / INDEX["canonical"]).read_bytes()
    # the rule a stranger implements: numbers read as IEEE-754 doubles (I-JSON), "source" dropped,
    # RFC 8785 canonical form, SHA-256, first 8 bytes
    doubles = json.loads((VECTORS / INDEX["schema"]).read_bytes(), parse_int=float)
    assert rfc8785.dumps({k: v for k, v in doubles.items() if k != "source"}) == canonical == schema.canonical()
    assert hashlib.sha256(canonical).digest()[:8].hex() == INDEX["fingerprint"] == schema.fingerprint.hex()
    # and it is what the conformance DBC gives today
    assert make_conformance.conformance_schema().fingerprint == schema.fingerprint


@pytest.mark.parametrize("case", INDEX["packets"], ids=lambda c: c["packet"])
def test_the_codec_gives_the_expected_rows(case, schema):
    wire = (VECTORS / case["packet"]).read_bytes()
    expected = _expected(case["expected"])
    p = decode(wire)
    h = expected["header"]
    assert (p.vehicle_id, p.model, p.boot_id.hex(), p.seq, p.start_time, p.rows, p.fingerprint.hex(), p.clock,
            p.clock_synced, p.clock_correction_ms) == (h["vid"], h["model"], h["boot"], h["seq"], h["t0"], h["n"],
                                                       h["fp"], h["clk"], h["sync"], h["corr"])
    for c, col in enumerate(schema.columns):
        physical = col.physical(p.values[c]).tolist()
        for i, row in enumerate(expected["rows"]):
            want = row[col.name]
            got = physical[i] if p.present[c, i] else None
            assert _same(got, want), (col.name, i, got, want)
    # the reference decoder of make_conformance (plain Python from the spec) agrees with the file
    assert make_conformance.ref_rows(wire, json.loads(schema.to_json())) == expected["rows"]


@pytest.mark.parametrize("case", INDEX["packets"], ids=lambda c: c["packet"])
def test_the_sink_conversion_gives_the_expected_lake_rows(case, schema):
    wire = (VECTORS / case["packet"]).read_bytes()
    expected = [r for r in _expected(case["expected"])["rows"]
                if any(r[c.name] is not None for c in schema.columns)]  # rows without a value are not stored
    built = TableBuilder(schema).build([validate(wire)], ["m"], vehicle_column=False)
    rows = built.table.to_pylist()
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        assert int(got["ts"].timestamp()) == want["ts"]
        assert got["out_of_range"] == want["out_of_range"]
        for col in schema.columns:
            assert _same(got[col.name], want[col.name]), (col.name, got[col.name], want[col.name])


def test_a_real_sink_stores_the_vectors_and_plain_duckdb_reads_them_exactly(tmp_path, schema):
    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=tmp_path / "lake",
                           state_path=tmp_path / "s.sqlite", quarantine_dir=tmp_path / "q",
                           vehicle_secret=b"conformance-key", roll_interval_s=1, topic_prefix="fleet/eu"))
    topics = Topics("fleet/eu")  # a prefix of two levels
    wires = [(VECTORS / c["packet"]).read_bytes() for c in INDEX["packets"]]
    msgs = [Incoming(topics.schema(schema.fingerprint), schema.to_json(), 0, 1)]
    msgs += [Incoming(topics.telemetry("CONF0001"), w, i + 1, 1) for i, w in enumerate(wires)]
    sink.ingest(msgs)
    assert sink.flush() == len(wires)
    con = duckdb.connect()
    rel = f"read_parquet('{tmp_path}/lake/**/*.parquet', hive_partitioning = true)"
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {rel})").fetchall())
    assert types["VinPart"] == "UBIGINT" and types["Big"] == "BIGINT" and types["Speed"] == "DOUBLE"
    assert "Body.seq" in types and types["seq"] == "BIGINT"  # the DBC's own 'seq' does not replace the lake's
    got = {ts: v for ts, v in con.execute(f"SELECT epoch(ts)::BIGINT, VinPart FROM {rel} WHERE VinPart IS NOT NULL")
           .fetchall()}
    want = {r["ts"]: r["VinPart"] for c in INDEX["packets"] for r in _expected(c["expected"])["rows"]
            if r["VinPart"] is not None}
    assert got == want and max(want.values()) == 2**64 - 1
    assert con.execute(f"SELECT DISTINCT vehicle FROM {rel}").fetchall() == [(mask_vehicle(b"conformance-key",
                                                                                             "CONF0001"),)]


@pytest.mark.parametrize("case", INDEX["malformed"], ids=lambda c: c["packet"])
def test_malformed_packets_get_their_reason(case):
    with pytest.raises(PacketDecodeError) as err:
        decode((VECTORS / case["packet"]).read_bytes())
    assert err.value.reason == case["reason"], case["what"]


def test_a_version_1_packet_under_its_version_1_schema_still_decodes():
    v1 = INDEX["v1"]
    schema = Schema.from_json((VECTORS / v1["schema"]).read_bytes())
    assert schema.version == 1 and schema.fingerprint.hex() == v1["fingerprint"]
    p = decode((VECTORS / v1["packet"]).read_bytes())
    assert p.fingerprint == schema.fingerprint
    vin = [c for c in schema.columns if c.name == "VinPart"][0]
    assert vin.physical(p.values[schema.columns.index(vin)]).tolist() == [2**64 - 1]


def _emitted_schemas() -> list[tuple[str, Schema]]:
    out = []
    ref = dbc.load(dbc.REFERENCE_DBC)
    out.append(("reference", schema_from_dbc(ref)))
    out.append(("reference+vss", schema_from_dbc(ref, vss=load_overlay(dbc.REFERENCE_VSS))))
    out.append(("reference+aggregates", schema_from_dbc(ref, Collection(default=("last", "min", "max", "mean")))))
    for path in sorted((ROOT / "dbc").glob("*.dbc")) + sorted((ROOT / "tests" / "data").glob("*.dbc")):
        out.append((path.name, schema_from_dbc(dbc.load(path))))
    out.append(("conformance", make_conformance.conformance_schema()))
    return out


@pytest.mark.parametrize("name,schema", _emitted_schemas(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_schema_the_project_emits_follows_the_json_schema(name, schema):
    doc = json.loads(schema.to_json())
    jsonschema.validate(doc, JSON_SCHEMA)
    assert Schema.from_json(schema.to_json()).fingerprint == schema.fingerprint
