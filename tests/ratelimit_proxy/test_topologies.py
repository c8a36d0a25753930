"""The proxy on every Redis topology (one server, Sentinel, a 3-master Cluster): the reproductions of the
cluster report, each run on all three. Admin writes, bans, the CLI and limits for clients in every slot."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.limiter import Limit
from ratelimit_proxy.limiter_storage import counter_key
from ratelimit_proxy.settings import ClientSettings, ProxySettings, RedisSettings
from service_kit.settings import DatabaseSettings
from tests.conftest import RedisUnderTest
from tests.ratelimit_proxy.conftest import ROOT, Upstream, build_settings
from tests.ratelimit_proxy.test_admin_abuse import admin_token
from tests.redis_topologies import RedisClusterServers
from tests.servers import wait_until

pytestmark = pytest.mark.integration
TRUSTED = ClientSettings(trusted_proxies=["127.0.0.1/32"], max_header_bytes=4096)


def settings_on(redis_under_test: RedisUnderTest, upstream: Upstream, **sections: object) -> ProxySettings:
    redis_settings = redis_under_test.settings(
        RedisSettings, timeout_ms=1000, breaker_reset_seconds=0.5, ban_refresh_seconds=0.2
    )
    return dataclasses.replace(build_settings(upstream.url), redis=redis_settings, **sections)  # type: ignore[arg-type]


@pytest.fixture
def proxy_and_admin(
    any_redis: RedisUnderTest, upstream: Upstream, tmp_path: Path
) -> tuple[Flask, FlaskClient, dict[str, str]]:
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'proxy.sqlite3'}")
    settings = settings_on(any_redis, upstream, database=database, clients=TRUSTED)
    proxy = create_app(settings)
    admin = create_admin_app(settings)  # its own runtime on the same Redis, as in production
    yield proxy, admin.test_client(), {"Authorization": f"Bearer {admin_token(database.url)}"}
    proxy.extensions["ratelimit_proxy"].close()


def test_admin_key_writes_succeed_and_the_key_is_enforced(proxy_and_admin: tuple) -> None:
    """Cluster report: POST /api/v1/keys was a 500 (MOVED: record and index in one MULTI, two slots)."""
    proxy, admin, headers = proxy_and_admin
    created = admin.post("/api/v1/keys", json={"tier": "free", "owner": "acme"}, headers=headers)
    assert created.status_code == 201, created.get_json()
    api_key, key_id = created.get_json()["key"], created.get_json()["key_id"]
    assert [k["key_id"] for k in admin.get("/api/v1/keys", headers=headers).get_json()["data"]] == [key_id]
    client = proxy.test_client()
    statuses = Counter(client.get("/api/v1/users", headers={"X-API-Key": api_key}).status_code for _ in range(8))
    assert statuses == {200: 5, 429: 3}  # the free tier's burst of 5
    assert admin.patch(f"/api/v1/keys/{key_id}", json={"tier": "enterprise"}, headers=headers).status_code == 200
    assert admin.delete(f"/api/v1/keys/{key_id}", headers=headers).status_code == 204  # one slot: one MULTI
    assert admin.get("/api/v1/keys", headers=headers).get_json()["data"] == []
    assert admin.post("/api/v1/reload", headers=headers).status_code == 422  # no config file: named, not a 500


def test_two_bans_are_listed_enforced_and_counted(proxy_and_admin: tuple) -> None:
    """Cluster report: creating a ban was a 500 (CROSSSLOT); with two, MGET failed, the second was never
    enforced, and GET /bans and /metrics were 500s."""
    proxy, admin, headers = proxy_and_admin
    for network in ("203.0.113.0/24", "198.51.100.7"):
        assert admin.post("/api/v1/bans", json={"network": network}, headers=headers).status_code == 201
    listed = admin.get("/api/v1/bans", headers=headers)
    assert listed.status_code == 200
    assert sorted(b["network"] for b in listed.get_json()["data"]) == ["198.51.100.7/32", "203.0.113.0/24"]
    metrics = admin.get("/metrics")
    assert metrics.status_code == 200 and "\nratelimit_active_bans 2.0\n" in metrics.get_data(as_text=True)
    client = proxy.test_client()
    proxy.extensions["ratelimit_proxy"].bans.refresh()
    for ip in ("203.0.113.9", "198.51.100.7"):
        assert client.get("/api/v1/users", headers={"X-Forwarded-For": ip}).status_code == 403, ip
    assert client.get("/api/v1/users", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 200
    assert admin.delete("/api/v1/bans/198.51.100.7", headers=headers).status_code == 200
    assert admin.get("/readyz").get_json()["status"] == "ok"


def test_every_client_is_limited_whichever_slot_its_counters_are_in(
    proxy_and_admin: tuple, any_redis: RedisUnderTest, request: pytest.FixtureRequest
) -> None:
    """Cluster report: clients whose counters hashed to another node were served with no limits and no
    headers (264 of 264), and three MOVED errors opened the breaker for everyone."""
    proxy, _, _ = proxy_and_admin
    client = proxy.test_client()
    ips = [f"198.51.100.{i}" for i in range(1, 31)]
    for ip in ips:
        responses = [client.get("/api/v1/users", headers={"X-Forwarded-For": ip}) for _ in range(7)]
        assert [r.status_code for r in responses] == [200] * 5 + [429] * 2, ip
        assert all("RateLimit" in r.headers for r in responses), ip
    runtime = proxy.extensions["ratelimit_proxy"]
    assert not runtime.breaker.is_open and runtime.open_circuits() == []
    if any_redis.topology == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        owners = {cluster.master_of(counter_key(f"ip:{ip}", Limit("burst", 1, 1))).port for ip in ips}
        assert len(owners) == 3  # the clients really were spread over every master


@pytest.mark.slow
def test_the_cli_creates_keys_on_any_topology(any_redis: RedisUnderTest, upstream: Upstream, tmp_path: Path) -> None:
    """Cluster report: ``vibelux-proxy keys create`` failed like the admin API; Sentinel: check-config passed,
    then start-up crashed on the URL."""
    config = tmp_path / "proxy.yml"
    config.write_text(
        yaml.safe_dump({"redis": {"url": any_redis.url}, "database": {"url": f"sqlite:///{tmp_path / 'p.sqlite3'}"}})
    )
    env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(config), **any_redis.environment("RATELIMIT_PROXY")}
    cli = str(ROOT / ".venv/bin/vibelux-proxy")
    check = subprocess.run([cli, "check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    created = subprocess.run(
        [cli, "keys", "create", "--tier", "free", "--owner", "cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert created.returncode == 0, created.stderr
    listed = subprocess.run([cli, "keys", "list"], env=env, capture_output=True, text=True, timeout=60)
    created_at = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$"
    assert re.search(rf"\tfree\tactive\tstore\tcli\t{created_at}", listed.stdout, re.M), listed.stdout
    ban = [cli, "bans", "add", "198.51.100.7", "--seconds", "60"]
    assert subprocess.run(ban, env=env, capture_output=True, timeout=60).returncode == 0
    bans = subprocess.run([cli, "bans", "list"], env=env, capture_output=True, text=True, timeout=60)
    until = datetime.strptime(bans.stdout.split("until ")[1].strip(), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    assert 0 < (until - datetime.now(UTC)).total_seconds() <= 61  # a readable time, not epoch seconds


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/1", "db 0 on a Redis Cluster"),
        ("redis+sentinel://127.0.0.1:26379", "MASTER_NAME"),
        ("redis://:secret@127.0.0.1:6379/0", "without a password"),
        ("http://127.0.0.1:6379", "a URL starting with redis://"),
    ],
)
def test_a_redis_url_that_cannot_work_stops_start_up_with_one_line(url: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "proxy.yml"
    config.write_text(yaml.safe_dump({"redis": {"url": url}}))
    env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(config)}
    check = subprocess.run(
        [str(ROOT / ".venv/bin/vibelux-proxy"), "check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode != 0
    lines = check.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis.url" in lines[0] and str(config) in lines[0] and message in lines[0], lines
    assert "secret" not in check.stderr


def test_keys_and_bans_of_the_old_layout_move_to_the_cluster_safe_one(
    redis_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """Upgrading on one server keeps every API key and ban written by the earlier version."""
    old = redis.Redis.from_url(redis_url, decode_responses=True)
    old.hset("rl:key:" + "a" * 64, mapping={"tier": "free", "owner": "legacy", "status": "active", "created_at": 1})
    old.sadd("rl:keys", "a" * 64)
    ban = {"network": "203.0.113.0/24", "reason": "old", "source": "manual", "created_at": 1.0, "expires_at": 4e9}
    old.zadd("rl:bans", {"203.0.113.0/24": 4e9})
    old.set("rl:ban:203.0.113.0/24", json.dumps(ban))
    runtime = create_app(build_settings(upstream.url, redis_url)).extensions["ratelimit_proxy"]
    try:
        assert [r.owner for r in runtime.store.list_keys()] == ["legacy"]
        assert [b.network for b in runtime.bans.active()] == ["203.0.113.0/24"]
        assert not old.exists("rl:keys", "rl:bans", "rl:key:" + "a" * 64)
    finally:
        runtime.close()


def test_a_tier_reload_reaches_another_process_on_any_topology(
    any_redis: RedisUnderTest, upstream: Upstream, tmp_path: Path
) -> None:
    """POST /api/v1/reload in the admin process: the proxy (its own runtime, as another process would have)
    hears the announcement and reads its tier file again before its next request."""
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'proxy.sqlite3'}")
    settings = settings_on(any_redis, upstream, database=database)
    free = dataclasses.replace(settings.limits.tiers["free"], per_minute=7)
    changed = dataclasses.replace(
        settings, limits=dataclasses.replace(settings.limits, tiers={**settings.limits.tiers, "free": free})
    )
    proxy = create_app(settings, reload=lambda: changed)
    admin = create_admin_app(settings, reload=lambda: changed).test_client()
    client = proxy.test_client()
    try:
        assert '"minute";q=20' in client.get("/api/v1/users").headers["RateLimit-Policy"]
        headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
        assert admin.post("/api/v1/reload", headers=headers).status_code == 200
        wait_until(lambda: '"minute";q=7' in client.get("/api/v1/users").headers["RateLimit-Policy"], timeout=3)
    finally:
        proxy.extensions["ratelimit_proxy"].close()
