"""dcm.pki: the fleet CA, certificates per vehicle/service/server, CRL, and the broker files."""
from __future__ import annotations

import json
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from dcm.pki import FleetPki, PkiError

from helpers.trust_broker import PREFIX, TlsClient, make_pki, start_broker
from dcm.testing import until


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_private_and_certificates_name_the_vehicle(tmp_path):
    pki = FleetPki.create(tmp_path / "pki")
    e = pki.issue_vehicle("WVW1234567890")
    assert _mode(pki.dir / "ca.key") == 0o600 and _mode(pki.dir / e.key) == 0o600
    cert = x509.load_pem_x509_certificate((pki.dir / e.cert).read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "WVW1234567890"
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert FleetPki(pki.dir).find("WVW1234567890") == e  # index.json reopened


def test_a_name_has_one_kind_one_valid_certificate_and_is_a_topic_level(tmp_path):
    pki = FleetPki.create(tmp_path / "pki")
    pki.issue_service("sink-1")
    with pytest.raises(PkiError, match="issued as a service"):
        pki.issue_vehicle("sink-1")  # a vehicle named like a sink would get the sink's rights
    pki.issue_vehicle("V1")
    with pytest.raises(PkiError, match="revoke it first"):
        pki.issue_vehicle("V1")
    for bad in ("schemas", "events", "a/b", "a+", "#", "$SYS", "", "x" * 129):
        with pytest.raises(PkiError):
            pki.issue_vehicle(bad)
    with pytest.raises(PkiError, match="exists already"):
        FleetPki.create(pki.dir)
    with pytest.raises(PkiError, match="not a PKI directory"):
        FleetPki(tmp_path / "nowhere")


def test_revoking_lists_the_serial_in_the_crl_and_allows_a_new_certificate(tmp_path):
    pki = FleetPki.create(tmp_path / "pki")
    old = pki.issue_vehicle("V1")
    pki.revoke("V1")
    crl = x509.load_pem_x509_crl(pki.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old.serial) is not None
    new = pki.issue_vehicle("V1")
    assert new.serial != old.serial and crl.get_revoked_certificate_by_serial_number(new.serial) is None
    with pytest.raises(PkiError, match="no unrevoked"):
        pki.revoke("nobody")


def test_broker_files_follow_the_index(tmp_path):
    pki = make_pki(tmp_path / "pki", vehicles=("V1", "V2"), services=("sink-1",))
    pki.revoke("V2")
    acl, dyn = pki.write_broker_files(tmp_path / "out", PREFIX, "sinks")
    assert "pattern write dcm/%u/telemetry" in acl.read_text() and "user sink-1" in acl.read_text()
    assert _mode(dyn) == 0o600
    users = {c["username"] for c in json.loads(dyn.read_text())["clients"]}
    assert users == {"V1", "sink-1"}  # V2 revoked: gone from the plugin's list


def test_the_acl_file_alone_enforces_the_publish_and_read_patterns(tmp_path):
    """The acl_file variant (Mosquitto without plugins): per-vehicle publish and delivery hold;
    its missing SUBSCRIBE check is why deploy/ uses the dynamic-security plugin."""
    pki = make_pki(tmp_path / "pki", vehicles=("VA", "VB"), services=("sink-a",))
    broker = start_broker(pki, tmp_path / "broker", acl_file_only=True)
    sink, a = TlsClient(pki, broker.port, "sink-a"), TlsClient(pki, broker.port, "VA")
    try:
        sink.subscribe(f"{PREFIX}/#")
        a.subscribe(f"{PREFIX}/#")
        assert a.publish(f"{PREFIX}/VB/telemetry", b"forged") == "Not authorized"
        assert a.publish(f"{PREFIX}/VA/telemetry", b"own") == "Success"
        assert sink.publish(f"{PREFIX}/VB/config", b"cfg-B") == "Success"
        assert sink.publish(f"{PREFIX}/VA/config", b"cfg-A") == "Success"
        assert until(lambda: len(a.received()) >= 1 and len(sink.received()) >= 3, 5)
        assert a.received() == [(f"{PREFIX}/VA/config", b"cfg-A")]
        assert [t for t, _ in sink.received()] == [f"{PREFIX}/VA/telemetry", f"{PREFIX}/VB/config", f"{PREFIX}/VA/config"]
    finally:
        sink.close(), a.close(), broker.stop()
