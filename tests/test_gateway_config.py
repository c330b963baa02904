"""Gateway configuration: TOML loading, validation errors naming file and key, CLI exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dbc
from gateway.config import ConfigError, check, load

GOOD = f"""
vehicle_id = "VIN0001"
model = "reference-car"
[can]
interface = "virtual"
channel = "cfgtest"
bitrate = 500000
[dbc]
path = "{dbc.REFERENCE_DBC}"
[collect]
default = ["last"]
[collect.aggregates]
VehicleSpeed = ["last", "min", "max", "mean"]
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "outbox.sqlite"
max_mb = 64
"""


def test_a_good_config_loads_frozen_and_validated(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(GOOD)
    cfg = load(path)
    assert (cfg.vehicle_id, cfg.interface, cfg.bitrate, cfg.outbox_max_bytes) == ("VIN0001", "virtual", 500000, 64 << 20)
    assert cfg.collection.for_signal("VEHICLE_SPEED", "VehicleSpeed") == ("last", "min", "max", "mean")
    with pytest.raises(Exception):
        cfg.vehicle_id = "x"  # frozen
    summary = check(cfg, str(path))
    assert summary["columns"] == 218 + 3


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(GOOD)
    cfg = load(path, {"can.channel": "can1", "vehicle_id": "OTHER", "mqtt.url": None})
    assert (cfg.channel, cfg.vehicle_id, cfg.broker.port) == ("can1", "OTHER", 1883)


@pytest.mark.parametrize("edit,key", [
    (("bitrate = 500000", "bitrate = -5"), "can.bitrate"),
    (('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'), "mqtt.url"),
    (('vehicle_id = "VIN0001"', 'vehicle_id = "a/b"'), "vehicle_id"),
    (('vehicle_id = "VIN0001"', 'vehicle_idd = "x"'), "vehicle_idd"),
    (('path = "outbox.sqlite"', ""), "outbox.path"),
    (('default = ["last"]', 'default = ["median"]'), "collect"),
    (("max_mb = 64", "max_mb = true"), "outbox.max_mb"),
])
def test_bad_values_name_file_and_key(tmp_path, edit, key):
    path = tmp_path / "gw.toml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: {key}")


def test_unknown_signal_and_missing_dbc_are_caught_by_check(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(GOOD.replace("VehicleSpeed =", "NoSuchSignal ="))
    with pytest.raises(ConfigError, match="collect: signal 'NoSuchSignal'"):
        check(load(path), str(path))
    path.write_text(GOOD.replace(str(dbc.REFERENCE_DBC), str(tmp_path / "none.dbc")))
    with pytest.raises(ConfigError, match="dbc.path"):
        check(load(path), str(path))


def _dcm(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dcm.cli", "gateway", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_cli_malformed_config_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(GOOD.replace("bitrate = 500000", 'bitrate = "fast"'))
    out = _dcm("--config", str(path), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"dcm gateway: {path}: can.bitrate: must be a positive number"]
    path.write_text("vehicle_id = [unclosed")
    out = _dcm("--config", str(path), "--check-config", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"dcm gateway: {path}: not valid TOML")


def test_cli_check_config_validates_without_running(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(GOOD)
    out = _dcm("--config", str(path), "--check-config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] is True and summary["vehicle_id"] == "VIN0001" and len(summary["fingerprint"]) == 16
    assert not (tmp_path / "outbox.sqlite").exists()  # nothing ran


def test_relative_paths_are_relative_to_the_config_file_as_for_the_sink(tmp_path, monkeypatch):
    """One path rule for every service: a relative path in the file is relative to its folder,
    whatever the working directory; a flag is taken as given."""
    from cloud_sink.config import load_config

    (tmp_path / "etc").mkdir()
    gw = tmp_path / "etc" / "gw.toml"
    gw.write_text(GOOD.replace(f'path = "{dbc.REFERENCE_DBC}"', 'path = "car.dbc"'))
    sink = tmp_path / "etc" / "sink.toml"
    sink.write_text('secret_file = "mask.key"\nstate = "st/s.sqlite"\n[lake]\nroot = "lake"\n')
    (tmp_path / "etc" / "mask.key").write_text("0123456789abcdef")
    monkeypatch.chdir(tmp_path)
    cfg = load(gw)
    assert (cfg.outbox_path, cfg.dbc_path) == (tmp_path / "etc" / "outbox.sqlite", tmp_path / "etc" / "car.dbc")
    assert load(gw, {"outbox.path": "here.sqlite"}).outbox_path == Path("here.sqlite")
    sc = load_config(sink)
    assert (sc.state_path, sc.lake_root) == (tmp_path / "etc" / "st" / "s.sqlite", tmp_path / "etc" / "lake")


def test_both_services_word_errors_alike(tmp_path):
    from cloud_sink.config import load_config

    gw, sink = tmp_path / "gw.toml", tmp_path / "sink.toml"
    gw.write_text(GOOD + "\n[extra]\nthing = 1\n")
    sink.write_text("[extra]\nthing = 1\n")
    for loader, path in ((load, gw), (load_config, sink)):
        with pytest.raises(ConfigError) as err:
            loader(path)
        assert str(err.value) == f"{path}: extra.thing: unknown key"
