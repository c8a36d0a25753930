"""The desk's API on a real PostgreSQL: create, reply, search, end to end through the app factory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask

from service_kit.settings import DatabaseSettings
from tests.servers import PostgresServer
from tests.tickets.conftest import Tokens, auth
from tests.tickets.test_alert_webhook import notification
from tests.tickets.test_alert_webhook import post as post_alert
from tickets_app.cli import migrate
from tickets_app.search import PostgresFtsIndex
from tickets_app.settings import TicketsSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: TicketsSettings, postgres_server: PostgresServer) -> TicketsSettings:
    """The shared settings with the database moved to a fresh, migrated PostgreSQL database."""
    url = postgres_server.fresh_database("tickets_api")
    migrate(url)
    return replace(settings, database=DatabaseSettings(url=url))


@pytest.fixture
def app(app: Flask) -> Iterator[Flask]:
    yield app
    app.extensions["database"].engine.dispose()


def test_create_reply_and_search_on_postgres(app: Flask, tokens: Tokens) -> None:
    client = app.test_client()
    assert isinstance(app.extensions["tickets"].desk.index, PostgresFtsIndex)
    created = client.post(
        "/api/v1/tickets",
        json={"subject": "Exporting invoices fails", "body": "The CSV export times out"},
        headers=auth(tokens.customer),
    )
    assert created.status_code == 201, created.json
    ticket_id = created.json["id"]
    url = f"/api/v1/tickets/{ticket_id}/messages"
    reply = client.post(url, json={"body": "Could you try the résumé endpoint?"}, headers=auth(tokens.agent))
    assert reply.status_code == 201, reply.json
    note = client.post(url, json={"body": "escalate to billing team", "internal": True}, headers=auth(tokens.agent))
    assert note.status_code == 201, note.json

    def found(token: str, query: str) -> list[int]:
        response = client.get("/api/v1/tickets", query_string={"q": query}, headers=auth(token))
        assert response.status_code == 200, response.json
        return [ticket["id"] for ticket in response.json["data"]]

    assert found(tokens.agent, "invoice export") == [ticket_id]  # stemmed, subject and first message
    assert found(tokens.customer, "resume") == [ticket_id]  # the reply, accents folded
    assert found(tokens.agent, "billing") == [ticket_id]
    assert found(tokens.customer, "billing") == []  # internal note
    assert found(tokens.other_customer, "invoice") == []
    hit = client.get("/api/v1/tickets", query_string={"q": "export"}, headers=auth(tokens.agent)).json["data"][0]
    assert "[export]" in hit["snippet"].lower()
    hostile = client.get("/api/v1/tickets", query_string={"q": "')) OR 1=1; --  !:* <->"}, headers=auth(tokens.agent))
    assert hostile.status_code == 200


def test_nul_in_text_is_a_422_naming_the_field(app: Flask, tokens: Tokens) -> None:
    response = app.test_client().post(
        "/api/v1/tickets", json={"subject": "ok", "body": "bad\x00body"}, headers=auth(tokens.customer)
    )
    assert response.status_code == 422
    assert "body" in response.json["error"]["details"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"subject": "ok", "body": "fine", "tags": ["good", "b\x00d"]}, "tags[1]"),
        ({"subject": "ok", "body": "fine", "category": "bil\x00ling"}, "category"),
        ({"subject": "ok", "body": "fine", "extra\x00": 1}, "body"),
    ],
)
def test_nul_anywhere_in_a_json_body_is_a_422_naming_the_field(
    app: Flask, tokens: Tokens, payload: dict[str, object], field: str
) -> None:
    client = app.test_client()
    before = client.get("/api/v1/tickets", headers=auth(tokens.agent)).json["data"]
    response = client.post("/api/v1/tickets", json=payload, headers=auth(tokens.customer))
    assert response.status_code == 422
    assert field in response.json["error"]["details"]
    assert client.get("/api/v1/tickets", headers=auth(tokens.agent)).json["data"] == before  # nothing written


def test_alert_webhook_ignores_a_stale_firing_on_postgres(app: Flask, tokens: Tokens) -> None:
    """The reproduction order of issue 11 (firing, resolved, the peer's stale firing), then a real re-fire,
    on PostgreSQL: the alert states are read with FOR UPDATE and written with timezone-aware times."""
    client = app.test_client()
    created = post_alert(client, notification()).json
    assert post_alert(client, notification("resolved")).json["action"] == "resolved"
    assert post_alert(client, notification()).json == {**created, "action": "stale", "status": "resolved"}
    # 11:00 UTC, after the 10:30 end; nanoseconds as Go writes them
    refire = post_alert(client, notification(starts_at="2026-11-24T12:00:00.123456789+01:00"))
    assert refire.json == {**created, "action": "updated", "status": "open"}
