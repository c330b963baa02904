"""VSS overlays (KUKSA dbc2vss style): parsed, validated, carried by the schema, queryable by VSS path."""
from __future__ import annotations

import json

import duckdb
import pytest

import dbc
from minute_packet import Schema, SchemaError, schema_from_dbc
from minute_packet.vss import load_overlay, parse_overlay, vss_select_sql


def test_the_reference_car_overlay_names_its_signals():
    db = dbc.load(dbc.REFERENCE_DBC)
    overlay = load_overlay(dbc.REFERENCE_VSS)
    known = {s.name for m in db.messages for s in m.signals}
    assert set(overlay) <= known and len(overlay) >= 30
    schema = schema_from_dbc(db, vss=overlay)
    by_path = {c.vss["path"]: c.name for c in schema.columns if c.vss}
    assert by_path["Vehicle.Speed"] == "VehicleSpeed"
    assert by_path["Vehicle.CurrentLocation.Latitude"] == "Latitude"
    # the overlay is part of the schema: published, parsed back, same fingerprint
    assert Schema.from_json(schema.to_json()).fingerprint == schema.fingerprint != schema_from_dbc(db).fingerprint


def test_a_tree_and_a_flat_overlay_are_the_same_mapping():
    tree = {"Vehicle": {"type": "branch", "children": {
        "Speed": {"datatype": "float", "dbc2vss": {"signal": "VehicleSpeed", "interval_ms": 100}},
        "Cabin": {"children": {"Door": {"children": {"Row1": {"children": {"DriverSide": {"children": {
            "IsOpen": {"dbc": {"signal": "DoorFL", "transform": {"mapping": [{"from": 0, "to": False},
                                                                              {"from": 2, "to": True}]}}}}}}}}}}}}}}
    flat = {"Vehicle.Speed": {"dbc2vss": {"signal": "VehicleSpeed"}},
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": {"dbc2vss": {"signal": "DoorFL", "transform": {
                "mapping": [{"from": 0, "to": False}, {"from": 2, "to": True}]}}}}
    assert parse_overlay(tree) == parse_overlay(flat)


@pytest.mark.parametrize("doc,match", [
    ({"Vehicle.Speed": {"dbc2vss": {}}}, "signal"),
    ({"Speed": {"dbc2vss": {"signal": "S"}}}, "not a VSS path"),
    ({"Vehicle.Speed": {"dbc2vss": {"signal": "S", "transform": {"math": "__import__('os')"}}}}, "uses something"),
    ({"Vehicle.Speed": {"dbc2vss": {"signal": "S", "transform": {"math": "x +"}}}}, "bad transform"),
    ({"Vehicle.Speed": {"dbc2vss": {"signal": "S", "transform": {"mapping": []}}}}, "non-empty"),
    ({"Vehicle.A": {"dbc2vss": {"signal": "S"}}, "Vehicle.B": {"dbc2vss": {"signal": "S"}}}, "already mapped"),
    ([], "JSON object"),
])
def test_bad_overlays_get_a_clear_error(doc, match):
    with pytest.raises(SchemaError, match=match):
        parse_overlay(doc)


def test_a_bad_overlay_file_names_the_file(tmp_path):
    path = tmp_path / "o.json"
    path.write_text("{nope")
    with pytest.raises(SchemaError, match=str(path)):
        load_overlay(path)


def test_a_query_by_vss_path_with_transforms(tmp_path):
    """The projection vss_select_sql makes runs in plain DuckDB over lake-like rows."""
    db = dbc.load(dbc.REFERENCE_DBC)
    schema = schema_from_dbc(db, vss=load_overlay(dbc.REFERENCE_VSS))
    con = duckdb.connect()
    con.execute('CREATE TABLE lake AS SELECT 88.5 AS "VehicleSpeed", 2 AS "DoorFL", 1 AS "DoorFR", 0 AS "DoorRL",'
                ' 3 AS "DoorRR", 412 AS "RangeRemaining", 14 AS "GearActual"')
    present = {"VehicleSpeed", "DoorFL", "DoorFR", "DoorRL", "DoorRR", "RangeRemaining", "GearActual"}
    cols = [c for c in schema.columns if c.name in present]
    row = con.execute(f"SELECT {vss_select_sql(cols)} FROM lake").fetchone()
    names = [d[0] for d in con.description]
    got = dict(zip(names, row))
    assert got["Vehicle.Speed"] == 88.5
    assert got["Vehicle.Powertrain.Range"] == 412_000  # km in the DBC, metres in VSS
    assert got["Vehicle.Powertrain.Transmission.CurrentGear"] == 126  # Park
    assert (got["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"], got["Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen"],
            got["Vehicle.Cabin.Door.Row2.DriverSide.IsOpen"]) == (True, True, False)
    assert got["Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen"] is None  # SNA: no mapping, no value


def test_the_gateway_config_refuses_an_overlay_naming_unknown_signals(tmp_path):
    from gateway.config import ConfigError, check, load

    overlay = tmp_path / "o.json"
    overlay.write_text(json.dumps({"Vehicle.Speed": {"dbc2vss": {"signal": "NoSuchSignal"}}}))
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'vehicle_id = "V1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n[outbox]\npath = "o.sqlite"\n'
                   f'[dbc]\nvss_overlay = "{overlay}"\n')
    config = load(cfg)
    with pytest.raises(ConfigError, match="vss_overlay.*NoSuchSignal"):
        check(config, str(cfg))
