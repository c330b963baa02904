"""No insecure defaults: the sink has no built-in masking key, ``dcm sink init`` makes the secrets
mode 0600, the staging database is created 0600, and an HTTP API beyond loopback needs its token."""
from __future__ import annotations

import json
import os
import stat

import pytest

from cloud_sink.config import SinkConfig, load_config
from cloud_sink.service import Sink
from cloud_sink.staging import Staging
from dcm.broker import BrokerUrl
from dcm.cli import main as dcm_main
from dcm.demo import demo_secret
from dcm_base.errors import ConfigError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_sink_without_a_masking_key_refuses_to_start_with_one_line_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "sink.toml"
    cfg.write_text(f'state = "s.sqlite"\n[lake]\nroot = "{(tmp_path / "lake").as_posix()}"\n')
    with pytest.raises(ConfigError, match=r"sink\.toml: secret_file: required: the vehicle-id masking key"):
        load_config(cfg)
    for extra in ([], ["--check-config"]):
        assert dcm_main(["sink", "--config", str(cfg), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{cfg}: secret_file: required" in err[0] and "dcm sink init" in err[0]
    assert not (tmp_path / "s.sqlite").exists()  # refused before anything was created
    # the library refuses too: a config built without the key does not make a sink
    bare = SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=tmp_path / "lake", state_path=tmp_path / "s.sqlite",
                      quarantine_dir=tmp_path / "q", vehicle_secret=None)
    with pytest.raises(ConfigError, match="secret_file: required"):
        Sink(bare)
    # commands that never mask a vehicle id do not need it
    assert dcm_main(["sink", "gaps", "--config", str(cfg), "--state", str(tmp_path / "nope.sqlite")]) == 2
    assert "no such staging database" in capsys.readouterr().err


def test_sink_init_makes_private_secrets_and_a_config_that_checks_out(tmp_path, capsys):
    old = os.umask(0o022)  # a usual umask: the files must be private anyway
    try:
        cfg = tmp_path / "etc" / "sink.toml"
        assert dcm_main(["sink", "init", "--config", str(cfg), "--broker", "mqtts://broker.example:8883",
                         "--lake", str(tmp_path / "lake"), "--json"]) == 0
    finally:
        os.umask(old)
    made = json.loads(capsys.readouterr().out)
    for key in ("config", "secret_file", "http_token_file"):
        assert _mode(made[key]) == 0o600, key
    key = (tmp_path / "etc" / "sink-mask.key").read_bytes().strip()
    token = (tmp_path / "etc" / "sink-http.token").read_bytes().strip()
    assert len(key) == 64 and len(token) == 48 and key != token
    config = load_config(cfg)
    assert config.vehicle_secret == key and config.http_token == token and config.broker.tls
    assert dcm_main(["sink", "--config", str(cfg), "--check-config"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    # a second init overwrites nothing: a lost masking key would split every vehicle's history
    assert dcm_main(["sink", "init", "--config", str(cfg)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "etc" / "sink-mask.key").read_bytes().strip() == key
    (tmp_path / "other").mkdir()
    assert dcm_main(["sink", "init", "--config", str(tmp_path / "other" / "s.toml"), "--broker", "http://x"]) == 2
    assert list((tmp_path / "other").iterdir()) == []  # a bad broker URL writes nothing


def test_the_staging_database_and_its_wal_are_created_private(tmp_path):
    old = os.umask(0o022)
    try:
        staging = Staging(tmp_path / "state" / "s.sqlite")
        staging.db.tx(lambda c: c.execute("INSERT INTO latest_state VALUES ('v', 1, '{}')"))
        for name in ("s.sqlite", "s.sqlite-wal", "s.sqlite-shm"):
            assert _mode(tmp_path / "state" / name) == 0o600, name
        staging.close()
    finally:
        os.umask(old)


def test_an_http_api_beyond_loopback_needs_a_token(tmp_path):
    (tmp_path / "k").write_text("0123456789abcdef")
    cfg = tmp_path / "sink.toml"
    cfg.write_text('secret_file = "k"\nhttp = "0.0.0.0:9108"\n')
    with pytest.raises(ConfigError, match=r"http_token_file: required when http listens beyond loopback"):
        load_config(cfg)
    assert load_config(cfg, {"http": "127.0.0.1:9108"}).http_host == "127.0.0.1"
    (tmp_path / "t").write_text("t" * 20)
    assert load_config(cfg, {"http_token_file": tmp_path / "t"}).http_token == b"t" * 20


def test_the_demo_key_is_random_private_and_kept_per_work_folder(tmp_path):
    a, b = demo_secret(tmp_path / "a"), demo_secret(tmp_path / "b")
    assert a != b and len(a) == 64 and demo_secret(tmp_path / "a") == a
    assert _mode(tmp_path / "a" / "sink" / "mask.key") == 0o600
