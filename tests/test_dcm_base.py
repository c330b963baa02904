"""The shared plumbing: backoff delays, broker URLs, rate-limited logging."""
from __future__ import annotations

import logging

import pytest

from dcm_base.backoff import Backoff
from dcm_base.broker_url import BrokerUrl
from dcm_base.logutil import RateLimitedLog


def test_backoff_doubles_up_to_the_maximum_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_full_jitter_draws_below_the_current_delay():
    drawn = []
    b = Backoff(1.0, 4.0, jitter=True, uniform=lambda lo, hi: drawn.append((lo, hi)) or hi / 2)
    assert [b.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert drawn == [(0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 4.0)]


def test_backoff_rejects_a_bad_range():
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_broker_url_defaults_and_credentials():
    assert BrokerUrl.parse("mqtts://u:p%40ss@h") == BrokerUrl("h", 8883, True, "u", "p@ss")
    assert str(BrokerUrl.parse("mqtt://h:1884")) == "mqtt://h:1884"


def test_rate_limited_log_reports_the_suppressed_count(caplog):
    rl = RateLimitedLog(logging.getLogger("t"), "frames", interval=3600)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            rl.warning("bad frame")
    assert [r.getMessage() for r in caplog.records] == ["bad frame"]


def test_the_config_loader_rules(tmp_path):
    from pathlib import Path

    from dcm_base import config as cfg
    from dcm_base.config import Key
    from dcm_base.errors import ConfigError

    keys = {"a.path": Key("path", cfg.path, path=True), "a.root": Key("root", cfg.path_or_uri, path=True),
            "n": Key("n", cfg.positive(int)), "m": Key("m", cfg.number(int, low=0, high=9))}
    f = tmp_path / "etc" / "x.toml"
    f.parent.mkdir()
    f.write_text('n = 3\n[a]\npath = "p.bin"\nroot = "s3://b/lake"\n')
    assert cfg.load_fields(f, keys, {"m": 4}) == {"path": f.parent / "p.bin", "root": "s3://b/lake", "n": 3, "m": 4}
    assert cfg.load_fields(f, keys, {"a.path": "q.bin"})["path"] == Path("q.bin")  # a flag: as given
    for text, message in (("old = 1\n", "old: unknown key (renamed n)"), ("n = 0\n", "n: must be a positive number"),
                          ("m = 12\n", "m: must be from 0 to 9"), ("n = [\n", "not valid TOML")):
        f.write_text(text)
        with pytest.raises(ConfigError) as err:
            cfg.load_fields(f, keys, renamed={"old": "n"}, required=("n",))
        assert str(err.value).startswith(f"{f}: ") and message in str(err.value)
    f.write_text("m = 1\n")
    with pytest.raises(ConfigError, match=r"x.toml: n: required"):
        cfg.load_fields(f, keys, required=("n",))
