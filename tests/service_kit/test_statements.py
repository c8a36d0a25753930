"""The kit's statement timer on a real SQLite database: counts, bounded labels, and logs without values."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from service_kit import sqltext
from service_kit.config import ConfigError, load_settings
from service_kit.db import current_db
from service_kit.statements import FingerprintCap
from tests.service_kit.example_service import ExampleSettings, create_app

SECRET = "vbx_live_parameter_value_0042"


def registry_of(app: Flask) -> CollectorRegistry:
    registry: CollectorRegistry = app.extensions["service_kit"].metrics.registry
    return registry


def statement_count(app: Flask, sql: str, database: str = "service") -> float:
    labels = {
        "service": "example",
        "database": database,
        "fingerprint": sqltext.fingerprint(sql),
        "statement_type": sqltext.statement_type(sql),
    }
    return registry_of(app).get_sample_value("db_statement_duration_seconds_count", labels) or 0.0


def app_with(settings: ExampleSettings, **database: object) -> Flask:
    return create_app(replace(settings, database=replace(settings.database, **database)))  # type: ignore[arg-type]


def test_the_histogram_counts_each_statement_the_service_runs(settings: ExampleSettings) -> None:
    app = app_with(settings)
    with app.app_context():
        for value in range(5):
            current_db().session.execute(text("SELECT :value AS five"), {"value": value})
        current_db().session.execute(text("SELECT 1 AS other_shape"))
    assert statement_count(app, "SELECT ? AS five") == 5
    assert statement_count(app, "SELECT 1 AS other_shape") == 1


def test_slow_statements_are_logged_with_fingerprint_and_duration_never_the_values(
    settings: ExampleSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_with(settings, slow_statement_seconds=1e-9)  # every statement is slow
    capsys.readouterr()
    with app.app_context():
        session = current_db().session
        session.execute(text("CREATE TABLE secrets (value TEXT)"))
        session.execute(text("INSERT INTO secrets (value) VALUES (:value)"), {"value": SECRET})
        session.execute(text(f"SELECT count(*) FROM secrets WHERE value = '{SECRET}'"))  # a literal, too
        session.commit()
    output = capsys.readouterr().out
    assert SECRET not in output
    lines = [json.loads(line) for line in output.splitlines() if '"slow statement' in line]
    insert = [line for line in lines if line["statement_type"] == "insert"]
    assert insert, output
    assert insert[0]["fingerprint"] == sqltext.fingerprint("INSERT INTO secrets (value) VALUES (?)")
    assert insert[0]["duration_seconds"] > 0
    assert insert[0]["statement"] == "insert into secrets (value) values (?)"


def test_fast_statements_are_not_logged(settings: ExampleSettings, capsys: pytest.CaptureFixture[str]) -> None:
    app = app_with(settings, slow_statement_seconds=60)
    capsys.readouterr()
    with app.app_context():
        current_db().session.execute(text("SELECT 1"))
    assert "slow statement" not in capsys.readouterr().out


def test_fingerprint_labels_stop_at_the_cap_and_the_rest_are_other(settings: ExampleSettings) -> None:
    app = app_with(settings, statement_fingerprints=3)
    with app.app_context():
        for shape in range(12):
            current_db().session.execute(text(f"SELECT 1 AS column_{shape}"))
    fingerprints = {
        sample.labels["fingerprint"]
        for family in registry_of(app).collect()
        for sample in family.samples
        if sample.name == "db_statement_duration_seconds_count"
    }
    assert len(fingerprints - {sqltext.OTHER}) == 3
    other = {"service": "example", "database": "service", "fingerprint": "other", "statement_type": "select"}
    assert registry_of(app).get_sample_value("db_statement_duration_seconds_count", other) == 9


def test_the_cap_admits_a_fingerprint_once_and_then_always() -> None:
    cap = FingerprintCap(2)
    assert [cap.label(f) for f in ["a", "b", "c", "a", "b", "c"]] == ["a", "b", "other", "a", "b", "other"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("EXAMPLE_DATABASE__STATEMENT_FINGERPRINTS", "0"), ("EXAMPLE_DATABASE__SLOW_STATEMENT_SECONDS", "-1")],
)
def test_database_settings_refuse_a_cap_or_threshold_out_of_range(variable: str, value: str) -> None:
    key = variable.removeprefix("EXAMPLE_").lower().replace("__", ".")
    with pytest.raises(ConfigError, match=key):
        load_settings(ExampleSettings, None, "EXAMPLE", {variable: value})
