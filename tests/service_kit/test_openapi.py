"""The kit's API declaration: one pydantic model validates a body and documents it in /openapi.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.schema_fuzz import fuzz, served


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    return body["error"]


def test_document_is_openapi_3_1_with_the_kits_and_the_services_operations(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    assert {"/items", "/items/{item_id}", "/admin/greeting", "/api/v1/audit"} <= document["paths"].keys()
    assert "/boom" not in document["paths"]  # undeclared views stay out (strict mode)
    create = document["paths"]["/items"]["post"]
    body = document["components"]["schemas"]["NewItem"]
    assert body["properties"]["name"]["maxLength"] == 200
    assert body["additionalProperties"] is False
    assert {"201", "413", "415", "422"} <= create["responses"].keys()
    assert document["paths"]["/admin/greeting"]["post"]["security"] == [{"bearer": []}]
    assert {"401", "403"} <= document["paths"]["/admin/greeting"]["post"]["responses"].keys()
    item_id = document["paths"]["/items/{item_id}"]["get"]["parameters"][0]["schema"]
    assert item_id == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    assert "404" in document["paths"]["/items/{item_id}"]["get"]["responses"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "details"),
    [
        (b"[1, 2]", "application/json", 422, {"body": "must be a JSON object"}),
        (b"{not json", "application/json", 422, {"body": "must be a JSON object"}),
        (b'{"name": "a\\u0000b"}', "application/json", 422, {"name": "must not contain NUL characters"}),
        (b'{"name": "ok", "colour": "red"}', "application/json", 422, {"colour": "Extra inputs are not permitted"}),
        (b'{"name": 7}', "application/json", 422, {"name": "Input should be a valid string"}),
        (b"name=x", "application/x-www-form-urlencoded", 415, {}),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    client: FlaskClient, body: bytes, content_type: str, status: int, details: dict[str, str]
) -> None:
    response = client.post("/items", data=body, content_type=content_type)
    assert response.status_code == status
    assert error_of(response)["details"] == details


def test_an_id_beyond_an_integer_column_is_a_404_not_an_overflow(client: FlaskClient) -> None:
    assert client.get(f"/items/{2**31}").status_code == 404  # PostgreSQL would refuse to compare it
    assert client.get(f"/items/{2**63}").status_code == 404
    assert client.get("/items/1").get_json() == {"id": 1, "name": "first"}


def test_audit_query_is_validated_by_its_model(client: FlaskClient, make_token: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('admin')}"}
    response = client.get("/api/v1/audit?limit=500", headers=headers)
    assert response.status_code == 422
    assert error_of(response)["details"] == {"limit": "Input should be less than or equal to 200"}
    assert client.get("/api/v1/audit?limit=5", headers=headers).status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(300)  # one to two minutes here; CI runs two test files at once on two cores
@pytest.mark.integration
def test_schemathesis_finds_nothing_in_the_example_service(app: Flask, make_token: Any, tmp_path: Path) -> None:
    with served(app) as url:
        report = fuzz(url, tmp_path, headers={"Authorization": f"Bearer {make_token('admin')}"})
    assert report.failures == [], report.output[-3000:]
    assert report.operations == 9 and report.cases > 50, report.output[-2000:]
