"""The support desk's ack API (service_kit.alerting.api in tickets_app), against a real Alertmanager."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient

from service_kit.alerting import AlertmanagerClient
from service_kit.auth import AuditRecord, create_token
from service_kit.settings import DatabaseSettings
from tests.servers import AlertmanagerServer
from tests.tickets.conftest import migrate
from tickets_app.app import create_app
from tickets_app.settings import AlertSettings, TicketsSettings, WebSettings

pytestmark = pytest.mark.integration


def build_app(database_url: str, alertmanager_url: str) -> Flask:
    settings = TicketsSettings(
        database=DatabaseSettings(url=database_url),
        alerts=AlertSettings(alertmanager_url=alertmanager_url),
        web=WebSettings(secret_key="test-secret-key-for-sessions"),
    )
    return create_app(settings, start_sweeper=False)


@pytest.fixture
def app(tmp_path: Path, alertmanager: AlertmanagerServer) -> Flask:
    url = f"sqlite:///{tmp_path / 'acks.sqlite3'}"
    migrate(url)
    return build_app(url, alertmanager.url)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(app: Flask, role: str, name: str) -> dict[str, str]:
    with app.extensions["database"].new_session() as session:
        plain, _ = create_token(session, name, role)
        session.commit()
    return {"Authorization": f"Bearer {plain}"}


def fire(alertmanager: AlertmanagerServer) -> dict[str, str]:
    labels = {"alertname": "ServiceDown", "severity": "critical", "service": f"svc-{uuid.uuid4().hex[:8]}"}
    ends = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    requests.post(f"{alertmanager.url}/api/v2/alerts", json=[{"labels": labels, "endsAt": ends}], timeout=5)
    return labels


def test_agent_acks_and_unacks_through_the_api_and_both_are_audited(
    app: Flask, client: FlaskClient, alertmanager: AlertmanagerServer
) -> None:
    labels = fire(alertmanager)
    agent = bearer(app, "agent", "ana")
    response = client.post(
        "/api/v1/alerts/acks",
        json={
            "alertname": "ServiceDown",
            "labels": {"service": labels["service"]},
            "comment": "on it",
            "duration": "20m",
        },
        headers=agent,
    )
    assert response.status_code == 201, response.json
    ack = response.json
    assert ack["comment"] == "on it"
    assert ack["matchers"] == {"alertname": "ServiceDown", "service": labels["service"]}
    (alert,) = AlertmanagerClient(alertmanager.url).alerts(labels)
    assert alert["status"]["silencedBy"] == [ack["silence_id"]]
    assert ack["silence_id"] in [a["silence_id"] for a in client.get("/api/v1/alerts/acks", headers=agent).json["data"]]

    assert client.delete(f"/api/v1/alerts/acks/{ack['silence_id']}", headers=agent).status_code == 204
    (alert,) = AlertmanagerClient(alertmanager.url).alerts(labels)
    assert alert["status"]["state"] == "active"

    with app.extensions["database"].new_session() as session:
        records = session.scalars(sqlalchemy.select(AuditRecord).order_by(AuditRecord.id)).all()
        assert [(r.action, r.target_id, r.actor_role) for r in records] == [
            ("alert.ack", ack["silence_id"], "agent"),
            ("alert.unack", ack["silence_id"], "agent"),
        ]


def test_the_acknowledger_is_the_caller_not_the_body(app: Flask, client: FlaskClient) -> None:
    body = {"alertname": "Nothing", "comment": "x", "duration": "5m"}
    refused = client.post(
        "/api/v1/alerts/acks", json=body | {"created_by": "someone-else"}, headers=bearer(app, "agent", "bo")
    )
    assert refused.status_code == 422
    assert set(refused.json["error"]["details"]) == {"created_by"}
    response = client.post("/api/v1/alerts/acks", json=body, headers=bearer(app, "agent", "bo"))
    assert response.status_code == 201
    assert response.json["created_by"] == "token:2"  # the caller: the second token made in this database
    client.delete(f"/api/v1/alerts/acks/{response.json['silence_id']}", headers=bearer(app, "admin", "root"))


def test_an_ack_without_duration_or_until_lasts_an_hour(app: Flask, client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/alerts/acks", json={"alertname": "X", "comment": "x"}, headers=bearer(app, "agent", "ed")
    )
    assert response.status_code == 201
    ack = response.json
    lasts = datetime.fromisoformat(ack["ends_at"]) - datetime.fromisoformat(ack["starts_at"])
    assert timedelta(minutes=59) < lasts <= timedelta(hours=1)
    client.delete(f"/api/v1/alerts/acks/{ack['silence_id']}", headers=bearer(app, "admin", "root"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"comment": "x", "duration": "5m"}, "alertname"),
        ({"alertname": "X", "duration": "5m"}, "comment"),
        ({"alertname": "X", "comment": "  ", "duration": "5m"}, "comment"),
        ({"alertname": "X", "comment": "x", "duration": "soon"}, "duration"),
        ({"alertname": "X", "comment": "x", "duration": "1h30m"}, "duration"),
        ({"alertname": "X", "comment": "x", "duration": "5m", "until": "2026-12-24T10:00:00Z"}, "until"),
        ({"alertname": "X", "comment": "x", "until": "tomorrow"}, "until"),
        ({"alertname": "X", "comment": "x", "until": "2020-01-01T00:00:00Z"}, "ends_at"),  # in the past
        ({"alertname": "X", "comment": "x", "duration": "30d"}, "duration"),
        ({"alertname": "X", "comment": "x", "duration": "169h"}, "duration"),
        ({"alertname": "X", "comment": "x", "duration": "5m", "labels": {"service": 1}}, "labels.service"),
        ({"alertname": "X", "comment": "x", "duration": "5m", "labels": {"bad name": "v"}}, "labels.bad name.[key]"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(app: Flask, client: FlaskClient, body: object, field: str) -> None:
    response = client.post("/api/v1/alerts/acks", json=body, headers=bearer(app, "agent", "cy"))
    assert response.status_code == 422
    assert field in response.json["error"]["details"]


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("viewer", 403), ("customer", 403)])
def test_only_agents_and_admins_may_ack(app: Flask, client: FlaskClient, role: str | None, status: int) -> None:
    headers = bearer(app, role, "who") if role else {}
    body = {"alertname": "X", "comment": "x", "duration": "5m"}
    assert client.post("/api/v1/alerts/acks", json=body, headers=headers).status_code == status
    assert client.get("/api/v1/alerts/acks", headers=headers).status_code == status


@pytest.mark.parametrize("silence_id", ["0", "not-a-silence", "ffffffff"])
def test_a_silence_id_that_is_no_uuid_is_a_404(app: Flask, client: FlaskClient, silence_id: str) -> None:
    """Issue 12: Alertmanager answers such an id with a 422, which the desk relayed as a 502."""
    response = client.delete(f"/api/v1/alerts/acks/{silence_id}", headers=bearer(app, "agent", "flo"))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_unknown_silence_is_404_and_unreachable_alertmanager_is_502(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    agent = bearer(app, "agent", "dee")
    assert client.delete(f"/api/v1/alerts/acks/{uuid.uuid4()}", headers=agent).status_code == 404
    url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    migrate(url)
    offline = build_app(url, "http://127.0.0.1:9")
    response = offline.test_client().get("/api/v1/alerts/acks", headers=bearer(offline, "agent", "eve"))
    assert response.status_code == 502
    assert response.json["error"]["code"]
