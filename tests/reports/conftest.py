"""Fixtures for the reports service: a small demo platform database (made once), the service's own migrated
SQLite file, an app without its runner thread (tests drive the sweep), and one token per role."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from demo.business_db import generate
from demo.usage_rollups import fill
from reports_service.app import MIGRATIONS, create_app
from reports_service.settings import PlatformSettings, ReportsSection, ReportsSettings
from reports_service.storage import metadata
from service_kit.auth import create_token
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings, JobsSettings, LoggingSettings

# The demo data ends at generation time; usage rollups end at this fixed moment unless a test says otherwise.
ROLLUPS_END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def platform_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A platform database: ~270 accounts over 4 months of history, and 20,000 usage-rollup rows."""
    path = tmp_path_factory.mktemp("platform") / "platform.sqlite3"
    generate(path, 300, 4, 3, progress=False)
    url = f"sqlite:///{path}"
    fill(url, 20_000, 30, if_empty=False, end=ROLLUPS_END)
    return url


@pytest.fixture
def settings(tmp_path: Path, platform_url: str) -> ReportsSettings:
    url = f"sqlite:///{tmp_path / 'reports.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, MIGRATIONS, metadata)
    engine.dispose()
    return ReportsSettings(
        database=DatabaseSettings(url=url),
        platform=PlatformSettings(url=platform_url, query_timeout_seconds=10),
        logging=LoggingSettings(level="WARNING"),
        jobs=JobsSettings(poll_seconds=0.2),
        reports=ReportsSection(sweep_seconds=1, catch_up_limit=2, max_runs_per_sweep=5),
    )


@pytest.fixture
def app(settings: ReportsSettings) -> Flask:
    app = create_app(settings, start_jobs=False)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token_for(app: Flask) -> Callable[..., dict[str, str]]:
    """``token_for("viewer")``: Authorization headers of a new token with that role (``subject`` optional)."""

    def make(role: str, subject: str | None = None) -> dict[str, str]:
        with Session(app.extensions["database"].engine) as session:
            plain, _ = create_token(session, f"{role} token", role, subject)
            session.commit()
        return {"Authorization": f"Bearer {plain}"}

    return make


@pytest.fixture
def admin(token_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return token_for("admin", "admin-1")


@pytest.fixture
def agent(token_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return token_for("agent", "agent-1")


@pytest.fixture
def viewer(token_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return token_for("viewer", "viewer-1")


USAGE_SPEC: dict[str, Any] = {
    "source": "api_usage",
    "dimensions": ["owner"],
    "measures": ["calls", "server_errors"],
    "time_range": {"start": "2026-11-23T00:00:00Z", "end": "2026-11-30T12:00:00Z"},
    "order_by": [{"field": "calls", "descending": True}],
    "limit": 10,
}


@pytest.fixture
def create_report(client: FlaskClient, agent: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """Save a report as the agent (``headers=`` another caller); returns its JSON."""

    def make(
        spec: dict[str, Any] | None = None, headers: dict[str, str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"name": "Top customers", "spec": spec or USAGE_SPEC, **fields}
        response = client.post("/api/v1/reports", json=body, headers=headers or agent)
        assert response.status_code == 201, response.json
        created: dict[str, Any] = response.json  # type: ignore[assignment]
        return created

    return make


def with_reports(settings: ReportsSettings, **fields: Any) -> ReportsSettings:
    return replace(settings, reports=replace(settings.reports, **fields))
