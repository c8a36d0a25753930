"""What each service's test checks about the kit's statement timer (tests/<area>/test_statement_metrics.py)."""

from __future__ import annotations

from flask import Flask

from service_kit import sqltext


def statement_series(app: Flask, database: str) -> dict[str, float]:
    """Statements counted for one engine of the app, by fingerprint."""
    registry = app.extensions["service_kit"].metrics.registry
    return {
        sample.labels["fingerprint"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "db_statement_duration_seconds_count" and sample.labels["database"] == database
    }


def assert_readiness_probe_counted(app: Flask) -> None:
    """/readyz pings the service's database with SELECT 1: that statement is counted under the service."""
    before = statement_series(app, "service").get(sqltext.fingerprint("SELECT 1"), 0.0)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert statement_series(app, "service")[sqltext.fingerprint("SELECT 1")] >= before + 1
