"""Admin REST API through the Flask app with a real SQLite file and Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient

from tests.flags.conftest import BOOLEAN_FLAG

H = dict[str, str]


def test_create_returns_the_flag_with_its_version_as_etag(client: FlaskClient, admin: H) -> None:
    response = client.post("/api/v1/flags", json={"key": "new-checkout", **BOOLEAN_FLAG}, headers=admin)
    assert response.status_code == 201
    assert response.headers["ETag"] == '"1"'
    assert response.json["version"] == 1
    assert response.json["environments"]["production"]["enabled"] is False
    assert client.post("/api/v1/flags", json={"key": "new-checkout", **BOOLEAN_FLAG}, headers=admin).status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "Bad Key", **BOOLEAN_FLAG}, "key"),
        ({"key": "f", "variants": {"on": "yes", "off": False}, "offVariant": "off"}, "variants.on"),
        (
            {"key": "f", **BOOLEAN_FLAG, "environments": {"production": {"enabled": 1}}},
            "environments.production.enabled",
        ),
        ([1, 2], "body"),
    ],
)
def test_invalid_flag_is_422_naming_the_field(client: FlaskClient, admin: H, body: object, field: str) -> None:
    response = client.post("/api/v1/flags", json=body, headers=admin)
    assert response.status_code == 422
    assert field in response.json["error"]["details"]
    assert client.get("/api/v1/flags", headers=admin).json["data"] == []


def test_roles_viewer_reads_admin_writes(client: FlaskClient, admin: H, viewer: H, make_token: Callable) -> None:
    client.post("/api/v1/flags", json={"key": "f", **BOOLEAN_FLAG}, headers=admin)
    assert client.get("/api/v1/flags/f", headers=viewer).status_code == 200
    assert client.post("/api/v1/flags/f/environments/production/toggle", json={}, headers=viewer).status_code == 403
    agent = {"Authorization": f"Bearer {make_token('agent')}"}
    assert client.get("/api/v1/flags", headers=agent).status_code == 403
    assert client.get("/api/v1/flags").status_code == 401


def test_stale_if_match_is_412_and_a_fresh_one_succeeds(client: FlaskClient, admin: H, create_flag: Callable) -> None:
    flag = create_flag("f")
    client.post("/api/v1/flags/f/environments/staging/toggle", json={}, headers=admin)
    flag["description"] = "edited from a stale copy"
    stale = client.put("/api/v1/flags/f", json=flag, headers={**admin, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json["error"]["details"] == {"current_version": 2}
    fresh = client.put(
        "/api/v1/flags/f", json=client.get("/api/v1/flags/f", headers=admin).json, headers={**admin, "If-Match": '"2"'}
    )
    assert fresh.status_code == 200
    assert fresh.headers["ETag"] == '"3"'
    assert client.put("/api/v1/flags/f", json=flag, headers={**admin, "If-Match": "x"}).status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_writers_one_wins_others_get_412_nothing_lost(app: Flask, admin: H, create_flag: Callable) -> None:
    create_flag("contended")
    writers = 6
    barrier = threading.Barrier(writers)
    statuses: dict[int, int] = {}

    def write(index: int) -> None:
        client = app.test_client()
        document = client.get("/api/v1/flags/contended", headers=admin).json
        document["description"] = f"writer {index}"
        barrier.wait()
        response = client.put("/api/v1/flags/contended", json=document, headers={**admin, "If-Match": '"1"'})
        statuses[index] = response.status_code

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, status in statuses.items() if status == 200]
    assert len(winners) == 1, statuses
    assert sorted(statuses.values()) == [200] + [412] * (writers - 1)
    final = app.test_client().get("/api/v1/flags/contended", headers=admin).json
    assert final["version"] == 2
    assert final["description"] == f"writer {winners[0]}"


def test_toggle_rollout_history_and_rollback(client: FlaskClient, admin: H, create_flag: Callable) -> None:
    create_flag("new-search")
    on = client.post("/api/v1/flags/new-search/environments/production/toggle", json={"enabled": True}, headers=admin)
    assert on.json["environments"]["production"]["enabled"] is True
    rollout = client.put(
        "/api/v1/flags/new-search/environments/production/rollout", json={"percentage": 25}, headers=admin
    )
    assert rollout.json["environments"]["production"]["fallthrough"] == {
        "rollout": [{"variant": "on", "weight": 2500}, {"variant": "off", "weight": 7500}]
    }
    bad = client.put(
        "/api/v1/flags/new-search/environments/production/rollout", json={"percentage": 120}, headers=admin
    )
    assert bad.status_code == 422
    assert "percentage" in bad.json["error"]["details"]
    history = client.get("/api/v1/flags/new-search/history", headers=admin).json["data"]
    assert [entry["action"] for entry in history] == ["rollout", "toggle", "create"]
    assert history[1]["changes"] == [{"path": "environments.production.enabled", "before": False, "after": True}]
    back = client.post("/api/v1/flags/new-search/rollback", json={"version": 1}, headers=admin)
    assert back.json["version"] == 4
    assert back.json["environments"]["production"]["enabled"] is False


def test_prerequisite_cycle_refused_over_the_api(client: FlaskClient, admin: H, create_flag: Callable) -> None:
    create_flag("a")
    create_flag("b", environments={"production": {"prerequisites": [{"flag": "a", "variant": "on"}]}})
    a = client.get("/api/v1/flags/a", headers=admin).json
    a["environments"]["production"]["prerequisites"] = [{"flag": "b", "variant": "on"}]
    response = client.put("/api/v1/flags/a", json=a, headers=admin)
    assert response.status_code == 422
    assert response.json["error"]["details"] == {
        "environments.production.prerequisites": "prerequisite cycle: a -> b -> a"
    }
    assert client.delete("/api/v1/flags/a", headers=admin).status_code == 409


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_every_admin_write_is_audited(app: Flask, client: FlaskClient, admin: H, create_flag: Callable) -> None:
    create_flag("audited")
    client.post("/api/v1/flags/audited/environments/production/toggle", json={}, headers=admin)
    client.put("/api/v1/flags/audited/environments/staging/rollout", json={"percentage": 10}, headers=admin)
    client.post("/api/v1/flags/audited/rollback", json={"version": 1}, headers=admin)
    client.post("/api/v1/environments/production/segments", json={"key": "beta", "included": ["u1"]}, headers=admin)
    client.put("/api/v1/environments/production/segments/beta", json={"included": ["u2"]}, headers=admin)
    client.delete("/api/v1/environments/production/segments/beta", headers=admin)
    key = client.post("/api/v1/sdk-keys", json={"environment": "staging", "kind": "server", "name": "x"}, headers=admin)
    client.delete(f"/api/v1/sdk-keys/{key.json['id']}", headers=admin)
    client.delete("/api/v1/flags/audited", headers=admin)
    with app.extensions["database"].engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT action, actor, before, after FROM audit_log ORDER BY id")
        ).all()
    assert [row.action for row in rows] == [
        "flag.create", "flag.toggle", "flag.rollout", "flag.rollback",
        "segment.create", "segment.update", "segment.delete",
        "sdk_key.create", "sdk_key.revoke", "flag.delete",
    ]  # fmt: skip
    assert {row.actor for row in rows} == {"admin@example.com"}
    assert key.json["token"] not in str(rows)
    audit = client.get("/api/v1/audit?action=flag.toggle", headers=admin).json["data"]
    assert audit[0]["before"]["environments"]["production"]["enabled"] is False
    assert audit[0]["after"]["environments"]["production"]["enabled"] is True


def test_stale_flags_api_lists_expired_flags(client: FlaskClient, viewer: H, create_flag: Callable) -> None:
    create_flag("old", expiresAt="2021-01-01T00:00:00Z", kind="ops")
    create_flag("current", kind="ops")
    response = client.get("/api/v1/stale-flags?environment=production", headers=viewer)
    assert response.status_code == 200
    assert [(f["key"], f["reason"]) for f in response.json["data"]] == [("old", "expired")]
    assert client.get("/api/v1/stale-flags?environment=qa", headers=viewer).status_code == 422


def test_a_pattern_re2_cannot_compile_is_422_naming_the_value(client: FlaskClient, admin: H) -> None:
    """Lookbehind is Python ``re`` syntax RE2 refuses: saving it must fail, not break every evaluation."""
    clauses = [
        {"attribute": "email", "op": "endsWith", "values": ["@vibelux.io"]},
        {"attribute": "email", "op": "matches", "values": ["(?<=qa)\\+test"]},
    ]
    rules = [{"clauses": clauses, "serve": {"variant": "on"}}]
    body = {"key": "staff", **BOOLEAN_FLAG, "environments": {"production": {"rules": rules}}}
    response = client.post("/api/v1/flags", json=body, headers=admin)
    assert response.status_code == 422
    assert list(response.json["error"]["details"]) == ["environments.production.rules[0].clauses[1].values[0]"]
    assert "RE2" in response.json["error"]["details"]["environments.production.rules[0].clauses[1].values[0]"]


def test_a_nested_quantifier_the_old_guard_refused_is_saved_now_that_re2_runs_it_in_linear_time(
    client: FlaskClient, admin: H, create_flag: Callable
) -> None:
    rule = {"clauses": [{"attribute": "s", "op": "matches", "values": ["^(a+)+$"]}], "serve": {"variant": "on"}}
    create_flag("linear", environments={"production": {"enabled": True, "rules": [rule]}})
    assert client.get("/api/v1/flags/linear", headers=admin).json["environments"]["production"]["rules"][0]["id"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_revoking_an_sdk_key_id_beyond_the_integer_column_is_404(client: FlaskClient, admin: H) -> None:
    """schemathesis found it: PostgreSQL refused 2656792931197 for the INTEGER id, and that was a 500."""
    assert client.delete(f"/api/v1/sdk-keys/{2**31}", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/sdk-keys/{2**31 - 1}", headers=admin).status_code == 404
