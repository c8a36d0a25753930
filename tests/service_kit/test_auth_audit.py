from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient

from service_kit.auth import ApiToken, AuditRecord

REPO = Path(__file__).resolve().parents[2]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_stored_only_as_sha256(app: Flask, make_token) -> None:  # type: ignore[no-untyped-def]
    plain = make_token("admin")
    engine = app.extensions["database"].engine
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT * FROM api_tokens")).mappings().all()
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in str(dict(rows[0]))


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        (None, "/agent-only", 401),
        ("viewer", "/agent-only", 403),
        ("agent", "/agent-only", 200),
        ("admin", "/agent-only", 200),
        ("agent", "/api/v1/audit", 403),
        ("admin", "/api/v1/audit", 200),
    ],
)
def test_roles_are_enforced(client: FlaskClient, make_token, role, path, status) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(make_token(role)) if role else {}
    assert client.get(path, headers=headers).status_code == status


def test_x_api_key_header_is_accepted(client: FlaskClient, make_token) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/agent-only", headers={"X-API-Key": make_token("agent")}).status_code == 200


def test_unknown_and_revoked_tokens_are_refused(app: Flask, client: FlaskClient, make_token) -> None:  # type: ignore[no-untyped-def]
    plain = make_token("agent")
    assert client.get("/agent-only", headers=bearer(plain)).status_code == 200
    with app.extensions["database"].new_session() as session:
        session.scalars(sqlalchemy.select(ApiToken)).one().revoked_at = sqlalchemy.func.now()
        session.commit()
    response = client.get("/agent-only", headers=bearer(plain))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "authentication_required"
    assert client.get("/agent-only", headers=bearer("vbx_not-a-real-token")).status_code == 401


def test_admin_action_leaves_an_audit_record(client: FlaskClient, make_token) -> None:  # type: ignore[no-untyped-def]
    token = make_token("admin", name="ops-admin")
    response = client.post("/admin/greeting", json={"text": "hi"}, headers={**bearer(token), "X-Request-ID": "r-42"})
    assert response.status_code == 200
    entries = client.get("/api/v1/audit", headers=bearer(token)).get_json()["data"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["action"] == "greeting.update"
    assert entry["actor_role"] == "admin"
    assert entry["actor"].startswith("token:")
    assert entry["before"] == {"text": "hello"} and entry["after"] == {"text": "hi"}
    assert entry["request_id"] == "r-42"
    assert entry["at"].endswith("Z")


def test_audit_log_refuses_updates_and_deletes(app: Flask, client: FlaskClient, make_token) -> None:  # type: ignore[no-untyped-def]
    token = make_token("admin")
    client.post("/admin/greeting", json={"text": "x"}, headers=bearer(token))
    engine = app.extensions["database"].engine
    for statement in ("UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log"):
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(sqlalchemy.text(statement))
    with app.extensions["database"].new_session() as session:
        record = session.scalars(sqlalchemy.select(AuditRecord)).one()
        record.actor = "tampered"
        with pytest.raises(RuntimeError, match="append-only"):
            session.flush()


@pytest.mark.slow
def test_cli_creates_lists_and_revokes_tokens_with_audit(tmp_path: Path) -> None:
    env = {**os.environ, "EXAMPLE_DATABASE__URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.service_kit.example_service", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = cli("tokens", "create", "--name", "deploy-bot", "--role", "service")
    assert created.returncode == 0, created.stderr
    plain = created.stdout.strip()
    assert plain.startswith("vbx_")
    listed = cli("tokens", "list").stdout
    assert "deploy-bot" in listed and "active" in listed and plain not in listed
    assert cli("tokens", "revoke", "1").returncode == 0
    assert "revoked" in cli("tokens", "list").stdout
    bad = cli("tokens", "create", "--name", "x", "--role", "superuser")
    assert bad.returncode == 2 and "role" in bad.stderr
    engine = sqlalchemy.create_engine(env["EXAMPLE_DATABASE__URL"])
    with engine.connect() as connection:
        actions = connection.execute(sqlalchemy.text("SELECT action FROM audit_log ORDER BY id")).scalars().all()
    assert actions == ["token.create", "token.revoke"]


def test_tokens_api_creates_lists_and_revokes_with_an_audit_record_each(client: FlaskClient, make_token: Any) -> None:
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    created = client.post(
        "/api/v1/tokens", json={"name": "ci", "role": "service", "tier": "professional"}, headers=admin
    )
    assert created.status_code == 201
    plain = created.get_json()["token"]
    assert plain.startswith("vbx_") and created.get_json()["tier"] == "professional"
    assert client.get("/agent-only", headers={"Authorization": f"Bearer {plain}"}).status_code == 403  # a service
    listed = client.get("/api/v1/tokens", headers=admin).get_json()["data"]
    assert [t["name"] for t in listed] == ["test", "ci"] and all("token" not in t for t in listed)
    revoked = client.delete(f"/api/v1/tokens/{created.get_json()['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"] is not None
    assert client.get("/agent-only", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    actions = [r["action"] for r in client.get("/api/v1/audit", headers=admin).get_json()["data"]]
    assert actions[:2] == ["token.revoke", "token.create"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "x", "role": "service", "tier": "pro"}, "tier"),
        ({"name": " ", "role": "service"}, "name"),
    ],
)
def test_tokens_api_refuses_unknown_roles_and_tiers_storing_nothing(
    client: FlaskClient, make_token: Any, body: dict[str, str], field: str
) -> None:
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    response = client.post("/api/v1/tokens", json=body, headers=admin)
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]
    assert len(client.get("/api/v1/tokens", headers=admin).get_json()["data"]) == 1  # the admin's own


def test_tokens_api_needs_an_admin(client: FlaskClient, make_token: Any) -> None:
    agent = {"Authorization": f"Bearer {make_token('agent')}"}
    assert client.get("/api/v1/tokens", headers=agent).status_code == 403
    assert client.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 401


def test_an_admin_cannot_revoke_the_token_they_are_using(client: FlaskClient, make_token: Any) -> None:
    plain = make_token("admin")
    admin = {"Authorization": f"Bearer {plain}"}
    (own,) = client.get("/api/v1/tokens", headers=admin).get_json()["data"]
    assert client.delete(f"/api/v1/tokens/{own['id']}", headers=admin).status_code == 409
    assert client.get("/api/v1/tokens", headers=admin).status_code == 200
