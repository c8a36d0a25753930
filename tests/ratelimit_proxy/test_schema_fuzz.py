"""schemathesis against the real admin app (its own /openapi.json) on a real Redis, with an admin token."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.settings import ProxySettings, UsageSettings
from ratelimit_proxy.usage import RouteTemplates, UsageRollups
from service_kit.settings import DatabaseSettings
from tests.ratelimit_proxy.conftest import admin_token
from tests.schema_fuzz import fuzz, served

pytestmark = pytest.mark.integration


@pytest.mark.slow
@pytest.mark.timeout(300)  # one to two minutes here; CI runs two test files at once on two cores
def test_schemathesis_finds_nothing_in_the_admin_api(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings, tmp_path: Path
) -> None:
    # With usage analytics on a SQLite platform database that holds one rollup row.
    sqlite3.connect(tmp_path / "platform.sqlite3").close()
    platform = f"sqlite:///{tmp_path / 'platform.sqlite3'}"
    settings = settings_for(database=database, usage=UsageSettings(database_url=platform))
    rollups = UsageRollups(settings.usage, RouteTemplates(["/api/*"]), ProxyMetrics(CollectorRegistry()))
    rollups.record("key-a", "free", "acme", "/api/x", 200, 3.0, False)
    rollups.close()
    # As admin_wsgi serves it: with a config file to reload (here the same settings again).
    app = create_admin_app(settings, reload=lambda: dataclasses.replace(settings))
    headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
    try:
        with served(app) as url:
            report = fuzz(url, tmp_path, headers=headers)
    finally:
        app.extensions["ratelimit_proxy"].close()
    assert report.failures == [], "\n".join(report.failures)
    # twenty operations of the proxy (two of them the cache's purges, five the colours' and releases'), and
    # the kit's audit log and tokens
    assert report.operations == 24 and report.cases > 450, report.output[-2000:]
