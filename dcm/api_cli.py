"""``dcm api``: the fleet API and dashboard, and its tokens.

``dcm api --config api.toml [--listen host:port]``      serve (refuses to start without an active token)
``dcm api --config api.toml --check-config``            validate and exit
``dcm api token create --config api.toml --scope admin [--scope fleet:north] [--ttl 90d] [--name ops]``
``dcm api token list --config api.toml [--json]``
``dcm api token revoke --config api.toml TOKEN_ID``
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    a = sub.add_parser("api", help="serve the fleet API and dashboard, or manage its tokens")
    a.add_argument("--config", type=Path, help="the API's TOML file")
    a.add_argument("--listen", help="host:port (overrides the file)")
    a.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    actions = a.add_subparsers(dest="api_action")
    token = actions.add_parser("token", help="create, list or revoke API tokens")
    kinds = token.add_subparsers(dest="token_action", required=True)
    create = kinds.add_parser("create", help="issue a token (printed once)")
    create.add_argument("--scope", action="append", default=[], required=True,
                        help="repeatable: admin, read, fleet:<name>, vehicle:<masked id>, driver:<id>")
    create.add_argument("--ttl", default="90d", help="lifetime, e.g. 90d, 12h (default 90d)")
    create.add_argument("--name", default="", help="a label")
    listing = kinds.add_parser("list", help="list tokens (never their text)")
    revoke = kinds.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token_id", help="the token's id (or the token)")
    for p in (create, listing, revoke):
        p.add_argument("--config", type=Path, required=True, help="the API's TOML file")
        p.add_argument("--json", action="store_true", help="JSON output")
    return a


def run(args: argparse.Namespace) -> int:
    """Errors of the project's tree propagate: ``dcm.cli`` prints them on one line (exit 2 or 1)."""
    from dcm_base.errors import InputError

    if args.config is None:
        raise InputError("--config is required")
    if args.api_action == "token":
        return _token(args)
    return _serve(args)


def _config(args: argparse.Namespace):
    from fleet_api.config import load_config

    return load_config(args.config, {"listen": getattr(args, "listen", None)})


def _token(args: argparse.Namespace) -> int:
    from fleet_api.tokens import TokenStore, parse_ttl

    config = _config(args)
    store = TokenStore(config.tokens_path, create=args.token_action == "create")
    try:
        if args.token_action == "create":
            record, text = store.create(args.scope, parse_ttl(args.ttl), args.name)
            if args.json:
                print(json.dumps({**record.to_json(), "token": text}))
            else:
                print(text)
                expires = dt.datetime.fromtimestamp(record.expires, dt.timezone.utc).isoformat(timespec="seconds")
                print(f"token {record.id} ({', '.join(record.scopes)}) until {expires}; shown once, stored hashed",
                      file=sys.stderr)
            return 0
        if args.token_action == "list":
            tokens = [t.to_json() for t in store.list()]
            if args.json:
                print(json.dumps(tokens))
            else:
                for t in tokens:
                    expires = dt.datetime.fromtimestamp(t["expires"], dt.timezone.utc).isoformat(timespec="seconds")
                    print(f"{t['id']}  {t['state']:<8} until {expires}  {','.join(t['scopes'])}  {t['name']}")
            return 0
        if not store.revoke(args.token_id):
            print(f"dcm api token revoke: no active token {args.token_id}", file=sys.stderr)
            return 1
        return 0
    finally:
        store.close()


def _serve(args: argparse.Namespace) -> int:
    from fleet_api.app import make_app, serve, ssl_context

    config = _config(args)
    if args.check_config:
        ssl_context(config)
        print(json.dumps({"ok": True, "listen": f"{config.host}:{config.port}", "tls": config.tls_cert is not None,
                          "lake": config.lake, "sink_state": [str(p) for p in config.sink_state],
                          "alerts": [str(p) for p in config.alerts]}))
        return 0
    app = make_app(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, lambda url: print(f"dcm api: serving {url}/", file=sys.stderr), stop)

    asyncio.run(main())
    return 0
