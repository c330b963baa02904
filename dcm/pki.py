"""A small fleet PKI: one CA, a client certificate per vehicle and per cloud service, a CRL.

The broker (Mosquitto with ``require_certificate``, ``use_identity_as_username`` and an
``acl_file``, see ``deploy/mosquitto/``) takes a client's certificate common name (CN) as its
user name, so the CN *is* the identity the ACL checks:

* a **vehicle** certificate has CN = the vehicle id (a topic level, :func:`check_vehicle_id`);
  the ACL's ``pattern`` lines let it publish only ``<prefix>/<CN>/telemetry|events|status``
  (and schemas) and read only ``<prefix>/<CN>/config``;
* a **service** certificate (a sink worker, the rules service, the API) has the service's name
  as CN; the ACL lists each one as a ``user`` that reads everything under the prefix;
* a **server** certificate is the broker's own (DNS names / IP addresses in its SAN).

A CN is issued to one kind only, ever (a vehicle called like a sink would get the sink's rights),
and is refused while it has a valid certificate. Revoking adds the serial to ``crl.pem``;
Mosquitto reads its ``crlfile`` at start, so restart (or reload) the broker after revoking.

Files under the PKI directory (keys mode 0600, written before anything points to them)::

    ca.key ca.crt crl.pem index.json
    vehicles/<name>.crt vehicles/<name>.key   services/...   servers/...
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dcm_base.errors import InputError
from minute_packet.topics import TopicError, check_prefix, check_vehicle_id

KINDS = ("vehicle", "service", "server")
FOLDERS = {"vehicle": "vehicles", "service": "services", "server": "servers"}
CRL_DAYS = 365  # an expired CRL makes Mosquitto refuse every client: re-sign with `dcm pki crl`


class PkiError(InputError):
    """The PKI directory is missing or inconsistent, or a name cannot be issued or revoked."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One issued certificate, as ``index.json`` remembers it."""

    cn: str
    kind: str
    serial: int
    not_after: str
    cert: str  # path relative to the PKI directory
    key: str
    revoked: str | None = None

    @property
    def valid(self) -> bool:
        return self.revoked is None and dt.datetime.fromisoformat(self.not_after) > _now()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _file_name(cn: str) -> str:
    """A file name for any CN: percent-quoted, never ``.``-led, never longer than 200 bytes."""
    name = quote(cn, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > 200:
        name = name[:150] + "-" + hashlib.sha256(cn.encode()).hexdigest()[:16]
    return name


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (mode 0600 from its creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask and ignored for an existing file
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class FleetPki:
    """A PKI directory made by :meth:`create`; every method keeps ``index.json`` and the CRL in step."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        try:
            self._ca_cert = x509.load_pem_x509_certificate((self.dir / "ca.crt").read_bytes())
            self._ca_key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
            index = json.loads((self.dir / "index.json").read_text())
        except FileNotFoundError as exc:
            raise PkiError(f"{self.dir}: not a PKI directory (run `dcm pki init`): {exc.filename} missing") from exc
        except (ValueError, OSError) as exc:
            raise PkiError(f"{self.dir}: unreadable PKI files: {exc}") from exc
        self._entries = [Entry(**e) for e in index["entries"]]

    # -- creation ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | Path, *, name: str = "dcm fleet CA", days: int = 3650) -> FleetPki:
        """Make a new CA (EC P-256) with an empty CRL; refuses a directory that already has one."""
        d = Path(directory)
        if (d / "ca.key").exists():
            raise PkiError(f"{d}: a CA exists already")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        write_private(d / "ca.key", _key_pem(key))
        _write_public(d / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write_public(d / "index.json", json.dumps({"entries": []}).encode())
        pki = cls(d)
        pki.write_crl()
        return pki

    # -- issuing ----------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def crl_file(self) -> Path:
        return self.dir / "crl.pem"

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def find(self, cn: str) -> Entry | None:
        """The newest certificate issued to ``cn``."""
        found = [e for e in self._entries if e.cn == cn]
        return found[-1] if found else None

    def issue_vehicle(self, vehicle_id: str, *, days: int = 825) -> Entry:
        try:
            check_vehicle_id(vehicle_id)
        except TopicError as exc:
            raise PkiError(f"cannot issue a vehicle certificate: {exc}") from exc
        return self._issue(vehicle_id, "vehicle", days)

    def issue_service(self, name: str, *, days: int = 825) -> Entry:
        try:
            check_vehicle_id(name)  # one topic level too: it becomes a client id and a user name
        except TopicError as exc:
            raise PkiError(f"cannot issue a service certificate: {exc}") from exc
        return self._issue(name, "service", days)

    def issue_server(self, name: str, *, dns: list[str] = (), ips: list[str] = (), days: int = 825) -> Entry:
        """The broker's certificate; ``name`` and ``dns`` go into its SAN, as do ``ips``."""
        try:
            addresses = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise PkiError(f"bad IP address for the server certificate: {exc}") from exc
        sans = [x509.DNSName(n) for n in dict.fromkeys([name, *dns])] + [x509.IPAddress(a) for a in addresses]
        return self._issue(name, "server", days, sans)

    def _issue(self, cn: str, kind: str, days: int, sans: list[x509.GeneralName] | None = None) -> Entry:
        if days < 1:
            raise PkiError("a certificate must be valid for at least 1 day")
        for e in self._entries:
            if e.cn == cn and e.kind != kind:
                raise PkiError(f"{cn!r} was issued as a {e.kind}; a name has one kind for good")
            if e.cn == cn and e.valid:
                raise PkiError(f"{cn!r} has a valid certificate (serial {e.serial:x}); revoke it first")
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                                            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind)]))
                   .issuer_name(self._ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        stem = f"{FOLDERS[kind]}/{_file_name(cn)}"
        write_private(self.dir / f"{stem}.key", _key_pem(key))
        _write_public(self.dir / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
        entry = Entry(cn, kind, cert.serial_number, cert.not_valid_after_utc.isoformat(), f"{stem}.crt", f"{stem}.key")
        self._entries.append(entry)
        self._save()
        return entry

    # -- revocation -------------------------------------------------------------------------------

    def revoke(self, cn: str) -> Entry:
        """Revoke every unrevoked certificate of ``cn`` and re-sign the CRL; returns the newest."""
        hits = [i for i, e in enumerate(self._entries) if e.cn == cn and e.revoked is None]
        if not hits:
            raise PkiError(f"no unrevoked certificate for {cn!r}")
        stamp = _now().isoformat()
        for i in hits:
            self._entries[i] = dataclasses.replace(self._entries[i], revoked=stamp)
        self._save()
        self.write_crl()
        return self._entries[hits[-1]]

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """(Re-)sign ``crl.pem`` listing every revoked serial, valid for ``days``."""
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self._ca_cert.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days)))
        for e in self._entries:
            if e.revoked:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(e.serial)
                    .revocation_date(dt.datetime.fromisoformat(e.revoked)).build())
        crl = builder.sign(self._ca_key, hashes.SHA256())
        _write_public(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_file

    def _save(self) -> None:
        _write_public(self.dir / "index.json",
                      json.dumps({"entries": [dataclasses.asdict(e) for e in self._entries]}, indent=1).encode())

    # -- broker ACL -------------------------------------------------------------------------------

    def services(self) -> list[str]:
        """CNs of service certificates that are not revoked (sorted, each once)."""
        return sorted({e.cn for e in self._entries if e.kind == "service" and e.revoked is None})

    def vehicles(self) -> list[str]:
        """CNs of vehicle certificates that are not revoked (sorted, each once)."""
        return sorted({e.cn for e in self._entries if e.kind == "vehicle" and e.revoked is None})

    def acl(self, prefix: str = "dcm") -> str:
        return render_acl(prefix, self.services())

    def dynsec(self, prefix: str = "dcm", share_group: str = "sinks") -> str:
        return render_dynsec(prefix, share_group, self.vehicles(), self.services())

    def write_broker_files(self, out_dir: str | Path, prefix: str = "dcm", share_group: str = "sinks") -> list[Path]:
        """Write ``acl`` and ``dynamic-security.json`` for the broker (re-run after every issue or
        revoke, install them, restart the broker); returns their paths."""
        out = Path(out_dir)
        acl, dyn = out / "acl", out / "dynamic-security.json"
        _write_public(acl, self.acl(prefix).encode())
        write_private(dyn, self.dynsec(prefix, share_group).encode())  # Mosquitto rewrites it; keep it private
        return [acl, dyn]


def vehicle_topics(prefix: str, vehicle: str) -> dict[str, list[str]]:
    """What a vehicle may do, by MQTT action: publish its telemetry, events, status and schemas;
    subscribe to and receive its config."""
    return {"publish": [f"{prefix}/{vehicle}/telemetry", f"{prefix}/{vehicle}/events",
                        f"{prefix}/{vehicle}/status", f"{prefix}/schemas/+"],
            "read": [f"{prefix}/{vehicle}/config"]}


def render_acl(prefix: str, services: list[str]) -> str:
    """A Mosquitto ``acl_file`` for one topic prefix.

    ``%u`` is the user name, which ``use_identity_as_username`` sets to the certificate's CN. The
    ``pattern`` lines apply to every client: a vehicle writes only its own telemetry, events and
    status (and schemas, whose content the sink checks against the fingerprint) and reads only its
    own config. Each service CN gets a ``user`` block: it reads everything under the prefix and
    writes the schema events, alerts and vehicle configs.

    Mosquitto 2.0's ``acl_file`` checks publishing and delivery but not SUBSCRIBE: a vehicle could
    join the sinks' shared subscription and, being refused delivery, swallow its round-robin share.
    :func:`render_dynsec` closes that; the ACL file stays as the readable policy and the fallback."""
    check_prefix(prefix)
    for name in services:
        check_vehicle_id(name)
    own = vehicle_topics(prefix, "%u")
    lines = ["# Generated by `dcm pki broker-files`. %u = the client certificate's CN (use_identity_as_username).",
             "# Vehicles: their own topics only. (Mosquitto warns that the schemas line has no %u: expected.)"]
    lines += [f"pattern write {t}" for t in own["publish"]] + [f"pattern read {t}" for t in own["read"]]
    lines += ["", "# Services (sink workers, rules, API): read everything, the sinks through their share group."]
    for name in services:
        lines += [f"user {name}", f"topic read {prefix}/#", f"topic write {prefix}/events/schema",
                  f"topic write {prefix}/+/alerts", f"topic write {prefix}/+/config", ""]
    return "\n".join(lines) + "\n"


def render_dynsec(prefix: str, share_group: str, vehicles: list[str], services: list[str]) -> str:
    """The Mosquitto dynamic-security plugin's JSON: the same policy as :func:`render_acl`, plus
    subscription checks. Mosquitto 2.0's plugin does not expand ``%u``, so each vehicle gets its
    own role with literal topics; anything not granted is denied (``defaultACLAccess``)."""
    check_prefix(prefix)
    for name in [*vehicles, *services, share_group]:
        check_vehicle_id(name)

    def acl(kind: str, topic: str) -> dict:
        return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}

    roles = [{"rolename": "dcm-service", "acls": [
        acl("subscribePattern", f"{prefix}/#"), acl("subscribePattern", f"$share/{share_group}/{prefix}/#"),
        acl("publishClientReceive", f"{prefix}/#"), acl("publishClientSend", f"{prefix}/events/schema"),
        acl("publishClientSend", f"{prefix}/+/alerts"), acl("publishClientSend", f"{prefix}/+/config")]}]
    clients = [{"username": s, "roles": [{"rolename": "dcm-service"}]} for s in services]
    for v in vehicles:
        own = vehicle_topics(prefix, v)
        roles.append({"rolename": f"vehicle:{v}", "acls": [acl("publishClientSend", t) for t in own["publish"]]
                      + [acl("subscribeLiteral", t) for t in own["read"]]
                      + [acl("publishClientReceive", t) for t in own["read"]]})
        clients.append({"username": v, "roles": [{"rolename": f"vehicle:{v}"}]})
    return json.dumps({"defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                                            "subscribe": False, "unsubscribe": True},
                       "clients": clients, "groups": [], "roles": roles}, indent=1) + "\n"
