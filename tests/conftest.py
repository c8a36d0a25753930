"""Session-wide real servers shared by every area's tests (see tests/servers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import AlertmanagerServer, PostgresServer, RedisServer, SentrySink, free_port

__all__ = ["free_port"]

MINIMAL_ALERTMANAGER = {
    "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
    "receivers": [{"name": "null"}],
}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean Redis for one test; restarts the shared server if an earlier test stopped it."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def alertmanager_server() -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer(MINIMAL_ALERTMANAGER)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def sentry_sink() -> Iterator[SentrySink]:
    sink = SentrySink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.close()
