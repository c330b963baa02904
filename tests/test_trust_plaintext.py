"""TLS is the default beyond loopback: every service refuses plaintext MQTT (and the rules worker
plaintext webhooks) to another host, with one line naming the file and key, unless plaintext is
chosen explicitly (``allow_plaintext`` in the file or ``--allow-plaintext``)."""
from __future__ import annotations

import pytest

from cloud_sink.config import load_config
from dcm.cli import main as dcm_main
from dcm_base.broker_url import BrokerUrl, plaintext_refused
from dcm_base.errors import ConfigError
from gateway.config import load as load_gateway
from speed_layer.errors import RulesConfigError
from speed_layer.service_config import load_service_config


@pytest.mark.parametrize("url, allowed, refused", [
    ("mqtt://broker.example:1883", False, True),
    ("mqtt://10.0.0.5", False, True),
    ("mqtt://broker.example:1883", True, False),
    ("mqtts://broker.example:8883", False, False),
    ("mqtt://127.0.0.1:1883", False, False),
    ("mqtt://localhost", False, False),
    ("mqtt://[::1]:1883", False, False),
])
def test_plaintext_beyond_loopback_needs_the_explicit_choice(url, allowed, refused):
    assert (plaintext_refused(BrokerUrl.parse(url), allowed) is not None) == refused


def test_the_sink_refuses_plaintext_to_another_host_unless_chosen(tmp_path):
    (tmp_path / "key.bin").write_bytes(b"0123456789abcdef")
    cfg = tmp_path / "sink.toml"
    cfg.write_text('secret_file = "key.bin"\n[mqtt]\nurl = "mqtt://broker.example:1883"\n')
    with pytest.raises(ConfigError, match=r"sink.toml: mqtt.url: plaintext MQTT to broker.example beyond loopback"):
        load_config(cfg)
    assert load_config(cfg, {"mqtt.allow_plaintext": True}).broker.host == "broker.example"
    assert load_config(cfg, {"mqtt.url": "mqtts://broker.example:8883"}).broker.tls
    assert load_config(cfg, need_secret=False, connects=False).broker.host == "broker.example"  # dcm sink gaps


def test_the_gateway_refuses_plaintext_to_another_host_unless_chosen(tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('vehicle_id = "V1"\n[mqtt]\nurl = "mqtt://broker.example"\n[outbox]\npath = "o.sqlite"\n')
    with pytest.raises(ConfigError, match=r"gateway.toml: mqtt.url: plaintext MQTT to broker.example"):
        load_gateway(cfg)
    assert load_gateway(cfg, {"mqtt.allow_plaintext": True}).broker.host == "broker.example"
    cfg.write_text('vehicle_id = "V1"\n[mqtt]\nurl = "mqtt://broker.example"\nallow_plaintext = true\n'
                   '[outbox]\npath = "o.sqlite"\n')
    assert not load_gateway(cfg).broker.tls


def test_the_rules_worker_refuses_plaintext_broker_and_webhooks_unless_chosen(tmp_path):
    cfg = tmp_path / "rules.toml"
    cfg.write_text('broker = "mqtt://broker.example"\nstate = "s.sqlite"\n')
    with pytest.raises(RulesConfigError, match=r"rules.toml: broker: plaintext MQTT to broker.example"):
        load_service_config(cfg)
    assert load_service_config(cfg, {"allow_plaintext": True}).broker.host == "broker.example"
    cfg.write_text('broker = "mqtts://broker.example"\nstate = "s.sqlite"\n'
                   '[[webhooks]]\nname = "ops"\nurl = "http://ops.example/alerts"\n')
    with pytest.raises(RulesConfigError, match=r"webhooks\[0\].url: plaintext http:// to ops.example"):
        load_service_config(cfg)
    assert load_service_config(cfg, {"allow_plaintext": True}).webhooks[0].url == "http://ops.example/alerts"
    cfg.write_text('broker = "mqtts://broker.example"\nstate = "s.sqlite"\n'
                   '[[webhooks]]\nname = "local"\nurl = "http://127.0.0.1:9000/hook"\n')
    assert load_service_config(cfg).webhooks[0].name == "local"  # loopback: plaintext is fine


def test_the_cli_says_it_in_one_line_and_the_flag_chooses_plaintext(tmp_path, capsys):
    argv = ["gateway", "--check-config", "--vehicle-id", "V1", "--broker", "mqtt://broker.example",
            "--outbox", str(tmp_path / "o.sqlite")]
    assert dcm_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mqtt.url: plaintext MQTT to broker.example" in err
    assert dcm_main([*argv, "--allow-plaintext"]) == 0


@pytest.mark.parametrize("host, loopback", [("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True),
                                            ("::1", True), ("127.example.com", False), ("10.0.0.1", False),
                                            ("localhost.example.com", False)])
def test_loopback_means_an_address_only_this_machine_reaches(host, loopback):
    from dcm_base.broker_url import is_loopback

    assert is_loopback(host) == loopback


def test_an_oidc_issuer_over_http_must_really_be_on_loopback(tmp_path):
    from fleet_api.config import _https

    assert _https("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert _https("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("http://127.0.0.1.example.com", "http://localhost.example.com/", "http://login.example"):
        with pytest.raises(ValueError, match="https://"):
            _https(bad)
