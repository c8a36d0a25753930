"""Fixtures for the flag service: a migrated SQLite file, real Redis, tokens, SDK keys, a live server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from flags_service.app import MIGRATIONS, create_app
from flags_service.settings import FlagsSection, FlagsSettings, RedisSettings
from flags_service.storage.tables import metadata
from service_kit.auth import create_token
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings, LoggingSettings
from tests.servers import free_port


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> FlagsSettings:
    """Test settings; parametrize ``settings`` indirectly with a dict to change ``flags`` section fields."""
    url = f"sqlite:///{tmp_path / 'flags.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, MIGRATIONS, metadata)
    engine.dispose()
    return FlagsSettings(
        database=DatabaseSettings(url=url),
        redis=RedisSettings(url=redis_url, socket_timeout_seconds=0.3),
        logging=LoggingSettings(level="WARNING"),
        flags=FlagsSection(
            db_poll_seconds=0.2,
            evaluation_flush_seconds=0.2,
            stream_heartbeat_seconds=1.0,
            **getattr(request, "param", {}),
        ),
    )


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, settings: FlagsSettings) -> str:
    """SQLite by default; tests parametrized with ``indirect`` also run on a real PostgreSQL."""
    if request.param == "sqlite":
        return settings.database.url
    url: str = request.getfixturevalue("postgres_server").fresh_database("flags_app_test")
    engine = make_engine(url)
    upgrade(engine, MIGRATIONS, metadata)
    engine.dispose()
    return url


@pytest.fixture
def app(settings: FlagsSettings, database_url: str) -> Iterator[Flask]:
    app = create_app(replace(settings, database=DatabaseSettings(url=database_url)))
    app.config["TESTING"] = True
    yield app
    service = app.extensions["flags"]
    service.recorder.close()
    service.cache.close()
    app.extensions["database"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_token(app: Flask) -> Callable[[str], str]:
    def make(role: str) -> str:
        with app.extensions["database"].new_session() as session:
            plain, _ = create_token(session, f"test {role}", role, subject=f"{role}@example.com")
            session.commit()
        return plain

    return make


@pytest.fixture
def admin(make_token: Callable[[str], str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('admin')}"}


@pytest.fixture
def viewer(make_token: Callable[[str], str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('viewer')}"}


@dataclass
class SdkKeys:
    server: str
    client: str


@pytest.fixture
def sdk_keys(client: FlaskClient, admin: dict[str, str]) -> SdkKeys:
    tokens = {}
    for kind in ("server", "client"):
        response = client.post(
            "/api/v1/sdk-keys", json={"environment": "production", "kind": kind, "name": kind}, headers=admin
        )
        assert response.status_code == 201, response.json
        tokens[kind] = response.json["token"]
    return SdkKeys(**tokens)


BOOLEAN_FLAG = {"variants": {"on": True, "off": False}, "offVariant": "off"}


@pytest.fixture
def create_flag(client: FlaskClient, admin: dict[str, str]) -> Callable[..., dict]:
    def create(key: str, **fields: object) -> dict:
        response = client.post("/api/v1/flags", json={"key": key, **BOOLEAN_FLAG, **fields}, headers=admin)
        assert response.status_code == 201, response.json
        return dict(response.json)

    return create


@dataclass
class LiveServer:
    url: str
    app: Flask
    server: BaseWSGIServer


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """The app on a real port in a thread (for HTTP clients: the SDK, the OFREP provider)."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveServer(f"http://127.0.0.1:{port}", app, server)
    server.shutdown()
    thread.join(5)


def with_flags(settings: FlagsSettings, **changes: object) -> FlagsSettings:
    return replace(settings, flags=replace(settings.flags, **changes))
