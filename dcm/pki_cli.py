"""``dcm pki``: the fleet CA, certificates per vehicle and service, revocation, broker files.

    dcm pki init --dir pki                             CA (ca.key mode 0600), empty CRL
    dcm pki server broker.example.org --dir pki [--ip 10.0.0.5]   the broker's certificate
    dcm pki vehicle VIN1 VIN2 ... --dir pki            client certificates, CN = vehicle id
    dcm pki service sink-host1-0 --dir pki             client certificates for sinks, rules, API
    dcm pki revoke VIN2 --dir pki                      revoke, re-sign crl.pem
    dcm pki crl --dir pki                              re-sign crl.pem (it is valid for a year)
    dcm pki broker-files --dir pki --out /etc/mosquitto/dcm [--prefix dcm --share-group sinks]
    dcm pki list --dir pki [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("pki", help="fleet CA, per-vehicle and per-service certificates, CRL, broker ACL")
    actions = p.add_subparsers(dest="action", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help)
        a.add_argument("--dir", required=True, help="the PKI directory")
        return a

    a = action("init", "create the fleet CA")
    a.add_argument("--name", default="dcm fleet CA")
    a.add_argument("--days", type=int, default=3650)
    for kind in ("vehicle", "service"):
        a = action(kind, f"issue {kind} client certificates (CN = the name)")
        a.add_argument("names", nargs="+")
        a.add_argument("--days", type=int, default=825)
    a = action("server", "issue the broker's certificate")
    a.add_argument("name", help="host name (also in the SAN)")
    a.add_argument("--dns", action="append", default=[])
    a.add_argument("--ip", action="append", default=[])
    a.add_argument("--days", type=int, default=825)
    a = action("revoke", "revoke certificates and re-sign the CRL (then restart the broker)")
    a.add_argument("names", nargs="+")
    action("crl", "re-sign the CRL")
    a = action("broker-files", "write the broker's acl and dynamic-security.json")
    a.add_argument("--out", required=True)
    a.add_argument("--prefix", default="dcm")
    a.add_argument("--share-group", default="sinks")
    a = action("list", "list issued certificates")
    a.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from dcm.pki import FleetPki

    if args.action == "init":
        pki = FleetPki.create(args.dir, name=args.name, days=args.days)
        print(f"CA {pki.ca_file}, CRL {pki.crl_file}")
        return 0
    pki = FleetPki(args.dir)
    if args.action in ("vehicle", "service"):
        issue = pki.issue_vehicle if args.action == "vehicle" else pki.issue_service
        for name in args.names:
            e = issue(name, days=args.days)
            print(f"{e.cn}: {pki.dir / e.cert} {pki.dir / e.key}")
    elif args.action == "server":
        e = pki.issue_server(args.name, dns=args.dns, ips=args.ip, days=args.days)
        print(f"{e.cn}: {pki.dir / e.cert} {pki.dir / e.key}")
    elif args.action == "revoke":
        for name in args.names:
            e = pki.revoke(name)
            print(f"revoked {e.cn} (serial {e.serial:x}); restart the broker to load {pki.crl_file}")
    elif args.action == "crl":
        print(pki.write_crl())
    elif args.action == "broker-files":
        for path in pki.write_broker_files(args.out, args.prefix, args.share_group):
            print(path)
    elif args.action == "list":
        entries = pki.entries()
        if args.json:
            print(json.dumps([dataclasses.asdict(e) for e in entries]))
        else:
            for e in entries:
                print(f"{e.kind:8} {e.cn:32} {e.serial:x} until {e.not_after}{' REVOKED ' + e.revoked if e.revoked else ''}")
    return 0
