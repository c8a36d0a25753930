"""The REST API through Flask's test client on a real, migrated SQLite database."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import tickets_app.listing
from tests.tickets.conftest import Tokens, auth


def create(client: FlaskClient, token: str, **extra: Any) -> dict[str, Any]:
    body = {"subject": "Payment failed", "body": "Card declined twice", "priority": "high", **extra}
    response = client.post("/api/v1/tickets", json=body, headers=auth(token))
    assert response.status_code == 201, response.json
    return response.json


def test_customer_creates_and_sees_own_public_thread(client: FlaskClient, tokens: Tokens) -> None:
    ticket = create(client, tokens.customer)
    assert ticket["customer"] == {"id": "cust-1", "name": "cust-1", "email": "", "tier": "professional"}
    assert "sla" not in ticket and "assignee" not in ticket
    note = {"body": "customer seems confused", "internal": True}
    assert (
        client.post(f"/api/v1/tickets/{ticket['id']}/messages", json=note, headers=auth(tokens.agent)).status_code
        == 201
    )
    seen = client.get(f"/api/v1/tickets/{ticket['id']}", headers=auth(tokens.customer)).json
    assert [m["body"] for m in seen["messages"]] == ["Card declined twice"]
    staff_view = client.get(f"/api/v1/tickets/{ticket['id']}", headers=auth(tokens.agent)).json
    assert [m["internal"] for m in staff_view["messages"]] == [False, True]
    assert staff_view["sla"]["policy"] is None


def test_other_customer_gets_404(client: FlaskClient, tokens: Tokens) -> None:
    ticket = create(client, tokens.customer)
    response = client.get(f"/api/v1/tickets/{ticket['id']}", headers=auth(tokens.other_customer))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    listed = client.get("/api/v1/tickets", headers=auth(tokens.other_customer)).json
    assert listed["data"] == []


def test_service_token_acts_for_customer(client: FlaskClient, tokens: Tokens) -> None:
    headers = auth(
        tokens.service,
        **{"X-On-Behalf-Of": "cust-9", "X-Customer-Tier": "enterprise", "X-Customer-Email": "nine@example.com"},
    )
    response = client.post("/api/v1/tickets", json={"subject": "s", "body": "b"}, headers=headers)
    assert response.status_code == 201
    assert response.json["customer"]["tier"] == "enterprise"
    assert client.get("/api/v1/tickets", headers=auth(tokens.service)).status_code == 403
    bad = client.get(
        "/api/v1/tickets", headers=auth(tokens.service, **{"X-On-Behalf-Of": "x", "X-Customer-Tier": "platinum"})
    )
    assert bad.status_code == 422
    assert "X-Customer-Tier" in bad.json["error"]["details"]


def test_atomic_change_fields_and_message(client: FlaskClient, tokens: Tokens, app: Flask) -> None:
    ticket = create(client, tokens.customer)
    url = f"/api/v1/tickets/{ticket['id']}"
    bad = client.patch(
        url, json={"priority": "urgent", "category": "nope", "message": {"body": "x"}}, headers=auth(tokens.agent)
    )
    assert bad.status_code == 409
    assert set(bad.json["error"]["details"]) == {"category"}
    after = client.get(url, headers=auth(tokens.agent)).json
    assert after["priority"] == "high"
    assert len(after["messages"]) == 1
    good = client.patch(
        url,
        json={"priority": "urgent", "status": "waiting", "assignee": "agent-ann", "message": {"body": "Please retry"}},
        headers=auth(tokens.agent),
    )
    assert good.status_code == 200
    assert good.json["ticket"]["status"] == "waiting"
    assert good.json["message"]["body"] == "Please retry"
    audit = client.get("/api/v1/audit?action=ticket.update", headers=auth(tokens.admin)).json["data"]
    assert audit[0]["actor"] == "agent-ann"
    assert audit[0]["after"]["priority"] == "urgent"


def test_message_internal_must_be_boolean(client: FlaskClient, tokens: Tokens) -> None:
    ticket = create(client, tokens.customer)
    response = client.post(
        f"/api/v1/tickets/{ticket['id']}/messages", json={"body": "x", "internal": "false"}, headers=auth(tokens.agent)
    )
    assert response.status_code == 422
    assert set(response.json["error"]["details"]) == {"internal"}


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ({}, 422, {"subject", "body"}),
        ({"subject": "x", "body": "y", "priority": "asap"}, 422, {"priority"}),
        ({"subject": "x" * 301, "body": "y"}, 422, {"subject"}),
        ({"subject": "x", "body": "y", "tags": "billing"}, 422, {"tags"}),
        ({"subject": "x", "body": "y", "tags": ["Billing"]}, 422, {"tags[0]"}),
        ({"subject": "x", "body": "y", "attachments": ["nope"]}, 422, {"attachments[0]"}),
        ({"subject": "x", "body": "y", "attachments": ["A" * 32]}, 409, {"attachments"}),
        ({"subject": "x", "body": "y", "category": "nope"}, 409, {"category"}),
        ({"subject": 5, "body": True}, 422, {"subject", "body"}),
    ],
)
def test_create_validation_names_fields(
    client: FlaskClient, tokens: Tokens, body: dict[str, Any], status: int, fields: set[str]
) -> None:
    response = client.post("/api/v1/tickets", json=body, headers=auth(tokens.customer))
    assert response.status_code == status
    assert set(response.json["error"]["details"]) == fields


def test_non_json_body_is_422(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post("/api/v1/tickets", data="not json", headers=auth(tokens.customer))
    assert response.status_code == 422
    assert "body" in response.json["error"]["details"]


def test_staff_open_a_ticket_for_a_customer_or_an_internal_one_of_their_own(
    client: FlaskClient, tokens: Tokens
) -> None:
    ok = create(client, tokens.agent, customer={"id": "cust-3", "name": "Cy", "tier": "startup"})
    assert ok["customer"] == {"id": "cust-3", "name": "Cy", "email": "", "tier": "startup"}
    own = create(client, tokens.agent)
    assert own["customer"] == {"id": "agent-ann", "name": "Ann Agent", "email": "", "tier": "internal"}


def test_templates_render_placeholders_and_admin_only(client: FlaskClient, tokens: Tokens) -> None:
    body = {"name": "greeting", "body": "Hi {{customer_name}}, ticket #{{ticket_id}} is with {{ agent_name }}."}
    assert client.post("/api/v1/templates", json=body, headers=auth(tokens.agent)).status_code == 403
    bad = client.post("/api/v1/templates", json={"name": "x", "body": "{{password}}"}, headers=auth(tokens.admin))
    assert bad.status_code == 422
    assert "body" in bad.json["error"]["details"]
    template = client.post("/api/v1/templates", json=body, headers=auth(tokens.admin)).json
    ticket = create(client, tokens.agent, customer={"id": "cust-3", "name": "Cy"})
    rendered = client.get(f"/api/v1/tickets/{ticket['id']}/templates/{template['id']}", headers=auth(tokens.agent))
    assert rendered.json["body"] == f"Hi Cy, ticket #{ticket['id']} is with Ann Agent."
    audit = client.get("/api/v1/audit?action=template.create", headers=auth(tokens.admin)).json["data"]
    assert len(audit) == 1
    duplicate = client.post("/api/v1/templates", json=body, headers=auth(tokens.admin))
    assert duplicate.status_code == 409
    assert set(duplicate.json["error"]["details"]) == {"name"}


def test_sla_policy_admin_and_deadlines(client: FlaskClient, tokens: Tokens) -> None:
    calendar = client.post(
        "/api/v1/sla/calendars",
        headers=auth(tokens.admin),
        json={"name": "berlin", "timezone": "Europe/Berlin", "hours": {"mon": [["09:00", "17:00"]]}},
    ).json
    bad = client.post(
        "/api/v1/sla/policies",
        headers=auth(tokens.admin),
        json={"name": "p", "targets": {"first_reply": 5}, "business_hours": True},
    )
    assert bad.status_code == 422
    assert set(bad.json["error"]["details"]) == {"targets.first_reply", "calendar_id"}
    policy = client.post(
        "/api/v1/sla/policies",
        headers=auth(tokens.admin),
        json={
            "name": "pro-high",
            "conditions": {"tier": ["professional"], "priority": ["high"]},
            "targets": {"first_response": 30, "resolution": 600},
            "calendar_id": calendar["id"],
        },
    )
    assert policy.status_code == 201, policy.json
    ticket = create(client, tokens.customer)
    view = client.get(f"/api/v1/tickets/{ticket['id']}", headers=auth(tokens.agent)).json
    assert view["sla"]["policy"] == "pro-high"
    assert view["sla"]["first_response_due_at"] is not None
    bad_calendar = client.post(
        "/api/v1/sla/calendars",
        headers=auth(tokens.admin),
        json={"name": "x", "timezone": "Nowhere/Land", "hours": {"mon": [["09:00", "17:00"]]}},
    )
    assert bad_calendar.json["error"]["details"] == {"timezone": "unknown time zone 'Nowhere/Land'"}


def test_merge_and_events(client: FlaskClient, tokens: Tokens) -> None:
    first = create(client, tokens.customer)
    second = create(client, tokens.customer, body="Second thread")
    merged = client.post(
        f"/api/v1/tickets/{second['id']}/merge", json={"target_id": first["id"]}, headers=auth(tokens.agent)
    )
    assert merged.status_code == 200
    assert [m["body"] for m in merged.json["messages"]] == ["Card declined twice", "Second thread"]
    events = client.get(f"/api/v1/tickets/{second['id']}/events", headers=auth(tokens.agent)).json["data"]
    assert [e["kind"] for e in events][-2:] == ["status", "merged"]
    assert client.get(f"/api/v1/tickets/{second['id']}/events", headers=auth(tokens.customer)).status_code == 403
    missing = client.post(f"/api/v1/tickets/{first['id']}/merge", json={"target_id": 999}, headers=auth(tokens.agent))
    assert missing.status_code == 409
    assert set(missing.json["error"]["details"]) == {"target_id"}


def test_list_search_and_cursor_links(client: FlaskClient, tokens: Tokens) -> None:
    for i in range(5):
        create(client, tokens.customer, subject=f"Refund request {i}")
    page = client.get("/api/v1/tickets?q=refund&page[size]=2", headers=auth(tokens.agent)).json
    assert len(page["data"]) == 2
    assert page["meta"]["has_more"] is True
    assert "[Refund]" in page["data"][0]["snippet"]
    seen = [t["id"] for t in page["data"]]
    while page["links"].get("next"):
        page = client.get(page["links"]["next"], headers=auth(tokens.agent)).json
        seen += [t["id"] for t in page["data"]]
    assert len(seen) == len(set(seen)) == 5


def test_a_phrase_past_its_cap_says_so_in_the_meta(
    client: FlaskClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phrase is counted to a lower cap than a word: a client reads from total_capped, not from a total
    of 10,001, that there may be more."""
    monkeypatch.setattr(tickets_app.listing, "PHRASE_TOTAL_CAP", 2)
    for i in range(4):
        create(client, tokens.customer, subject=f"Refund request {i}")
    phrase = client.get('/api/v1/tickets?q="refund request"', headers=auth(tokens.agent)).json
    assert phrase["meta"] == {"has_more": False, "total": 3, "total_capped": True}
    assert len(phrase["data"]) == 4
    word = client.get("/api/v1/tickets?q=refund", headers=auth(tokens.agent)).json
    assert word["meta"] == {"has_more": False, "total": 4, "total_capped": False}


def test_list_pages_go_back_and_count_within_a_view(client: FlaskClient, tokens: Tokens) -> None:
    for i in range(5):
        create(client, tokens.customer, subject=f"Refund request {i}")
    done = create(client, tokens.customer, subject="Refund done")
    client.patch(f"/api/v1/tickets/{done['id']}", json={"status": "closed"}, headers=auth(tokens.agent))
    first = client.get("/api/v1/tickets?view=unassigned&page[size]=2", headers=auth(tokens.agent)).json
    assert first["meta"] == {"has_more": True, "total": 5, "total_capped": False}  # the closed one is no work
    assert "prev" not in first["links"]
    second = client.get(first["links"]["next"], headers=auth(tokens.agent)).json
    assert "page[cursor]" not in second["links"]["prev"]
    back = client.get(second["links"]["prev"], headers=auth(tokens.agent)).json
    assert [t["id"] for t in back["data"]] == [t["id"] for t in first["data"]]
    everything = client.get("/api/v1/tickets", headers=auth(tokens.agent)).json
    assert everything["meta"]["total"] == 6
    assert everything["data"][0]["id"] == done["id"]  # without a view: all tickets, recently updated first
    refused = client.get("/api/v1/tickets?view=breached", headers=auth(tokens.customer))
    assert refused.status_code == 403
    assert client.get("/api/v1/tickets?view=open", headers=auth(tokens.customer)).json["meta"]["total"] == 5


def test_anonymous_is_401_and_viewer_403(client: FlaskClient, tokens: Tokens) -> None:
    assert client.get("/api/v1/tickets").status_code == 401
    assert client.get("/api/v1/tickets", headers=auth(tokens.viewer)).status_code == 403
    assert client.get("/api/v1/tickets", headers=auth("vbx_wrong")).status_code == 401


def test_attachment_flow_and_internal_note_hidden(client: FlaskClient, tokens: Tokens) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    upload = client.post(
        "/api/v1/attachments", headers=auth(tokens.agent), data={"file": (io.BytesIO(png), "screen.png")}
    )
    assert upload.status_code == 201, upload.json
    ticket = create(client, tokens.customer)
    note = client.post(
        f"/api/v1/tickets/{ticket['id']}/messages",
        headers=auth(tokens.agent),
        json={"body": "see screenshot", "internal": True, "attachments": [upload.json["id"]]},
    )
    assert note.status_code == 201
    url = note.json["message"]["attachments"][0]["url"]
    staff = client.get(url, headers=auth(tokens.agent))
    assert staff.status_code == 200
    assert staff.data == png
    assert staff.headers["X-Content-Type-Options"] == "nosniff"
    assert staff.headers["Content-Disposition"] == "attachment; filename*=UTF-8''screen.png"
    assert client.get(url, headers=auth(tokens.customer)).status_code == 404
    reuse = client.post(
        f"/api/v1/tickets/{ticket['id']}/messages",
        headers=auth(tokens.agent),
        json={"body": "again", "attachments": [upload.json["id"]]},
    )
    assert reuse.status_code == 409  # attached already: no unattached upload of the agent's has this id
    assert set(reuse.json["error"]["details"]) == {"attachments"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("report.pdf", b"MZ\x90\x00 not a pdf", "not a .pdf"),
        ("../../etc/passwd", b"root:x:0:0", "extension"),
        ("evil.png.html", b"<script>", "not accepted"),
        ("shell.php", b"<?php", "not accepted"),
        ("big.txt", b"a" * (64 * 1024 + 1), "larger than"),
        ("empty.txt", b"", "empty"),
        ("bin.txt", b"\xff\xfe\x00", "UTF-8"),
    ],
)
def test_attachment_rejections(client: FlaskClient, tokens: Tokens, name: str, content: bytes, message: str) -> None:
    response = client.post(
        "/api/v1/attachments", headers=auth(tokens.customer), data={"file": (io.BytesIO(content), name)}
    )
    assert response.status_code == 422
    assert message in response.json["error"]["details"]["file"]


def test_attachment_path_name_is_sanitised(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post(
        "/api/v1/attachments",
        headers=auth(tokens.customer),
        data={"file": (io.BytesIO(b"hello"), "..\\..\\secret notes.txt")},
    )
    assert response.status_code == 201
    assert response.json["filename"] == "secret notes.txt"
    other = client.get(response.json["url"], headers=auth(tokens.other_customer))
    assert other.status_code == 404


def test_daily_upload_quota(client: FlaskClient, tokens: Tokens) -> None:
    chunk = b"x" * (60 * 1024)
    statuses = [
        client.post(
            "/api/v1/attachments", headers=auth(tokens.customer), data={"file": (io.BytesIO(chunk), f"f{i}.txt")}
        ).status_code
        for i in range(5)
    ]
    assert statuses == [201, 201, 201, 201, 422]


def test_policy_change_recomputes_open_tickets_on_next_sweep(app: Flask, client: FlaskClient, tokens: Tokens) -> None:
    ticket = create(client, tokens.customer)
    url = f"/api/v1/tickets/{ticket['id']}"
    assert client.get(url, headers=auth(tokens.agent)).json["sla"]["first_response_due_at"] is None
    policy = {"name": "everything", "targets": {"first_response": 30}}
    assert client.post("/api/v1/sla/policies", json=policy, headers=auth(tokens.admin)).status_code == 201
    resources = app.extensions["tickets"]
    with app.app_context(), resources.db.new_session() as session:
        assert resources.desk.sweep(session, resources.clock()) == 1
        session.commit()
    sla = client.get(url, headers=auth(tokens.agent)).json["sla"]
    assert sla["policy"] == "everything"
    assert sla["first_response_due_at"] is not None
    clock = client.get(f"{url}/sla", headers=auth(tokens.agent)).json
    assert clock["metrics"]["first_response"]["state"] == "active"
    assert clock["metrics"]["first_response"]["due_at"] == sla["first_response_due_at"]


def test_ui_pages_send_security_headers(client: FlaskClient) -> None:
    response = client.get("/login")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
