from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service_kit.auth import create_token
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings, SentrySettings
from tests.service_kit.example_service import ExampleSettings, create_app


@pytest.fixture
def settings(tmp_path: Path) -> ExampleSettings:
    url = f"sqlite:///{tmp_path / 'example.sqlite3'}"
    upgrade(make_engine(url))
    return ExampleSettings(database=DatabaseSettings(url=url))


@pytest.fixture
def app(settings: ExampleSettings) -> Flask:
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_token(app: Flask):  # type: ignore[no-untyped-def]
    """Create a token with a role straight in the database; returns the plain value."""

    def make(role: str, name: str = "test") -> str:
        db = app.extensions["database"]
        with db.new_session() as session:
            plain, _ = create_token(session, name, role)
            session.commit()
        return plain

    return make


@pytest.fixture
def sentry_app(settings: ExampleSettings, sentry_sink) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """The example app reporting to the local Sentry sink through the real SDK."""
    import sentry_sdk

    sentry_sink.clear()
    configured = ExampleSettings(
        database=settings.database, sentry=SentrySettings(dsn=sentry_sink.dsn, environment="test")
    )
    app = create_app(configured)
    yield app
    sentry_sdk.get_client().close(timeout=5)  # flushes; later tests' apps report nowhere
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to a disabled client for the rest of the session
