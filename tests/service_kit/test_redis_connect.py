"""service_kit.redis_connect: what a Redis URL says, and a real TLS Redis with an ACL user."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ratelimit_proxy.limiter import Limit
from ratelimit_proxy.limiter_storage import RedisLimiter
from service_kit.redis_connect import REDIS_ERRORS, RedisConnection, connect, parse_redis_url
from tests.ratelimit_proxy.test_forward import self_signed
from tests.servers import ManagedProcess


@pytest.mark.parametrize(
    ("url", "topology", "addresses", "db", "tls", "master"),
    [
        ("redis://127.0.0.1:6379/0", "standalone", (("127.0.0.1", 6379),), 0, False, ""),
        ("rediss://cache.internal/2", "standalone", (("cache.internal", 6379),), 2, True, ""),
        ("redis+sentinel://s1:26379,s2,[::1]:26380/vibelux/1", "sentinel",
         (("s1", 26379), ("s2", 26379), ("::1", 26380)), 1, False, "vibelux"),
        ("rediss+cluster://n1:7000,n2:7001", "cluster", (("n1", 7000), ("n2", 7001)), 0, True, ""),
    ],
)  # fmt: skip
def test_the_url_names_topology_addresses_database_and_tls(
    url: str, topology: str, addresses: tuple, db: int, tls: bool, master: str
) -> None:
    target = parse_redis_url(url)
    assert (target.topology, target.addresses, target.db, target.tls, target.master_name) == (
        topology,
        addresses,
        db,
        tls,
        master,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://n1:7000/3", "db 0 on a Redis Cluster"),
        ("redis+sentinel://s1:26379", "MASTER_NAME"),
        ("redis://user:pw@h:6379/0", "without a password"),
        ("redis+cluster://n1:70000", "host:port"),
        ("memcached://h", "a URL starting with redis://"),
    ],
)
def test_a_url_that_cannot_work_says_what_was_expected(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_redis_url(url)


class TlsRedis(ManagedProcess):
    """redis-server on TLS only, its default user off and one ACL user, with a self-signed certificate."""

    name = "redis-tls"

    def __init__(self) -> None:
        super().__init__()
        self.password = secrets.token_urlsafe(16)
        self.cert, self.key = self_signed(self.workdir)

    def command(self) -> list[str]:
        return [
            "redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.cert),
            "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--user", "default", "off", "--user", "limiter", "on", f">{self.password}", "~rl:*", "&*", "+@all",
        ]  # fmt: skip


@pytest.fixture
def tls_redis() -> Iterator[TlsRedis]:
    server = TlsRedis()
    server.start()
    yield server
    server.close()


@pytest.mark.integration
def test_tls_and_an_acl_user_reach_redis_and_the_limiter_fast_path(tls_redis: TlsRedis, tmp_path: Path) -> None:
    settings = RedisConnection(
        url=f"rediss://127.0.0.1:{tls_redis.port}/0",
        username="limiter",
        password=tls_redis.password,
        ca_file=str(tls_redis.cert),
    )
    client = connect(settings, timeout_seconds=2.0)
    assert client.ping() is True
    limiter = RedisLimiter(client)  # its own RESP connections, over TLS, as that user
    limits = [Limit("second", 2, 1)]
    assert [limiter.hit("ip:203.0.113.1", limits).allowed for _ in range(3)] == [True, True, False]

    untrusted = connect(
        RedisConnection(url=settings.url, username="limiter", password=tls_redis.password), timeout_seconds=2.0
    )
    with pytest.raises(REDIS_ERRORS, match="certificate verify failed"):
        untrusted.ping()  # a server the system's trust store does not know is refused
    wrong = RedisConnection(url=settings.url, username="limiter", password="wrong", ca_file=str(tls_redis.cert))
    with pytest.raises(redis.AuthenticationError):
        connect(wrong, timeout_seconds=2.0).ping()
    with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
        client.set("flags:other", "x")  # the ACL's key pattern holds on this connection too
