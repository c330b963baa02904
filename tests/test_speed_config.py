"""The rules TOML loader: built-ins with defaults, overrides, and errors naming file and key."""
from __future__ import annotations

import pytest

import dbc
from minute_packet import schema_from_dbc
from speed_layer.catalog import BUILTINS
from speed_layer.config import load_rules
from speed_layer.errors import RulesConfigError


def test_no_file_gives_every_builtin_that_needs_no_fence_and_all_bind_to_the_reference_car():
    cfg = load_rules()
    names = {r.name for r in cfg.rules}
    assert names == set(BUILTINS) - {"geofence"}
    columns = {c.name for c in schema_from_dbc(dbc.load(dbc.REFERENCE_DBC)).columns}
    assert {r.name: r.missing(columns) for r in cfg.rules} == {r.name: [] for r in cfg.rules}


def test_a_full_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('''
builtins = false
hold_s = 10
[signals]
lights = "HeadlightSwitch"
[geofences.depot]
circle = { lat = 48.1, lon = 11.5, radius_m = 500 }
speed_limit_kmh = 30
[geofences.yard]
wkt = "POLYGON ((11 48, 11.01 48, 11.01 48.01, 11 48.01, 11 48))"
[geofences.road]
geojson = '{"type": "LineString", "coordinates": [[11, 48], [11.1, 48.1]]}'
[rules.headlights_left_on]
minutes = 5
[rules.speeding]
limit_kmh = 130
vehicles = { VIN1 = 100 }
[rules.fences]
type = "geofence"
fences = ["depot", "yard"]
[rules.coolant_hot]
type = "condition"
condition = "EngineCoolantTemp > 110 for 60 s"
peak = "EngineCoolantTemp"
''')
    cfg = load_rules(path)
    rules = {r.name: r for r in cfg.rules}
    assert set(rules) == {"headlights_left_on", "speeding", "fences", "coolant_hot"}
    assert cfg.hold_s == 10 and [f.name for f in cfg.fences] == ["depot", "yard", "road"]
    assert rules["headlights_left_on"].columns["lights"] == "HeadlightSwitch"
    assert "for 300 s" in rules["headlights_left_on"].condition
    assert rules["speeding"].vehicle_limits == {"VIN1": 100} and [f.name for f in rules["speeding"].fences] == ["depot"]
    assert [f.name for f in rules["fences"].fences] == ["depot", "yard"]
    assert rules["coolant_hot"].required == ("EngineCoolantTemp",)
    assert rules["coolant_hot"].missing({"CoolantTemp"}) == ["EngineCoolantTemp"]


@pytest.mark.parametrize("body, message", [
    ("[rules.speeding]\nlimit_kmh = -1", "rules.speeding.limit_kmh: must be a positive number, got -1"),
    ("[rules.speeding]\nlimt_kmh = 1", "rules.speeding.limt_kmh: unknown parameter"),
    ("[rules.x]\ntype = 'nope'", "rules.x.type: unknown rule type 'nope'"),
    ("[rules.x]\ntype = 'condition'\ncondition = 'a > '", "rules.x.condition: expected a signal"),
    ("[rules.x]\ntype = 'condition'", "rules.x.condition: a condition rule needs a condition"),
    ("[rules.g]\ntype = 'geofence'\nfences = ['nowhere']", "rules.g.fences: no geofence named 'nowhere'"),
    ("[geofences.a]\nwkt = 'POLYGON ((0 0, 1 1'", "geofences.a.wkt: not a valid geometry"),
    ("[geofences.a]\ncircle = {lat = 1, lon = 2, radius_m = 0}", "geofences.a.circle: not a valid geometry"),
    ("[geofences.a]\nwkt = 'POINT (1 2)'", "a fence is a polygon or a line"),
    ("[geofences.a]\nwkt = 'POLYGON ((100 100, 101 100, 101 101, 100 100))'", "coordinates are lon, lat"),
    ("[rules.crash]\nenabled = 'no'", "rules.crash.enabled: must be true or false"),
    ("colour = 1", "colour: unknown key"),
    ("hold_s = -1", "hold_s: must be an integer"),
    ("[rules", "not valid TOML"),
])
def test_errors_name_file_and_key(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(RulesConfigError) as err:
        load_rules(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_disabled_builtin_is_left_out():
    cfg = load_rules(text="[rules.harsh_cornering]\nenabled = false")
    assert "harsh_cornering" not in {r.name for r in cfg.rules} and "crash" in {r.name for r in cfg.rules}
