"""The flag service through a Redis primary's SIGKILL, on Sentinel and on Cluster (own topology per test):
evaluations never fail, readiness is degraded only while Redis cannot be followed, and once a replica is
promoted a change again reaches the other replica over pub/sub, not by the database poll."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace

import pytest

from flags_service.app import create_app
from flags_service.settings import FlagsSettings, RedisSettings
from service_kit.auth import create_token
from tests.redis_topologies import PASSWORD, RedisClusterServers, RedisNode, RedisSentinelServers
from tests.servers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_flags_serve_through_a_failover_and_follow_the_new_primary(settings: FlagsSettings, topology: str) -> None:
    servers: RedisSentinelServers | RedisClusterServers
    servers = RedisSentinelServers() if topology == "sentinel" else RedisClusterServers()
    servers.start()
    redis_settings = RedisSettings(
        url=servers.url,
        password=PASSWORD,
        sentinel_password=PASSWORD if topology == "sentinel" else "",
        socket_timeout_seconds=0.5,
    )
    flags = replace(settings.flags, db_poll_seconds=300.0)  # only Redis can carry a change in time
    apps = [create_app(replace(settings, redis=redis_settings, flags=flags)) for _ in range(2)]
    writer, reader = apps
    try:
        with writer.extensions["database"].new_session() as session:
            token, _ = create_token(session, "admin", "admin")
            session.commit()
        admin = {"Authorization": f"Bearer {token}"}
        body = {"key": "checkout", "variants": {"on": True, "off": False}, "offVariant": "off"}
        assert writer.test_client().post("/api/v1/flags", json=body, headers=admin).status_code == 201
        key = {"environment": "production", "kind": "server", "name": "failover"}
        sdk_token = writer.test_client().post("/api/v1/sdk-keys", json=key, headers=admin).get_json()["token"]
        sdk = {"Authorization": f"Bearer {sdk_token}"}
        cache = reader.extensions["flags"].cache
        cache.get("production")
        wait_until(lambda: cache.redis_connected, timeout=10)

        victim: RedisNode
        if isinstance(servers, RedisSentinelServers):
            victim, successor = servers.primary, servers.replica
        else:
            victim = servers.master_of("flags:snapshot:{production}")
            successor = next(n for n in servers.nodes if n is not victim and _replica_of(n, victim))
        statuses: Counter[int] = Counter()
        readiness: list[str] = []
        stop = threading.Event()

        def read() -> None:
            client = reader.test_client()
            while not stop.is_set():
                statuses[client.get("/api/v1/sdk/snapshot", headers=sdk).status_code] += 1
                readiness.append(client.get("/readyz").get_json()["status"])
                stop.wait(0.05)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        killed_at = time.monotonic()
        victim.kill()
        wait_until(lambda: successor.role() == "master", timeout=30, interval=0.02)
        detection = time.monotonic() - killed_at
        wait_until(lambda: cache.redis_connected and readiness[-1] == "ok", timeout=10, interval=0.02)
        followed = time.monotonic() - killed_at
        stop.set()
        thread.join(5)
        assert followed <= detection + 2.0, (detection, followed)
        assert set(statuses) == {200}, statuses  # served throughout, from the database while needed

        before = cache.get("production").version
        toggle = "/api/v1/flags/checkout/environments/production/toggle"
        assert writer.test_client().post(toggle, json={"enabled": True}, headers=admin).status_code == 200
        started = time.monotonic()
        wait_until(lambda: cache.get("production").version > before, timeout=3, interval=0.01)
        assert time.monotonic() - started < 1.5  # over pub/sub on the promoted primary
    finally:
        for app in apps:
            app.extensions["flags"].recorder.close()
            app.extensions["flags"].cache.close()
        servers.close()


def _replica_of(node: RedisNode, master: RedisNode) -> bool:
    info = node.client().info("replication")
    return info["role"] == "slave" and int(info["master_port"]) == master.port
