"""Staff passwords: argon2id at OWASP's parameters, old hashes upgraded at login, unknown users verified too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import argon2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tickets_app.models import StaffUser
from tickets_app.passwords import hash_password

# Made by the desk before issue 12 (stdlib scrypt, N=2**14) for the password "correct horse battery staple".
OLD_SCRYPT_HASH = "scrypt$16384$8$1$vKvqWzIjDfz88oRBRSzPrQ==$ZaXnkwzWkQSI+amfcG4b4nOYDwS7F1H8r2+mMVEIeQ8="
OLD_PASSWORD = "correct horse battery staple"


def add_staff(app: Flask, password_hash: str) -> None:
    with app.extensions["database"].new_session() as session:
        session.add(StaffUser(id="ann", name="Ann Agent", role="agent", password_hash=password_hash))
        session.commit()


def stored_hash(app: Flask) -> str:
    with app.extensions["database"].new_session() as session:
        user = session.get(StaffUser, "ann")
        assert user is not None
        return user.password_hash


def log_in(client: FlaskClient, username: str, password: str) -> int:
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    return response.status_code


def test_new_hashes_are_argon2id_with_owasp_parameters() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hash_password("s3cret") != hashed  # salted


def test_an_old_scrypt_hash_logs_in_and_is_rehashed_to_argon2id(app: Flask, client: FlaskClient) -> None:
    add_staff(app, OLD_SCRYPT_HASH)
    assert log_in(client, "ann", "wrong") == 401
    assert stored_hash(app) == OLD_SCRYPT_HASH  # a failed login changes nothing
    assert log_in(client, "ann", OLD_PASSWORD) == 302
    upgraded = stored_hash(app)
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    argon2.PasswordHasher().verify(upgraded, OLD_PASSWORD)
    assert log_in(app.test_client(), "ann", OLD_PASSWORD) == 302


def test_a_hash_with_weaker_argon2_parameters_is_rehashed_at_login(app: Flask, client: FlaskClient) -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
    add_staff(app, weak)
    assert log_in(client, "ann", "pw") == 302
    assert stored_hash(app) != weak
    assert stored_hash(app).startswith("$argon2id$v=19$m=19456,t=2,p=1$")


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 verified, recorded around the real verify (which still runs)."""
    seen: list[str] = []
    real: Callable[..., Any] = argon2.PasswordHasher.verify

    def recording(self: argon2.PasswordHasher, hashed: str | bytes, password: str | bytes) -> bool:
        seen.append(hashed if isinstance(hashed, str) else hashed.decode())
        return bool(real(self, hashed, password))

    monkeypatch.setattr(argon2.PasswordHasher, "verify", recording)
    return seen


def test_an_unknown_username_costs_one_argon2_verification_like_a_known_one(
    app: Flask, client: FlaskClient, verifications: list[str]
) -> None:
    """Without it the login answers unknown users at once, and its response time tells who exists."""
    add_staff(app, hash_password("pw"))
    assert log_in(client, "nobody", "pw") == 401
    assert len(verifications) == 1
    assert log_in(client, "ann", "wrong") == 401
    assert len(verifications) == 2
    assert verifications[0] != verifications[1]  # the unknown user's is a dummy hash, not someone's
    assert all(hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for hashed in verifications)
