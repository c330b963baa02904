"""JWTs of an external OIDC issuer: verified with PyJWT against the issuer's JWKS, served here by a
real HTTP server on loopback; the JWT's scopes are the API's own, so 404 outside them as ever."""
from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fleet_api.app import make_app
from fleet_api.config import load_config
from fleet_api.oidc import OidcConfig

from helpers.api_world import VINS, build_world, call, masked, running

AUD = "dcm-api"


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def issuer():
    good = _key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(good.public_key()))
    body = json.dumps({"keys": [dict(jwk, kid="k1", use="sig", alg="RS256")]}).encode()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", good
    server.shutdown()


@pytest.fixture(scope="module")
def api(tmp_path_factory, issuer):
    url, _ = issuer
    world = build_world(tmp_path_factory.mktemp("api-oidc"))
    cfg = dataclasses.replace(load_config(world.config_path),
                              oidc=OidcConfig(url, AUD, f"{url}/.well-known/jwks.json"))
    with running(make_app(cfg, clock=lambda: world.end_t + 30), cfg) as s:
        yield s


def _jwt(issuer, scopes, key=None, **claims):
    url, good = issuer
    now = int(time.time())
    body = {"iss": url, "aud": AUD, "sub": "user-7", "iat": now, "exp": now + 600, "dcm_scopes": scopes, **claims}
    return jwt.encode(body, key or good, algorithm="RS256", headers={"kid": "k1"})


def test_a_valid_jwt_gets_its_scopes(api, issuer):
    status, body, _ = call(api.url + "/api/v1/vehicles", _jwt(issuer, ["read"]))
    assert status == 200 and {v["id"] for v in body["items"]} == {masked(v) for v in VINS}
    one = _jwt(issuer, f"vehicle:{masked(VINS[1])}")  # a space-separated string works too
    assert [v["id"] for v in call(api.url + "/api/v1/vehicles", one)[1]["items"]] == [masked(VINS[1])]
    assert call(api.url + f"/api/v1/vehicles/{masked(VINS[0])}/latest", one)[0] == 404


@pytest.mark.parametrize("bad", ["wrong_audience", "expired", "other_key", "wrong_issuer", "bad_scope", "no_scope"])
def test_a_jwt_that_does_not_verify_is_401(api, issuer, bad):
    now = int(time.time())
    token = {
        "wrong_audience": lambda: _jwt(issuer, ["read"], aud="someone-else"),
        "expired": lambda: _jwt(issuer, ["read"], iat=now - 7200, exp=now - 3600),
        "other_key": lambda: _jwt(issuer, ["read"], key=_key()),
        "wrong_issuer": lambda: _jwt(issuer, ["read"], iss="http://127.0.0.1:1"),
        "bad_scope": lambda: _jwt(issuer, ["read", "superuser"]),
        "no_scope": lambda: _jwt(issuer, []),
    }[bad]()
    assert call(api.url + "/api/v1/vehicles", token)[0] == 401
