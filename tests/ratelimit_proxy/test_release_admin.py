"""Admin routes of the colours and releases: bodies refused with a 422 naming the field, the admin role,
the audit log, the OpenAPI document derived from the same models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.settings import PoolSettings, ProxySettings, UpstreamSettings
from service_kit.settings import DatabaseSettings
from tests.ratelimit_proxy.conftest import admin_token

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings
) -> tuple[FlaskClient, dict[str, str], str]:
    pools = [PoolSettings("blue", "http://127.0.0.1:9", 100), PoolSettings("green", "http://127.0.0.1:10", 0)]
    settings = settings_for(database=database, upstream=UpstreamSettings(pools=pools))
    app = create_admin_app(settings)
    return app.test_client(), {"Authorization": f"Bearer {admin_token(database.url)}"}, database.url


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/v1/upstreams/weights", {"weights": {"purple": 5}}, 404, "weights.purple"),
        ("/api/v1/upstreams/weights", {"weights": {"blue": -1}}, 422, "weights.blue"),
        ("/api/v1/upstreams/weights", {"weights": {"Blue!": 1}}, 422, "weights.Blue!"),
        ("/api/v1/upstreams/weights", {"weights": {"blue": "5"}}, 422, "weights.blue"),
        ("/api/v1/upstreams/weights", {"weights": {}}, 422, "weights"),
        ("/api/v1/upstreams/weights", {"weights": {"blue": 0, "green": 0}}, 422, "weights"),
        ("/api/v1/upstreams/weights", {"weights": {"blue": 1}, "extra": 1}, 422, "extra"),
        ("/api/v1/releases", {"to": "purple"}, 404, "to"),
        ("/api/v1/releases", {"to": "blue"}, 409, "to"),
        ("/api/v1/releases", {"to": 5}, 422, "to"),
        ("/api/v1/releases", {"to": "green", "from": "purple"}, 404, "from"),
        ("/api/v1/releases", {}, 422, "to"),
    ],
)
def test_release_admin_bad_body_is_a_4xx_naming_the_field(
    admin: tuple[FlaskClient, dict[str, str], str], path: str, body: dict[str, Any], status: int, field: str
) -> None:
    """422: the document refuses it too; 404/409: valid by the document, but no such colour, or no move."""
    client, headers, _ = admin
    method = client.put if path.endswith("weights") else client.post
    answer = method(path, json=body, headers=headers)
    assert answer.status_code == status, answer.json
    details = answer.json["error"]["details"]
    assert any(key == field or key.startswith(field + ".") for key in details), details


def test_release_admin_needs_the_admin_role(admin: tuple[FlaskClient, dict[str, str], str]) -> None:
    client, _, url = admin
    viewer = {"Authorization": f"Bearer {admin_token(url, role='viewer')}"}
    assert client.get("/api/v1/upstreams", headers=viewer).status_code == 403
    assert client.post("/api/v1/releases", json={"to": "green"}, headers=viewer).status_code == 403
    assert client.get("/api/v1/releases/current").status_code == 401


def test_release_admin_weights_are_stored_audited_and_shown(admin: tuple[FlaskClient, dict[str, str], str]) -> None:
    client, headers, _ = admin
    answer = client.put("/api/v1/upstreams/weights", json={"weights": {"blue": 75, "green": 25}}, headers=headers)
    assert answer.status_code == 200, answer.json
    shown = client.get("/api/v1/upstreams", headers=headers).json
    assert {p["name"]: p["weight"] for p in shown["pools"]} == {"blue": 75, "green": 25}
    assert shown["version"] >= 1
    audit = client.get("/api/v1/audit", headers=headers).json["data"]
    assert audit[0]["action"] == "pools.weights"
    metrics = client.get("/metrics").text
    assert 'release_traffic_weight{colour="green"} 25.0' in metrics


def test_release_admin_start_then_conflict_then_abort(admin: tuple[FlaskClient, dict[str, str], str]) -> None:
    client, headers, _ = admin
    assert client.get("/api/v1/releases/current", headers=headers).status_code == 404
    assert client.post("/api/v1/releases/current/pause", headers=headers).status_code == 409
    started = client.post("/api/v1/releases", json={"to": "green"}, headers=headers)
    assert started.status_code == 201, started.json
    assert started.json["from"] == "blue" and started.json["status"] == "gating"
    assert client.post("/api/v1/releases", json={"to": "green"}, headers=headers).status_code == 409
    assert client.post("/api/v1/releases/current/resume", headers=headers).status_code == 409  # not paused
    assert client.post("/api/v1/releases/current/abort", headers=headers).status_code == 202
    assert client.post("/api/v1/releases/current/rewind", headers=headers).status_code == 404
    actions = [r["action"] for r in client.get("/api/v1/audit", headers=headers).json["data"]]
    assert {"release.start", "release.abort"} <= set(actions)


def test_release_admin_routes_are_in_the_openapi_document(admin: tuple[FlaskClient, dict[str, str], str]) -> None:
    client, _, _ = admin
    document = client.get("/openapi.json").json
    assert {"/api/v1/upstreams", "/api/v1/upstreams/weights", "/api/v1/releases"} <= set(document["paths"])
    body = document["paths"]["/api/v1/releases"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body
