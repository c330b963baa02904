"""/api/v1/openapi.json describes exactly the app's routes (paths and methods), with valid structure."""
from __future__ import annotations

import re

from fleet_api.app import make_app
from fleet_api.config import load_config
from fleet_api.openapi import spec
from fleet_api.tokens import TokenStore


def test_openapi_paths_and_methods_are_the_routes(tmp_path):
    (tmp_path / "api.toml").write_text('tokens = "t.sqlite"\n')
    cfg = load_config(tmp_path / "api.toml")
    store = TokenStore(cfg.tokens_path)
    store.create(["admin"], 60)
    store.close()
    app = make_app(cfg)
    routes = set()
    for r in app.router.routes():
        path = r.resource.canonical if r.resource is not None else ""
        if path.startswith("/api/v1") and r.method != "HEAD":
            routes.add((path, r.method.lower()))
    doc = spec()
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for op in ops.values():
            assert op["summary"] and "200" in op["responses"]
            assert {p["name"] for p in op.get("parameters", []) if p["in"] == "path"} == names
