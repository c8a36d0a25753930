"""The reports service times statements on both its engines with the kit's hook (service_kit/statements.py)."""

from __future__ import annotations

from flask import Flask

from tests.service_kit.service_statements import assert_readiness_probe_counted, statement_series


def test_reports_statements_are_counted_on_its_own_and_the_platform_database(app: Flask) -> None:
    assert_readiness_probe_counted(app)
    app.extensions["jobs"].run_due()  # the usage summary reads and writes the platform database
    assert sum(statement_series(app, "platform").values()) > 0
