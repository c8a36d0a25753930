"""POST /api/v1/alerts/webhook with Alertmanager v4 payloads: one ticket per group, repeats, resolution."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from service_kit.alerting.silences import silence_url
from tests.tickets.conftest import WEBHOOK_TOKEN, Tokens, auth
from tickets_app.alerts import AlertInstance, is_stale
from tickets_app.schemas import MAX_BODY_CHARS


def notification(
    status: str = "firing",
    group_key: str = '{}:{alertname="HighErrorRate"}',
    alerts: list[dict[str, Any]] | None = None,
    starts_at: str = "2026-11-24T10:00:00Z",
    ends_at: str = "2026-11-24T10:30:00Z",
) -> dict[str, Any]:
    """A v4 payload of one alert; a firing alert's endsAt is Go's zero time, as Alertmanager sends it."""
    alert = {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "severity": "critical", "service": "api"},
        "annotations": {"summary": "5xx ratio above 5% for 5 minutes"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else ends_at,
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


def test_incident_reads_as_summary_value_labels_and_links_from_alertmanager(
    client: FlaskClient, tokens: Tokens
) -> None:
    """What the rule says (summary, description with the value), its labels one per line, and the links a
    notification carries: runbook, dashboard, source, and Alertmanager's silence form for the group."""
    alert = notification()["alerts"][0]
    alert["annotations"] |= {
        "description": "5.2% of the requests to api end in a server error.",
        "runbook_url": "http://desk.example/runbooks/services.md#servicehigherrorrate",
        "dashboard_url": "http://grafana.example/d/vibelux-services",
    }
    alert["labels"] |= {"instance": "10.0.0.7:9180", "job": "ratelimit-proxy"}
    created = post(client, notification(alerts=[alert])).json
    ticket = client.get(f"/api/v1/tickets/{created['ticket_id']}", headers=auth(tokens.agent)).json
    body = ticket["messages"][0]["body"]
    silence = silence_url("http://alertmanager:9093", {"alertname": "HighErrorRate", "severity": "critical"})
    assert body.splitlines() == [
        "FIRING: 1 alert firing, 0 resolved",
        "",
        "5xx ratio above 5% for 5 minutes (firing since 2026-11-24 10:00:00 UTC)",
        "5.2% of the requests to api end in a server error.",
        "Labels:",
        "  - instance: 10.0.0.7:9180",
        "  - job: ratelimit-proxy",
        "  - service: api",
        "  - severity: critical",
        "Runbook: http://desk.example/runbooks/services.md#servicehigherrorrate",
        "Dashboard: http://grafana.example/d/vibelux-services",
        "Source: http://prometheus:9090/graph",
        "",
        f"Silence: {silence}",
    ]
    assert ticket["customer"] == {"id": "alertmanager", "name": "Alertmanager", "email": "", "tier": "internal"}


def test_incident_times_are_shown_in_utc_whatever_offset_the_sender_used(client: FlaskClient, tokens: Tokens) -> None:
    created = post(client, notification(starts_at="2026-11-24T11:00:00+01:00")).json
    ticket = client.get(f"/api/v1/tickets/{created['ticket_id']}", headers=auth(tokens.agent)).json
    assert "(firing since 2026-11-24 10:00:00 UTC)" in ticket["messages"][0]["body"]


def test_a_large_group_lists_what_fits_and_keeps_the_silence_link(client: FlaskClient, tokens: Tokens) -> None:
    alerts = [
        notification()["alerts"][0] | {"fingerprint": f"f{n}", "labels": {"alertname": "HighErrorRate", "n": str(n)}}
        for n in range(400)
    ]
    for alert in alerts:
        alert["annotations"] = {"summary": "x" * 200}
    created = post(client, notification(alerts=alerts)).json
    ticket = client.get(f"/api/v1/tickets/{created['ticket_id']}", headers=auth(tokens.agent)).json
    body = ticket["messages"][0]["body"]
    assert len(body) <= MAX_BODY_CHARS
    assert "more alerts in Alertmanager" in body
    assert body.splitlines()[-1].startswith("Silence: http://alertmanager:9093/#/silences/new?filter=")


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
    refired = post(client, notification(starts_at="2026-11-24T11:00:00Z")).json  # a new firing: a later startsAt
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
        ({**notification(), "version": 4}, {"version"}),
        ({**notification(), "groupKey": ""}, {"groupKey"}),
        ({**notification(), "status": "pending"}, {"status"}),
        ({**notification(), "alerts": "x"}, {"alerts"}),
        ({**notification(), "alerts": [1]}, {"alerts[0]"}),
        ({**notification(), "receiver": ["desk"]}, {"receiver"}),
        ({**notification(), "commonLabels": {"severity": 3}}, {"commonLabels.severity"}),
        ([], {"body"}),
        (notification(starts_at="yesterday"), {"alerts[0].startsAt"}),
        (notification(starts_at="2026-11-24T10:00:00"), {"alerts[0].startsAt"}),  # no zone: which instant?
        (notification(starts_at="1764583200"), {"alerts[0].startsAt"}),  # not a Unix time either
        (notification(alerts=[{"status": "firing", "labels": {}}]), {"alerts[0].startsAt", "alerts[0].endsAt"}),
        (notification("resolved", ends_at=""), {"alerts[0].endsAt"}),
        (notification(alerts=[notification()["alerts"][0] | {"status": "pending"}]), {"alerts[0].status"}),
        (notification(alerts=[notification()["alerts"][0] | {"fingerprint": "f" * 65}]), {"alerts[0].fingerprint"}),
        (notification(alerts=[notification()["alerts"][0] | {"labels": ["a"]}]), {"alerts[0].labels"}),
    ],
)
def test_bad_payloads_are_422(client: FlaskClient, payload: Any, fields: set[str]) -> None:
    response = post(client, payload)
    assert response.status_code == 422
    assert set(response.json["error"]["details"]) == fields


def test_a_resolution_for_a_group_without_an_incident_is_a_409(client: FlaskClient) -> None:
    response = post(client, notification("resolved", group_key="never-fired"))
    assert response.status_code == 409
    assert set(response.json["error"]["details"]) == {"groupKey"}


def test_fields_alertmanager_adds_later_are_accepted(client: FlaskClient) -> None:
    alert = notification()["alerts"][0] | {"silencedBy": []}
    assert post(client, {**notification(alerts=[alert]), "futureField": {"x": 1}}).status_code == 200


def test_stale_firing_from_a_peer_after_resolved_leaves_the_ticket_resolved(
    client: FlaskClient, tokens: Tokens
) -> None:
    """Issue 11: the second clustered Alertmanager sent the firing it computed before the first sent resolved."""
    created = post(client, notification()).json
    assert post(client, notification("resolved")).json["status"] == "resolved"
    stale = post(client, notification())  # same alert, same startsAt: older than the resolution already applied
    assert stale.status_code == 200
    assert stale.json == {"ticket_id": created["ticket_id"], "action": "stale", "status": "resolved"}
    ticket = client.get(f"/api/v1/tickets/{created['ticket_id']}", headers=auth(tokens.agent)).json
    assert ticket["status"] == "resolved"


def test_stale_resolution_after_a_refire_leaves_the_ticket_open(client: FlaskClient) -> None:
    """At-least-once: a resolution of the first firing, delivered again after the alert fired anew."""
    created = post(client, notification()).json
    post(client, notification("resolved"))
    assert post(client, notification(starts_at="2026-11-24T11:00:00Z")).json["status"] == "open"
    late = post(client, notification("resolved")).json
    assert late == {"ticket_id": created["ticket_id"], "action": "stale", "status": "open"}
    resolved = post(client, notification("resolved", starts_at="2026-11-24T11:00:00Z", ends_at="2026-11-24T11:20:00Z"))
    assert resolved.json["action"] == "resolved"


def test_stale_firing_after_close_opens_no_follow_up_but_a_refire_does(client: FlaskClient, tokens: Tokens) -> None:
    created = post(client, notification()).json
    post(client, notification("resolved"))
    url = f"/api/v1/tickets/{created['ticket_id']}"
    assert client.patch(url, json={"status": "closed"}, headers=auth(tokens.agent)).status_code == 200
    assert post(client, notification()).json == {**created, "action": "stale", "status": "closed"}
    again = post(client, notification(starts_at="2026-11-24T12:00:00Z")).json
    assert again["action"] == "created"
    ticket = client.get(f"/api/v1/tickets/{again['ticket_id']}", headers=auth(tokens.agent)).json
    assert ticket["follow_up_of_id"] == created["ticket_id"]


def test_late_firing_does_not_bring_back_an_alert_resolved_in_the_group(client: FlaskClient, tokens: Tokens) -> None:
    """Group of two: api resolves while billing fires; the earlier both-firing notification arrives last."""
    api = notification()["alerts"][0]
    billing = api | {"fingerprint": "d4e5f6", "labels": {"alertname": "HighErrorRate", "service": "billing"}}
    api_resolved = notification("resolved")["alerts"][0]
    created = post(client, notification(alerts=[api, billing])).json
    assert post(client, notification(alerts=[api_resolved, billing])).json["action"] == "updated"
    assert post(client, notification(alerts=[api, billing])).json["action"] == "repeat"  # billing alone still fires
    ticket = client.get(f"/api/v1/tickets/{created['ticket_id']}", headers=auth(tokens.agent)).json
    assert len(ticket["messages"]) == 2


def test_ignored_notification_is_in_the_ticket_log(client: FlaskClient, tokens: Tokens) -> None:
    created = post(client, notification()).json
    post(client, notification("resolved"))
    post(client, notification())
    events = client.get(f"/api/v1/tickets/{created['ticket_id']}/events", headers=auth(tokens.agent)).json["data"]
    assert [(e["kind"], e["data"]) for e in events if e["kind"] == "alert_stale"] == [
        ("alert_stale", {"stale": ["a1b2c3"]})
    ]
    statuses = [e["data"]["to"] for e in events if e["kind"] == "status"]
    assert statuses == ["resolved"]


S, E = datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
LATER, LATER_END = datetime(2026, 11, 24, 11, tzinfo=UTC), datetime(2026, 11, 24, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("known", "seen", "stale"),
    [
        pytest.param(None, AlertInstance("a", S, None), False, id="first-news"),
        pytest.param(AlertInstance("a", S, None), AlertInstance("a", S, None), False, id="repeat-firing"),
        pytest.param(AlertInstance("a", S, None), AlertInstance("a", S, E), False, id="resolution"),
        pytest.param(AlertInstance("a", S, E), AlertInstance("a", S, E), False, id="repeat-resolution"),
        pytest.param(AlertInstance("a", S, E), AlertInstance("a", S, None), True, id="firing-after-its-resolution"),
        pytest.param(AlertInstance("a", S, E), AlertInstance("a", E, None), True, id="firing-starting-at-the-end"),
        pytest.param(AlertInstance("a", S, E), AlertInstance("a", LATER, None), False, id="refire"),
        pytest.param(AlertInstance("a", LATER, None), AlertInstance("a", S, E), True, id="resolution-of-an-earlier"),
        pytest.param(AlertInstance("a", LATER, None), AlertInstance("a", S, None), True, id="firing-of-an-earlier"),
        pytest.param(
            AlertInstance("a", S, E), AlertInstance("a", LATER, LATER_END), False, id="resolved-refire-never-seen"
        ),
    ],
)
def test_is_stale(known: AlertInstance | None, seen: AlertInstance, stale: bool) -> None:
    assert is_stale(known, seen) is stale
