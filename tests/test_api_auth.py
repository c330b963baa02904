"""Fleet API authentication and authorisation: hashed expiring tokens with scopes, 401 without one,
404 outside the scope (the same answer as an unknown id), per-token rate limits, refusing to start
without a token or a secret, and ``dcm api token create|list|revoke``."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import pytest

from dcm.cli import main as dcm_main
from fleet_api.app import make_app
from fleet_api.config import RateLimit, load_config
from fleet_api.errors import ApiConfigError, TokenError
from fleet_api.ratelimit import RateLimiter
from fleet_api.tokens import TokenStore
from helpers.api_world import VINS, build_world, call, masked, running


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("api-auth"))


@pytest.fixture(scope="module")
def tokens(world):
    cfg = load_config(world.config_path)
    store = TokenStore(cfg.tokens_path)
    made = {name: store.create(scopes, 3600, name)[1] for name, scopes in {
        "admin": ["admin"], "read": ["read"], "north": ["fleet:north"], "vin3": [f"vehicle:{masked(VINS[2])}"],
        "d3": ["driver:D3"], "revoke_me": ["read"], "north_vins": ["fleet:north", "vin"]}.items()}
    made["expired"] = store.create(["admin"], 60, "old", now=time.time() - 3600)[1]
    store.close()
    return made


@pytest.fixture(scope="module")
def server(world, tokens):
    cfg = load_config(world.config_path)
    with running(make_app(cfg, clock=lambda: world.end_t + 30), cfg) as s:
        yield s


def test_tokens_are_stored_hashed_and_verified(world, tokens):
    cfg = load_config(world.config_path)
    raw = cfg.tokens_path.read_bytes() + (cfg.tokens_path.with_name(cfg.tokens_path.name + "-wal").read_bytes()
                                          if cfg.tokens_path.with_name(cfg.tokens_path.name + "-wal").exists() else b"")
    for text in tokens.values():
        assert text.encode() not in raw
    store = TokenStore(cfg.tokens_path)
    row = store.db.execute("SELECT digest FROM tokens WHERE id = ?", (tokens["admin"].split("_")[1],)).fetchone()
    assert row[0] == hashlib.sha256(tokens["admin"].encode()).digest()
    assert store.verify(tokens["admin"]).scopes == ("admin",)
    assert store.verify(tokens["admin"][:-1] + ("A" if tokens["admin"][-1] != "A" else "B")) is None
    assert store.verify(tokens["expired"]) is None
    with pytest.raises(TokenError, match="scope 'fleet'"):
        store.create(["fleet"], 60)
    with pytest.raises(TokenError, match="at most 400 days"):
        store.create(["admin"], 401 * 86400)
    store.close()


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic dcm_00000000_x", "Bearer " + "dcm_" + "0" * 8 + "_" + "A" * 43])
def test_no_or_bad_token_is_401(server, header):
    status, body, hdrs = call(server.url + "/api/v1/vehicles", headers={"Authorization": header} if header else {})
    assert status == 401 and body["error"] == "unauthorized" and hdrs["WWW-Authenticate"] == "Bearer"


def test_expired_and_revoked_tokens_are_refused(world, server, tokens):
    assert call(server.url + "/api/v1/vehicles", tokens["expired"])[0] == 401
    assert call(server.url + "/api/v1/vehicles", tokens["revoke_me"])[0] == 200
    assert dcm_main(["api", "token", "revoke", "--config", str(world.config_path), tokens["revoke_me"].split("_")[1]]) == 0
    assert call(server.url + "/api/v1/vehicles", tokens["revoke_me"])[0] == 401


def test_the_page_and_the_openapi_document_need_no_token(server):
    assert call(server.url + "/")[0] == 200
    assert call(server.url + "/api/v1/openapi.json")[1]["openapi"].startswith("3.")


def _ids(server, token, path="/api/v1/vehicles"):
    status, body, _ = call(server.url + path, token)
    assert status == 200, body
    return body["items"]


def test_a_fleet_token_sees_its_fleet_only_and_others_are_404(server, tokens):
    north = {v["id"] for v in _ids(server, tokens["north"])}
    assert north == {masked(VINS[0]), masked(VINS[1])}
    south = masked(VINS[2])
    unknown = "0123456789abcdef"
    out_of_scope = call(server.url + f"/api/v1/vehicles/{south}/latest", tokens["north"])
    never = call(server.url + f"/api/v1/vehicles/{unknown}/latest", tokens["north"])
    assert out_of_scope[0] == never[0] == 404
    assert out_of_scope[1]["error"] == never[1]["error"] == "not_found"
    assert call(server.url + f"/api/v1/vehicles/{south}/latest", tokens["admin"])[0] == 200
    assert call(server.url + f"/api/v1/vehicles/{south}/series?signals=VehicleSpeed", tokens["north"])[0] == 404
    alerts = _ids(server, tokens["north"], "/api/v1/alerts?limit=1000")
    assert alerts and {a["vehicle"] for a in alerts} <= north
    assert _ids(server, tokens["north"], f"/api/v1/alerts?vehicle={south}") == []
    trips = _ids(server, tokens["north"], "/api/v1/trips")
    assert trips and {t["vehicle"] for t in trips} <= north
    south_trip = next(t for t in _ids(server, tokens["admin"], "/api/v1/trips") if t["vehicle"] == south)
    assert call(server.url + f"/api/v1/trips/{south_trip['trip_id']}", tokens["north"])[0] == 404
    scores = call(server.url + "/api/v1/scores?period=month", tokens["north"])[1]["items"]
    assert {s["driver"] for s in scores} == {"D1", "D2"}
    yearly = call(server.url + "/api/v1/views/yearly", tokens["north"])[1]
    assert {r["vehicle"] for r in yearly["km_per_vehicle_year"]} <= north
    assert yearly["ytd"]["trips"] == len(trips)


def test_vehicle_and_driver_tokens(server, tokens):
    assert [v["id"] for v in _ids(server, tokens["vin3"])] == [masked(VINS[2])]
    assert call(server.url + f"/api/v1/vehicles/{masked(VINS[0])}/latest", tokens["vin3"])[0] == 404
    d3_trips = _ids(server, tokens["d3"], "/api/v1/trips")
    assert d3_trips and {t["driver"] for t in d3_trips} == {"D3"}
    assert {s["driver"] for s in call(server.url + "/api/v1/scores", tokens["d3"])[1]["items"]} == {"D3"}
    assert [v["id"] for v in _ids(server, tokens["d3"])] == [masked(VINS[2])]  # the vehicle assigned to D3


def test_raw_vins_only_for_admin_and_vin_scopes_and_only_of_visible_vehicles(server, tokens):
    def vins(token):
        return {v["id"]: v["vin"] for v in _ids(server, token)}
    assert vins(tokens["admin"]) == {masked(v): v for v in VINS}
    assert set(vins(tokens["read"]).values()) == {None}  # read sees every vehicle, no VIN
    assert vins(tokens["north_vins"]) == {masked(VINS[0]): VINS[0], masked(VINS[1]): VINS[1]}
    assert call(server.url + f"/api/v1/vehicles/{masked(VINS[0])}/latest", tokens["north_vins"])[1]["vin"] == VINS[0]
    assert call(server.url + f"/api/v1/vehicles/{masked(VINS[0])}/latest", tokens["north"])[1]["vin"] is None
    assert call(server.url + f"/api/v1/vehicles/{masked(VINS[2])}/latest", tokens["north_vins"])[0] == 404


def test_only_admin_changes_geofences(server, tokens):
    body = {"circle": {"lat": 48.1, "lon": 11.5, "radius_m": 300}}
    status, resp, _ = call(server.url + "/api/v1/geofences/depot", tokens["read"], "PUT", body)
    assert status == 403 and resp["error"] == "forbidden"
    assert call(server.url + "/api/v1/geofences/depot", tokens["admin"], "PUT", body)[0] == 200
    assert call(server.url + "/api/v1/geofences/depot", tokens["north"], "DELETE")[0] == 403
    assert call(server.url + "/api/v1/geofences/depot", tokens["admin"], "DELETE")[0] == 200


def test_rate_limit_per_token_answers_429_and_counts(world, tokens):
    cfg = dataclasses.replace(load_config(world.config_path), rate_limit=RateLimit(per_s=0.01, burst=3, max_tokens=10))
    with running(make_app(cfg, clock=lambda: world.end_t + 30), cfg) as s:
        got = [call(s.url + "/api/v1/rules", tokens["admin"])[0] for _ in range(4)]
        status, body, hdrs = call(s.url + "/api/v1/rules", tokens["admin"])
        assert got == [200, 200, 200, 429] and status == 429 and int(hdrs["Retry-After"]) >= 1
        assert call(s.url + "/api/v1/rules", tokens["read"])[0] == 200  # another token has its own bucket
        health = call(s.url + "/health")[1]
        assert health["counters"]["rate_limited"] == 2 and health["counters"]["http_429"] == 2


def test_the_rate_limit_table_is_bounded():
    now = [0.0]
    rl = RateLimiter(per_s=1, burst=1, max_keys=2, clock=lambda: now[0])
    assert rl.take("a") == 0 and rl.take("a") > 0
    rl.take("b")
    rl.take("c")  # evicts a, the least recently used
    assert len(rl) == 2 and rl.evicted == 1 and rl.limited == 1
    assert rl.take("a") == 0  # a starts with a full bucket again
    now[0] += 1.0
    assert rl.take("c") == 0


def test_refuses_to_start_without_an_active_token_or_the_secret(tmp_path, world, capsys):
    cfg = load_config(world.config_path)
    empty = dataclasses.replace(cfg, tokens_path=tmp_path / "none.sqlite")
    with pytest.raises(ApiConfigError, match="no token database"):
        make_app(empty)
    TokenStore(tmp_path / "none.sqlite").close()
    with pytest.raises(ApiConfigError, match="no active token"):
        make_app(empty)
    text = world.config_path.read_text().replace('secret_file = "key.bin"\n', "")
    (world.root / "nosecret.toml").write_text(text)
    assert dcm_main(["api", "--config", str(world.root / "nosecret.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "secret_file: required" in err[0]
    (world.root / "missing.toml").write_text(text.replace("tokens = ", 'secret_file = "nope.bin"\ntokens = '))
    assert dcm_main(["api", "--config", str(world.root / "missing.toml")]) == 2
    assert "secret_file: cannot read" in capsys.readouterr().err


def test_token_cli_create_list_revoke(tmp_path, capsys):
    (tmp_path / "api.toml").write_text('tokens = "t.sqlite"\n')
    cfg = str(tmp_path / "api.toml")
    assert dcm_main(["api", "token", "create", "--config", cfg, "--scope", "fleet:north", "--ttl", "2h",
                     "--name", "ops"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("dcm_") and TokenStore(tmp_path / "t.sqlite").verify(text).scopes == ("fleet:north",)
    assert dcm_main(["api", "token", "list", "--config", cfg, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["name"], t["state"], t["scopes"]) for t in listed] == [("ops", "active", ["fleet:north"])]
    assert 7190 < listed[0]["expires"] - listed[0]["created"] <= 7200 and text not in json.dumps(listed)
    assert dcm_main(["api", "token", "revoke", "--config", cfg, listed[0]["id"]]) == 0
    assert dcm_main(["api", "token", "revoke", "--config", cfg, listed[0]["id"]]) == 1
    assert dcm_main(["api", "token", "create", "--config", cfg, "--scope", "root"]) == 2
    assert "scope 'root'" in capsys.readouterr().err
