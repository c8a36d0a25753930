"""The flag service on every Redis topology: snapshots cached in Redis for every environment (on a cluster
each environment's key lives on its own slot), and a change announced to another replica at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask

from flags_service.app import create_app
from flags_service.settings import FlagsSettings, RedisSettings
from tests.conftest import RedisUnderTest
from tests.servers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(settings: FlagsSettings, any_redis: RedisUnderTest) -> Iterator[tuple[Flask, Flask]]:
    """Two replicas on one database and one Redis of the topology under test."""
    redis_settings = any_redis.settings(RedisSettings, socket_timeout_seconds=1.0)
    # Polls far beyond the test's patience: only Redis can carry the change in time.
    flags = replace(settings.flags, db_poll_seconds=300.0)
    apps = [create_app(replace(settings, redis=redis_settings, flags=flags)) for _ in range(2)]
    yield apps[0], apps[1]
    for app in apps:
        app.extensions["flags"].recorder.close()
        app.extensions["flags"].cache.close()


def test_every_environment_is_cached_in_redis_and_changes_reach_the_other_replica(
    replicas: tuple[Flask, Flask], any_redis: RedisUnderTest
) -> None:
    """Cluster report: the snapshot cache only worked for the environment whose slot was on the seed node."""
    writer, reader = replicas
    from service_kit.auth import create_token

    with writer.extensions["database"].new_session() as session:
        token, _ = create_token(session, "admin", "admin")
        session.commit()
    admin = {"Authorization": f"Bearer {token}"}
    client = writer.test_client()
    body = {"key": "checkout", "variants": {"on": True, "off": False}, "offVariant": "off"}
    assert client.post("/api/v1/flags", json=body, headers=admin).status_code == 201
    environments = writer.extensions["flags"].environments
    cache = reader.extensions["flags"].cache
    cache.get("production")  # starts the listener
    wait_until(lambda: cache.redis_connected, timeout=10)
    for environment in environments:
        cache.get(environment)
    redis = any_redis.client()
    stored = {env: redis.hget(f"flags:snapshot:{{{env}}}", "version") for env in environments}
    assert all(stored.values()), stored  # every environment, whichever node owns its slot

    before = cache.get("production").version
    toggled = client.post(
        "/api/v1/flags/checkout/environments/production/toggle", json={"enabled": True}, headers=admin
    )
    assert toggled.status_code == 200, toggled.get_json()
    started = time.monotonic()
    wait_until(lambda: cache.get("production").version > before, timeout=3, interval=0.01)
    assert time.monotonic() - started < 1.5  # announced over pub/sub: the database poll is 300 s away
    readiness = reader.test_client().get("/readyz").get_json()
    assert readiness["status"] == "ok" and readiness["checks"]["redis"]["status"] == "ok"
