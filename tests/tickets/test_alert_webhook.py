"""POST /api/v1/alerts/webhook with Alertmanager v4 payloads: one ticket per group, repeats, resolution."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.tickets.conftest import WEBHOOK_TOKEN, Tokens, auth


def notification(
    status: str = "firing",
    group_key: str = '{}:{alertname="HighErrorRate"}',
    alerts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    alert = {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "severity": "critical", "service": "api"},
        "annotations": {"summary": "5xx ratio above 5% for 5 minutes"},
        "startsAt": "2026-11-24T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-24T10:30:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "a1b2c3",
    }
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "support-desk",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "severity": "critical"},
        "commonAnnotations": {"summary": "5xx ratio above 5% for 5 minutes"},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts if alerts is not None else [alert],
    }


def post(client: FlaskClient, payload: Any, token: str = WEBHOOK_TOKEN) -> Any:
    return client.post("/api/v1/alerts/webhook", json=payload, headers=auth(token))


def test_firing_creates_one_urgent_incident(client: FlaskClient, tokens: Tokens) -> None:
    first = post(client, notification())
    assert first.status_code == 200
    assert first.json["action"] == "created"
    ticket = client.get(f"/api/v1/tickets/{first.json['ticket_id']}", headers=auth(tokens.agent)).json
    assert ticket["priority"] == "urgent"
    assert ticket["tags"] == ["alert", "higherrorrate"]
    assert ticket["subject"] == "[CRITICAL] HighErrorRate: 5xx ratio above 5% for 5 minutes"
    assert ticket["customer"]["tier"] == "internal"


def test_repeats_update_the_same_ticket(client: FlaskClient, tokens: Tokens) -> None:
    created = post(client, notification()).json
    repeat = post(client, notification()).json
    assert repeat == {**created, "action": "repeat"}
    second_alert = notification()["alerts"][0] | {
        "fingerprint": "d4e5f6",
        "labels": {"alertname": "HighErrorRate", "service": "billing"},
    }
    changed = post(client, notification(alerts=[notification()["alerts"][0], second_alert])).json
    assert changed["action"] == "updated"
    assert changed["ticket_id"] == created["ticket_id"]
    ticket = client.get(f"/api/v1/tickets/{created['ticket_id']}", headers=auth(tokens.agent)).json
    assert len(ticket["messages"]) == 2
    listed = client.get("/api/v1/tickets?tag=alert", headers=auth(tokens.agent)).json["data"]
    assert len(listed) == 1


def test_resolution_resolves_and_refire_reopens(client: FlaskClient, tokens: Tokens) -> None:
    created = post(client, notification()).json
    resolved = post(client, notification("resolved")).json
    assert resolved["action"] == "resolved"
    assert resolved["status"] == "resolved"
    assert post(client, notification("resolved")).json["action"] == "repeat"
    refired = post(client, notification()).json
    assert refired["ticket_id"] == created["ticket_id"]
    assert refired["status"] == "open"


def test_refire_after_close_opens_linked_ticket(client: FlaskClient, tokens: Tokens) -> None:
    created = post(client, notification()).json
    url = f"/api/v1/tickets/{created['ticket_id']}"
    assert client.patch(url, json={"status": "closed"}, headers=auth(tokens.agent)).status_code == 200
    again = post(client, notification()).json
    assert again["action"] == "created"
    assert again["ticket_id"] != created["ticket_id"]
    ticket = client.get(f"/api/v1/tickets/{again['ticket_id']}", headers=auth(tokens.agent)).json
    assert ticket["follow_up_of_id"] == created["ticket_id"]


def test_groups_are_separate_tickets(client: FlaskClient, tokens: Tokens) -> None:
    one = post(client, notification(group_key='{}:{alertname="A"}')).json
    two = post(client, notification(group_key='{}:{alertname="B"}')).json
    assert one["ticket_id"] != two["ticket_id"]


@pytest.mark.parametrize("token", ["", "wrong-token", WEBHOOK_TOKEN + "x"])
def test_webhook_needs_the_shared_token(client: FlaskClient, token: str) -> None:
    response = client.post(
        "/api/v1/alerts/webhook", json=notification(), headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({**notification(), "version": "3"}, {"version"}),
        ({**notification(), "groupKey": ""}, {"groupKey"}),
        ({**notification(), "status": "pending"}, {"status"}),
        ({**notification(), "alerts": "x"}, {"alerts"}),
        ([], {"body"}),
        (notification("resolved", group_key="never-fired"), {"groupKey"}),
    ],
)
def test_bad_payloads_are_422(client: FlaskClient, payload: Any, fields: set[str]) -> None:
    response = post(client, payload)
    assert response.status_code == 422
    assert set(response.json["error"]["details"]) == fields
