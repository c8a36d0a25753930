"""JWTs from an identity provider, verified against a JWKS served over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from service_kit.auth import Auth
from service_kit.settings import JWTSettings
from tests.service_kit.example_service import ExampleSettings, create_app

ISSUER = "https://clerk.example.test"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    body = json.dumps({"keys": [{**public_jwk, "kid": "key-1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture
def jwt_app(settings: ExampleSettings, jwks_url: str, tmp_path: Path) -> Flask:
    app = create_app(settings)
    jwt_settings = JWTSettings(
        jwks_url=jwks_url, issuer=ISSUER, audience="vibelux", role_claim="metadata.role", tier_claim="metadata.tier"
    )
    app.extensions["auth"] = Auth(app.extensions["database"], jwt_settings)
    return app


def token(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    claims = {
        "sub": "user_2abc",
        "iss": ISSUER,
        "aud": "vibelux",
        "exp": int(time.time()) + 300,
        "metadata": {"role": "agent", "tier": "enterprise"},
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "key-1"})


def test_valid_jwt_maps_claims_to_id_role_and_tier(jwt_app: Flask, signing_key: rsa.RSAPrivateKey) -> None:
    with jwt_app.test_request_context("/"):
        principal = jwt_app.extensions["auth"].authenticate(token(signing_key))
    assert (principal.id, principal.role, principal.tier, principal.kind) == ("user_2abc", "agent", "enterprise", "jwt")
    client = jwt_app.test_client()
    assert client.get("/agent-only", headers={"Authorization": f"Bearer {token(signing_key)}"}).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"exp": int(time.time()) - 3600}, 401),  # expired
        ({"aud": "someone-else"}, 401),
        ({"iss": "https://evil.example"}, 401),
        ({"metadata": {"role": "viewer"}}, 403),  # valid, but the role may not
        ({"metadata": {"role": "root"}}, 403),  # a role the platform does not know
    ],
)
def test_bad_or_insufficient_jwts_are_refused(
    jwt_app: Flask, signing_key: rsa.RSAPrivateKey, overrides: dict[str, Any], status: int
) -> None:
    client = jwt_app.test_client()
    response = client.get("/agent-only", headers={"Authorization": f"Bearer {token(signing_key, **overrides)}"})
    assert response.status_code == status


def test_jwt_signed_by_another_key_is_refused(jwt_app: Flask) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = jwt_app.test_client()
    assert client.get("/agent-only", headers={"Authorization": f"Bearer {token(other)}"}).status_code == 401
