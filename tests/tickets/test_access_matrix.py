"""Every API endpoint against every caller: anonymous, customer, other customer, agent, admin."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.tickets.conftest import Tokens, auth

ROLES = ("anonymous", "customer", "other_customer", "agent", "admin")


def seed(client: FlaskClient, tokens: Tokens) -> dict[str, Any]:
    """Fresh objects for one caller: the customer's ticket with an internal-note attachment, and admin items."""
    admin = auth(tokens.admin)
    ticket = client.post("/api/v1/tickets", json={"subject": "s", "body": "b"}, headers=auth(tokens.customer)).json
    other = client.post("/api/v1/tickets", json={"subject": "t", "body": "c"}, headers=auth(tokens.customer)).json
    upload = client.post(
        "/api/v1/attachments", headers=auth(tokens.agent), data={"file": (io.BytesIO(b"GIF89a..."), "x.gif")}
    ).json
    client.post(
        f"/api/v1/tickets/{ticket['id']}/messages",
        headers=auth(tokens.agent),
        json={"body": "note", "internal": True, "attachments": [upload["id"]]},
    )
    suffix = ticket["id"]
    return {
        "ticket": ticket["id"],
        "target": other["id"],
        "attachment": upload["id"],
        "template": client.post("/api/v1/templates", headers=admin, json={"name": f"t{suffix}", "body": "Hello"}).json[
            "id"
        ],
        "category": client.post("/api/v1/categories", headers=admin, json={"name": f"c{suffix}"}).json["id"],
        "calendar": client.post(
            "/api/v1/sla/calendars", headers=admin, json={"name": f"k{suffix}", "hours": {"mon": [["09:00", "17:00"]]}}
        ).json["id"],
        "policy": client.post(
            "/api/v1/sla/policies", headers=admin, json={"name": f"p{suffix}", "targets": {"resolution": 60}}
        ).json["id"],
    }


def crud(path: str, key: str, body: dict[str, Any], read: tuple[int, ...]) -> list[Any]:
    """List/create/update/delete of an admin-managed resource: writes are admin only."""
    return [
        ("GET", path, None, read),
        ("POST", path, body, (401, 403, 403, 403, 201)),
        ("PUT", path + "/{" + key + "}", body, (401, 403, 403, 403, 200)),
        ("DELETE", path + "/{" + key + "}", None, (401, 403, 403, 403, 204)),
    ]


STAFF_READ = (401, 403, 403, 200, 200)
MATRIX = [
    ("GET", "/api/v1/tickets", None, (401, 200, 200, 200, 200)),
    ("POST", "/api/v1/tickets", {"subject": "x", "body": "y", "customer": {"id": "c9"}}, (401, 201, 201, 201, 201)),
    ("GET", "/api/v1/tickets/{ticket}", None, (401, 200, 404, 200, 200)),
    ("PATCH", "/api/v1/tickets/{ticket}", {"priority": "low"}, (401, 403, 404, 200, 200)),
    ("PATCH", "/api/v1/tickets/{ticket}", {"message": {"body": "m"}}, (401, 200, 404, 200, 200)),
    ("POST", "/api/v1/tickets/{ticket}/messages", {"body": "m"}, (401, 201, 404, 201, 201)),
    ("POST", "/api/v1/tickets/{ticket}/messages", {"body": "m", "internal": True}, (401, 403, 404, 201, 201)),
    ("GET", "/api/v1/tickets/{ticket}/events", None, STAFF_READ),
    ("GET", "/api/v1/tickets/{ticket}/sla", None, STAFF_READ),
    ("POST", "/api/v1/tickets/{ticket}/merge", {"target_id": "{target}"}, STAFF_READ),
    ("GET", "/api/v1/tickets/{ticket}/templates/{template}", None, STAFF_READ),
    ("POST", "/api/v1/attachments", "upload", (401, 201, 201, 201, 201)),
    ("GET", "/api/v1/attachments/{attachment}", None, (401, 404, 404, 200, 200)),
    ("POST", "/api/v1/alerts/webhook", {"version": "4"}, (401, 401, 401, 401, 401)),
    ("GET", "/api/v1/audit", None, (401, 403, 403, 403, 200)),
    *crud("/api/v1/templates", "template", {"name": "n", "body": "b"}, STAFF_READ),
    *crud("/api/v1/categories", "category", {"name": "n"}, (401, 200, 200, 200, 200)),
    *crud("/api/v1/sla/calendars", "calendar", {"name": "n", "hours": {"tue": [["08:00", "12:00"]]}}, STAFF_READ),
    *crud("/api/v1/sla/policies", "policy", {"name": "n", "targets": {"first_response": 5}}, STAFF_READ),
]


def fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [pytest.param(*row, id=f"{row[0]} {row[1]} {i}") for i, row in enumerate(MATRIX)],
)
def test_access_matrix(
    client: FlaskClient, tokens: Tokens, method: str, path: str, body: Any, expected: tuple[int, ...]
) -> None:
    actual = []
    for role in ROLES:
        ids = seed(client, tokens)
        url = path.format(**ids)
        headers = {} if role == "anonymous" else auth(getattr(tokens, role))
        if body == "upload":
            response = client.open(
                url, method=method, headers=headers, data={"file": (io.BytesIO(b"hello"), "hello.txt")}
            )
        else:
            response = client.open(url, method=method, headers=headers, json=fill(body, ids))
        actual.append(response.status_code)
    assert tuple(actual) == expected, dict(zip(ROLES, actual, strict=True))
