"""Issue 12: what schemathesis found in the desk's API, and that a refused request stores nothing."""

from __future__ import annotations

import io
from typing import Any

import pytest
import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient

from service_kit.db import Database
from tests.tickets.conftest import WEBHOOK_TOKEN, Tokens, auth

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def create_ticket(client: FlaskClient, tokens: Tokens) -> int:
    response = client.post("/api/v1/tickets", json={"subject": "s", "body": "b"}, headers=auth(tokens.customer))
    assert response.status_code == 201, response.json
    ticket_id: int = response.json["id"]
    return ticket_id


def create_policy(client: FlaskClient, tokens: Tokens) -> int:
    body = {"name": "standard", "targets": {"first_response": 60}}
    response = client.post("/api/v1/sla/policies", json=body, headers=auth(tokens.admin))
    assert response.status_code == 201, response.json
    policy_id: int = response.json["id"]
    return policy_id


def details(response: Any) -> dict[str, str]:
    found: dict[str, str] = response.json["error"]["details"]
    return found


def test_merge_into_an_id_beyond_64_bits_is_a_422_not_an_overflow(client: FlaskClient, tokens: Tokens) -> None:
    ticket_id = create_ticket(client, tokens)
    response = client.post(
        f"/api/v1/tickets/{ticket_id}/merge", json={"target_id": -32589158477190044730}, headers=auth(tokens.agent)
    )
    assert response.status_code == 422
    assert set(details(response)) == {"target_id"}


def test_policy_with_an_object_as_calendar_id_is_a_422(client: FlaskClient, tokens: Tokens) -> None:
    policy_id = create_policy(client, tokens)
    body = {"name": "standard", "targets": {"first_response": 60}, "calendar_id": {}}
    response = client.put(f"/api/v1/sla/policies/{policy_id}", json=body, headers=auth(tokens.admin))
    assert response.status_code == 422
    assert set(details(response)) == {"calendar_id"}


def test_calendar_with_an_object_as_holidays_is_refused_and_not_stored(client: FlaskClient, tokens: Tokens) -> None:
    body = {"name": "berlin", "hours": {"mon": [["09:00", "17:00"]]}, "holidays": {}}
    response = client.post("/api/v1/sla/calendars", json=body, headers=auth(tokens.admin))
    assert response.status_code == 422
    assert set(details(response)) == {"holidays"}
    assert client.get("/api/v1/sla/calendars", headers=auth(tokens.admin)).json["data"] == []


def test_a_policy_is_never_stored_or_returned_without_targets(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post("/api/v1/sla/policies", json={"name": "no targets"}, headers=auth(tokens.admin))
    assert response.status_code == 422
    assert set(details(response)) == {"targets"}
    create_policy(client, tokens)
    listed = client.get("/api/v1/sla/policies", headers=auth(tokens.admin)).json["data"]
    assert [policy["targets"] for policy in listed] == [{"first_response": 60}]


def test_attachment_is_served_with_a_content_type_the_document_names(client: FlaskClient, tokens: Tokens) -> None:
    document = client.get("/openapi.json").json
    download = document["paths"]["/api/v1/attachments/{attachment_id}"]["get"]
    documented = download["responses"]["200"]["content"]
    upload = client.post(
        "/api/v1/attachments", headers=auth(tokens.agent), data={"file": (io.BytesIO(PNG), "screen.png")}
    )
    assert upload.status_code == 201
    served = client.get(upload.json["url"], headers=auth(tokens.agent))
    assert served.status_code == 200
    assert served.mimetype == "image/png"
    assert served.mimetype in documented


def alertmanager_notification(**overrides: Any) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "HighErrorRate"},
        "annotations": {},
        "startsAt": "2026-11-24T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "a1b2c3",
    }
    payload = {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "status": "firing",
        "receiver": "support-desk",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }
    return payload | overrides


def test_alert_webhook_refuses_a_receiver_that_is_not_a_string(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/alerts/webhook", json=alertmanager_notification(receiver=5), headers=auth(WEBHOOK_TOKEN)
    )
    assert response.status_code == 422
    assert set(details(response)) == {"receiver"}


def test_document_states_that_external_url_holds_no_nul(client: FlaskClient) -> None:
    document = client.get("/openapi.json").json
    webhook = document["paths"]["/api/v1/alerts/webhook"]["post"]
    reference = webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    payload = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert payload["properties"]["externalURL"]["pattern"] == "^[^\\u0000]*$"
    response = client.post(
        "/api/v1/alerts/webhook",
        json=alertmanager_notification(externalURL="http://am\u0000:9093"),
        headers=auth(WEBHOOK_TOKEN),
    )
    assert response.status_code == 422
    assert set(details(response)) == {"externalURL"}


# -- bad input stores nothing ------------------------------------------------------------------------


def database_rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, except when a token was last used (authentication's own bookkeeping)."""
    assert db.engine is not None
    metadata = sqlalchemy.MetaData()
    metadata.reflect(db.engine)
    rows = {}
    with db.engine.connect() as connection:
        for name, table in metadata.tables.items():
            columns = [column for column in table.columns if column.name != "last_used_at"]
            found = connection.execute(sqlalchemy.select(*columns)).all()
            rows[name] = sorted((tuple(row) for row in found), key=repr)
    return rows


REFUSED = [
    pytest.param("POST", "/tickets/{ticket}/merge", {"target_id": -32589158477190044730}, id="merge-overflow"),
    pytest.param("POST", "/tickets/{ticket}/merge", {"target_id": "{ticket}"}, id="merge-into-itself"),
    pytest.param("PUT", "/sla/policies/{policy}", {"name": "p", "targets": {}, "calendar_id": {}}, id="calendar-id"),
    pytest.param("POST", "/sla/policies", {"name": "no targets"}, id="policy-without-targets"),
    pytest.param("PUT", "/sla/policies/{policy}", {"name": "renamed"}, id="policy-update-without-targets"),
    pytest.param(
        "POST", "/sla/policies", {"name": "x", "targets": {"resolution": 60}, "business_hours": True}, id="bh-no-cal"
    ),
    pytest.param(
        "POST", "/sla/calendars", {"name": "c", "hours": {"mon": [["09:00", "17:00"]]}, "holidays": {}}, id="holidays"
    ),
    pytest.param(
        "POST", "/sla/calendars", {"name": "c", "hours": {"mon": [["17:00", "09:00"]]}}, id="span-ends-before-start"
    ),
    pytest.param("POST", "/tickets", {"subject": "s", "body": "b", "tags": ["Not A Tag!"]}, id="bad-tag"),
    pytest.param("POST", "/tickets", {"subject": " ", "body": "b"}, id="blank-subject"),
    pytest.param("PATCH", "/tickets/{ticket}", {"status": "nope", "priority": "low"}, id="unknown-status"),
    pytest.param("PATCH", "/tickets/{ticket}", {"priority": "low", "message": {"body": ""}}, id="empty-message"),
    pytest.param("POST", "/templates", {"name": "t", "body": "Hi {{password}}"}, id="unknown-placeholder"),
    pytest.param("POST", "/categories", {"name": ""}, id="empty-category"),
    pytest.param("POST", "/alerts/webhook", alertmanager_notification(receiver=5), id="receiver"),
]


@pytest.mark.parametrize(("method", "path", "body"), REFUSED)
def test_a_refused_request_changes_no_row(
    app: Flask, client: FlaskClient, tokens: Tokens, method: str, path: str, body: dict[str, Any]
) -> None:
    ids = {"ticket": create_ticket(client, tokens), "policy": create_policy(client, tokens)}
    token = WEBHOOK_TOKEN if path == "/alerts/webhook" else tokens.admin
    client.get("/api/v1/tickets", headers=auth(token))  # the token's last use is recorded before the snapshot
    sent = {key: ids[value[1:-1]] if value in ("{ticket}", "{policy}") else value for key, value in body.items()}
    before = database_rows(app.extensions["database"])
    response = client.open(f"/api/v1{path.format(**ids)}", method=method, json=sent, headers=auth(token))
    assert 400 <= response.status_code < 500, response.json
    assert response.json["error"]["details"] or response.status_code == 409
    assert database_rows(app.extensions["database"]) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/v1/categories/{id}"), ("PUT", "/api/v1/sla/policies/{id}"), ("PATCH", "/api/v1/tickets/{id}")],
)
def test_an_id_beyond_64_bits_is_a_404_on_a_path_with_several_methods(
    client: FlaskClient, tokens: Tokens, method: str, path: str
) -> None:
    """schemathesis: a 405 naming the path's other methods, as if this one did not exist there."""
    response = client.open(path.format(id=2**63), method=method, json={"name": "x"}, headers=auth(tokens.admin))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_integral_numbers_are_integers_as_json_schema_says(client: FlaskClient, tokens: Tokens) -> None:
    """schemathesis sent "position": 171199.0, valid for the document's integer and refused by the desk."""
    body = {"name": "p", "position": 3.0, "targets": {"resolution": 60}}
    created = client.post("/api/v1/sla/policies", json=body, headers=auth(tokens.admin))
    assert created.status_code == 201, created.json
    assert created.json["position"] == 3
    for position in (3.5, "3", True):
        refused = client.post(
            "/api/v1/sla/policies", json=body | {"name": "q", "position": position}, headers=auth(tokens.admin)
        )
        assert refused.status_code == 422
        assert set(refused.json["error"]["details"]) == {"position"}


def test_replacing_a_policy_with_an_unknown_calendar_is_a_conflict_not_a_missing_policy(
    client: FlaskClient, tokens: Tokens
) -> None:
    """schemathesis: a 404 here read as "the policy just created is gone"; the policy is there, the calendar
    it names is not."""
    policy_id = create_policy(client, tokens)
    body = {"name": "standard", "targets": {"first_response": 60}, "calendar_id": 2**31 - 1}
    response = client.put(f"/api/v1/sla/policies/{policy_id}", json=body, headers=auth(tokens.admin))
    assert response.status_code == 409
    assert response.json["error"]["details"] == {"calendar_id": f"no calendar {2**31 - 1}"}


def test_an_audit_cursor_beyond_64_bits_is_a_422_not_an_overflow(client: FlaskClient, tokens: Tokens) -> None:
    response = client.get(f"/api/v1/audit?cursor={2**111}", headers=auth(tokens.admin))
    assert response.status_code == 422
    assert set(response.json["error"]["details"]) == {"cursor"}
