"""The HTTP API: saved reports, per-role access, outputs, validation errors naming the field, audit."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.reports.conftest import USAGE_SPEC


def test_agent_saves_a_report_and_gets_json_rows_ordered_by_calls(
    client: FlaskClient, agent: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    report = create_report()
    assert report["owner"] == "agent-1"
    result = client.get(f"/api/v1/reports/{report['id']}/result", headers=agent)
    assert result.status_code == 200
    body = result.json
    assert [c["name"] for c in body["columns"]] == ["owner", "calls", "server_errors"]
    calls = [row[1] for row in body["rows"]]
    assert calls == sorted(calls, reverse=True) and len(calls) == 10
    assert body["range"] == {"start": "2026-11-23T00:00:00Z", "end": "2026-11-30T12:00:00Z"}


@pytest.mark.parametrize(
    ("fmt", "content_type", "magic"),
    [
        ("csv", "text/csv; charset=utf-8", b"owner,calls,server_errors\r\n"),
        ("png", "image/png", b"\x89PNG"),
        ("svg", "image/svg+xml", b"<?xml"),
        ("pdf", "application/pdf", b"%PDF"),
    ],
)
def test_a_saved_report_is_served_in_each_format(
    client: FlaskClient,
    agent: dict[str, str],
    create_report: Callable[..., dict[str, Any]],
    fmt: str,
    content_type: str,
    magic: bytes,
) -> None:
    report = create_report()
    response = client.get(f"/api/v1/reports/{report['id']}/result?format={fmt}", headers=agent)
    assert response.status_code == 200
    assert response.content_type == content_type
    assert response.data.startswith(magic)


def test_csv_matches_json_and_neutralises_formula_cells(
    client: FlaskClient, agent: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    report = create_report()
    rows = client.get(f"/api/v1/reports/{report['id']}/result", headers=agent).json["rows"]
    text = client.get(f"/api/v1/reports/{report['id']}/result?format=csv", headers=agent).text
    parsed = list(csv.reader(io.StringIO(text)))
    assert [[r[0], int(r[1]), int(r[2])] for r in parsed[1:]] == rows
    from reports_service.charts import to_csv
    from reports_service.query import Column, Result

    risky = Result((None, None), [Column("owner", "dimension")], [["=HYPERLINK(1)"], ["-2"]])  # type: ignore[arg-type]
    assert to_csv(risky).splitlines()[1:] == ["'=HYPERLINK(1)", "'-2"]


def test_viewer_sees_only_reports_shared_with_viewers_and_cannot_create(
    client: FlaskClient, viewer: dict[str, str], agent: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    private = create_report(name="private")
    shared = create_report(name="shared", shared_with=["viewer"])
    listed = client.get("/api/v1/reports", headers=viewer).json["data"]
    assert [r["id"] for r in listed] == [shared["id"]]
    assert client.get(f"/api/v1/reports/{private['id']}", headers=viewer).status_code == 404
    assert client.get(f"/api/v1/reports/{private['id']}/result", headers=viewer).status_code == 404
    assert client.get(f"/api/v1/reports/{shared['id']}/result?format=csv", headers=viewer).status_code == 200
    assert client.post("/api/v1/reports", json={"name": "x", "spec": USAGE_SPEC}, headers=viewer).status_code == 403
    assert client.post("/api/v1/query", json={"spec": USAGE_SPEC}, headers=viewer).status_code == 403
    assert client.patch(f"/api/v1/reports/{shared['id']}", json={"name": "mine"}, headers=viewer).status_code == 403


def test_another_agent_cannot_change_a_report_but_an_admin_can_and_it_is_audited(
    client: FlaskClient,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
    create_report: Callable[..., dict[str, Any]],
) -> None:
    report = create_report(shared_with=["agent"])
    other = token_for("agent", "agent-2")
    assert client.patch(f"/api/v1/reports/{report['id']}", json={"name": "x"}, headers=other).status_code == 403
    changed = client.patch(f"/api/v1/reports/{report['id']}", json={"name": "Renamed"}, headers=admin)
    assert changed.status_code == 200 and changed.json["name"] == "Renamed"
    assert client.delete(f"/api/v1/reports/{report['id']}", headers=admin).status_code == 204
    audit = client.get("/api/v1/audit?target_type=report", headers=admin).json["data"]
    assert [(a["action"], a["actor"]) for a in audit] == [
        ("report.delete", "admin-1"),
        ("report.update", "admin-1"),
        ("report.create", "agent-1"),
    ]
    assert audit[1]["before"]["name"] == "Top customers" and audit[1]["after"]["name"] == "Renamed"


def test_customers_and_anonymous_callers_get_nothing(
    client: FlaskClient, token_for: Callable[..., dict[str, str]], create_report: Callable[..., dict[str, Any]]
) -> None:
    report = create_report(shared_with=["viewer", "service", "agent"])
    assert client.get("/api/v1/reports").status_code == 401
    customer = token_for("customer", "cust-1")
    assert client.get("/api/v1/reports", headers=customer).status_code == 403
    assert client.get(f"/api/v1/reports/{report['id']}/result", headers=customer).status_code == 403
    response = client.post(
        "/api/v1/reports",
        json={"name": "x", "spec": USAGE_SPEC, "shared_with": ["customer"]},
        headers=token_for("agent"),
    )
    assert response.status_code == 422 and "shared_with[0]" in response.json["error"]["details"]


INVALID = [
    ({"source": "api_usage", "measures": ["drop table"]}, "spec.api_usage.measures[0]"),
    ({"source": "api_usage", "measures": ["calls"], "dimensions": ["plan"]}, "spec.api_usage.dimensions[0]"),
    ({"source": "nowhere", "measures": ["calls"]}, "spec"),
    ({"source": "api_usage", "measures": []}, "spec.api_usage.measures"),
    ({"source": "api_usage", "measures": ["calls"], "limit": 0}, "spec.api_usage.limit"),
    (
        {"source": "api_usage", "measures": ["calls"], "filters": [{"field": "owner; --", "values": ["a"]}]},
        "spec.api_usage.filters[0].field",
    ),
    (
        {"source": "api_usage", "measures": ["calls"], "order_by": [{"field": "refused"}]},
        "spec.api_usage",
    ),
    (
        {
            "source": "api_usage",
            "measures": ["calls"],
            "time_range": {"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        },
        "spec.api_usage.time_range",
    ),
    (
        {"source": "api_usage", "measures": ["calls"], "time_range": {"last_days": 0}},
        "spec.api_usage.time_range.last_days",
    ),
    ({"source": "retention_cohorts", "cohorts": 100}, "spec.retention_cohorts.cohorts"),
    ({"source": "api_usage", "measures": ["calls"], "surprise": 1}, "spec.api_usage.surprise"),
]


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_an_invalid_spec_is_a_422_naming_the_field(
    client: FlaskClient, agent: dict[str, str], spec: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/query", json={"spec": spec}, headers=agent)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"], response.json


def test_filter_values_are_bound_so_sql_text_in_them_only_matches_nothing(
    client: FlaskClient, agent: dict[str, str]
) -> None:
    spec = {
        **USAGE_SPEC,
        "filters": [{"field": "owner", "values": ["x' OR '1'='1", "customer-001'); DROP TABLE users; --"]}],
    }
    response = client.post("/api/v1/query", json={"spec": spec}, headers=agent)
    assert response.status_code == 200 and response.json["rows"] == []
    kept = client.post(
        "/api/v1/query",
        json={"spec": {**spec, "filters": [{"field": "owner", "values": ["customer-001"]}]}},
        headers=agent,
    )
    assert [row[0] for row in kept.json["rows"]] == ["customer-001"]


def test_body_that_is_not_json_is_415_and_a_non_object_422(client: FlaskClient, agent: dict[str, str]) -> None:
    assert client.post("/api/v1/query", data="x", content_type="text/plain", headers=agent).status_code == 415
    response = client.post("/api/v1/query", json=[1], headers=agent)
    assert response.status_code == 422 and response.json["error"]["details"] == {"body": "must be a JSON object"}


def test_catalog_lists_every_source_with_its_allow_list(client: FlaskClient, viewer: dict[str, str]) -> None:
    sources = {s["name"]: s for s in client.get("/api/v1/catalog", headers=viewer).json["sources"]}
    assert set(sources) == {"api_usage", "signups", "subscriptions", "sessions", "ai_requests", "retention_cohorts"}
    assert "calls" in [m["name"] for m in sources["api_usage"]["measures"]]


def test_openapi_document_lists_each_sources_names(client: FlaskClient) -> None:
    document = client.get("/openapi.json").json
    schemas = document["components"]["schemas"]
    assert schemas["ApiUsageSpec"]["properties"]["dimensions"]["items"]["enum"] == [
        "owner",
        "key_id",
        "tier",
        "route",
        "status_class",
    ]
    assert "text/csv" in document["paths"]["/api/v1/reports/{report_id}/result"]["get"]["responses"]["200"]["content"]
