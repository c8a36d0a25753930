"""Session-wide real servers shared by every area's tests (see tests/servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from service_kit.redis_connect import AnyRedis, RedisConnection, connect
from tests.redis_topologies import PASSWORD, RedisClusterServers, RedisSentinelServers
from tests.servers import (
    AlertmanagerServer,
    PostgresServer,
    RedisServer,
    SeaweedS3Server,
    SentrySink,
    free_port,
)

__all__ = ["free_port"]
TOPOLOGIES = ["standalone", "sentinel", "cluster"]
T = TypeVar("T", bound=RedisConnection)

MINIMAL_ALERTMANAGER = {
    "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
    "receivers": [{"name": "null"}],
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files holding a ``slow`` test run first. ``make test`` deals whole files to its pytest-xdist
    workers in collection order, so a long file dealt last would leave the other worker idle while it runs."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3Server]:
    """One S3 object store (HTTPS) for the session; each test writes under its own prefix."""
    server = SeaweedS3Server()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """Three masters with a replica each (shared: tests must not kill its nodes; see test_failover)."""
    cluster = RedisClusterServers()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelServers]:
    servers = RedisSentinelServers()
    servers.start()
    yield servers
    servers.close()


@dataclass
class RedisUnderTest:
    """One topology as services see it: the URL and password their settings take."""

    topology: str
    url: str
    password: str
    flush: Callable[[], None]

    @property
    def sentinel_password(self) -> str:
        return self.password if self.topology == "sentinel" else ""

    @property
    def connection(self) -> RedisConnection:
        return RedisConnection(url=self.url, password=self.password, sentinel_password=self.sentinel_password)

    def settings(self, cls: type[T], **fields: object) -> T:
        """A service's ``redis`` section (a RedisConnection subclass) for this topology, with ``fields``."""
        connection = self.connection
        return cls(
            url=connection.url,
            password=connection.password,
            sentinel_password=connection.sentinel_password,
            **fields,
        )

    def client(self, decode_responses: bool = False) -> AnyRedis:
        return connect(self.connection, timeout_seconds=2.0, decode_responses=decode_responses)

    def environment(self, prefix: str) -> dict[str, str]:
        """The variables a service process takes the password from."""
        variables = {
            f"{prefix}_REDIS__PASSWORD": self.password,
            f"{prefix}_REDIS__SENTINEL_PASSWORD": self.sentinel_password,
        }
        return {name: value for name, value in variables.items() if value}


def redis_under_test(request: pytest.FixtureRequest, topology: str) -> RedisUnderTest:
    """A clean Redis of ``topology`` for one test."""
    if topology == "standalone":
        url = request.getfixturevalue("redis_url")
        server = request.getfixturevalue("redis_server")
        return RedisUnderTest(topology, url, "", server.flush)
    servers = request.getfixturevalue("redis_cluster" if topology == "cluster" else "redis_sentinel")
    servers.flush()
    return RedisUnderTest(topology, servers.url, PASSWORD, servers.flush)


@pytest.fixture(params=[pytest.param(t, marks=pytest.mark.integration) for t in TOPOLOGIES])
def any_redis(request: pytest.FixtureRequest) -> RedisUnderTest:
    """The test runs once per topology: one server, Sentinel, Cluster."""
    return redis_under_test(request, request.param)
