"""Fixtures for the flag service: a migrated SQLite file, real Redis, tokens, SDK keys, a live server."""

from __future__ import annotations

import subprocess
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
from flags_service.storage import metadata
from service_kit.auth import create_token
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings, LoggingSettings
from tests.servers import free_port, port_open, wait_until


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> FlagsSettings:
    url = f"sqlite:///{tmp_path / 'flags.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, MIGRATIONS, metadata)
    engine.dispose()
    return FlagsSettings(
        database=DatabaseSettings(url=url),
        redis=RedisSettings(url=redis_url, socket_timeout_seconds=0.3),
        logging=LoggingSettings(level="WARNING"),
        flags=FlagsSection(db_poll_seconds=0.2, evaluation_flush_seconds=0.2, stream_heartbeat_seconds=1.0),
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


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free port (initdb + postgres), run as the ``postgres`` user
    when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        import os
        import shutil
        import tempfile

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vibelux-pg-"))
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not binaries:
            raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql")
        self.bindir = binaries[-1]
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.process: subprocess.Popen[bytes] | None = None
        self.created = 0

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        data = self.dir / "data"
        subprocess.run(
            [*self.as_user, str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        self.process = subprocess.Popen(
            [*self.as_user, str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.dir), "-c", "fsync=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), timeout=30)

    def fresh_database(self, prefix: str) -> str:
        """A new, empty database (a new name each time: an earlier test's pool may still be connected)."""
        import sqlalchemy

        self.created += 1
        name = f"{prefix}_{self.created}"
        engine = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        import shutil

        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.close()
