"""/openapi.json covers exactly the app's API routes, and real responses validate against its schemas."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from tests.tickets.conftest import Tokens, auth

METHODS = {"get", "post", "put", "patch", "delete"}


def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def check(document: dict[str, Any], schema_name: str, instance: Any) -> None:
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(instance), key=str)
    assert not errors, [e.message for e in errors[:3]]


def test_every_api_route_is_documented_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    document = spec(client)
    actual = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            actual |= {(path, m.lower()) for m in rule.methods or () if m.lower() in METHODS}
    documented = {(path, m) for path, item in document["paths"].items() for m in item if m in METHODS}
    assert documented == actual


def test_responses_match_schemas(client: FlaskClient, tokens: Tokens) -> None:
    document = spec(client)
    created = client.post(
        "/api/v1/tickets", json={"subject": "s", "body": "b", "tags": ["x"]}, headers=auth(tokens.customer)
    )
    check(document, "TicketWithThread", created.json)
    ticket_id = created.json["id"]
    upload = client.post(
        "/api/v1/attachments", headers=auth(tokens.agent), data={"file": (io.BytesIO(b"%PDF-1.7 test"), "a.pdf")}
    )
    check(document, "Attachment", upload.json)
    reply = client.post(
        f"/api/v1/tickets/{ticket_id}/messages",
        headers=auth(tokens.agent),
        json={"body": "hi", "attachments": [upload.json["id"]], "fields": {"priority": "low"}},
    )
    check(document, "Message", reply.json["message"])
    check(document, "Ticket", reply.json["ticket"])
    full = client.get(f"/api/v1/tickets/{ticket_id}", headers=auth(tokens.agent)).json
    check(document, "TicketWithThread", full)
    for event in client.get(f"/api/v1/tickets/{ticket_id}/events", headers=auth(tokens.agent)).json["data"]:
        check(document, "Event", event)
    listed = client.get("/api/v1/tickets?q=b", headers=auth(tokens.agent)).json
    for item in listed["data"]:
        check(document, "Ticket", item)
    sla = client.get(f"/api/v1/tickets/{ticket_id}/sla", headers=auth(tokens.agent))
    assert sla.status_code == 200
    check(document, "SlaState", sla.json)
    bad = client.post("/api/v1/tickets", json={}, headers=auth(tokens.customer))
    check(document, "ErrorBody", bad.json)


@pytest.mark.parametrize("name", ["TicketInput", "TemplateInput", "CalendarInput", "SlaPolicyInput"])
def test_schemas_are_valid_json_schema(client: FlaskClient, name: str) -> None:
    document = spec(client)
    Draft202012Validator.check_schema({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


def test_constraints_are_json_schema_keywords_not_pydantic_ones(client: FlaskClient) -> None:
    """pydantic writes a constraint it cannot place as its own name ("ge"), which validators ignore: the
    document then allowed calendar_id 0, and schemathesis sent it."""
    leaked: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            leaked.extend(
                f"{path}.{key}" for key in ("ge", "gt", "le", "lt", "min_length", "max_length") if key in node
            )
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(spec(client)["components"]["schemas"], "schemas")
    assert leaked == []
