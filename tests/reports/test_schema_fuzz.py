"""schemathesis against the real reports service (its own ``/openapi.json``, every check and phase, the
fixed seed) with an admin token: no 500s, and every response as documented."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.reports.conftest import USAGE_SPEC
from tests.schema_fuzz import fuzz, served

# Requests valid by the schema that the service may still refuse, each for a rule a JSON Schema cannot state:
# - 422: a spec's cross-field rules (a time range's start before its end, order_by naming a selected
#   column, no repeated names), a cron expression or time zone croniter and zoneinfo do not know, a
#   report past the query time limit;
# - 404: a report id the generator made up for a schedule.
CONFIG = """
[[operations]]
include-path-regex = "^/api/v1/(query|reports|schedules)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_schemathesis_finds_nothing_in_the_reports_service(
    app: Flask, admin: dict[str, str], create_report: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    report = create_report(USAGE_SPEC, headers=admin)
    client = app.test_client()
    client.post(
        "/api/v1/schedules",
        json={"report_id": report["id"], "cron": "0 7 * * 1", "recipients": ["ops@example.com"]},
        headers=admin,
    )
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    with served(app) as url:
        result = fuzz(url, tmp_path, headers=admin, max_examples=10, timeout=1100)
    assert result.failures == [], "\n".join(result.failures)[:8000]
    assert result.operations >= 15
    assert result.cases > 100, result.output[-2000:]
