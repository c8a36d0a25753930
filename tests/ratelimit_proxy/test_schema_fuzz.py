"""schemathesis against the real admin app (its own /openapi.json) on a real Redis, with an admin token."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.settings import ProxySettings
from service_kit.settings import DatabaseSettings
from tests.ratelimit_proxy.conftest import admin_token
from tests.schema_fuzz import fuzz, served

pytestmark = pytest.mark.integration


def test_schemathesis_finds_nothing_in_the_admin_api(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings, tmp_path: Path
) -> None:
    settings = settings_for(database=database)
    # As admin_wsgi serves it: with a config file to reload (here the same settings again).
    app = create_admin_app(settings, reload=lambda: dataclasses.replace(settings))
    headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
    try:
        with served(app) as url:
            report = fuzz(url, tmp_path, headers=headers)
    finally:
        app.extensions["ratelimit_proxy"].close()
    assert report.failures == [], "\n".join(report.failures)
    # ten operations of the proxy, and the kit's audit log and tokens
    assert report.operations == 14 and report.cases > 400, report.output[-2000:]
