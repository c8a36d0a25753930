"""One Redis setting for every service, in every topology: ``RedisConnection`` and ``connect``.

The URL names the topology; credentials never sit in it (they come from the environment or a file):

- ``redis://host:6379/0``, ``rediss://…`` (TLS), ``unix:///run/redis.sock``: one server.
- ``redis+sentinel://s1:26379,s2:26379,s3:26379/MASTER/0`` (``rediss+sentinel`` for TLS): the primary that
  the Sentinels name; redis-py's ``Sentinel.master_for`` asks them again after a failover.
- ``redis+cluster://n1:7000,n2:7001`` (``rediss+cluster``): a Redis Cluster through redis-py's
  ``RedisCluster``, which follows MOVED/ASK and refreshes its slot map. Only db 0 exists on a cluster.

``username``/``password`` are the ACL user (or ``requirepass``) of the data nodes; ``sentinel_password`` is
the Sentinels' own when they have one. Services embed ``RedisConnection`` in their ``redis`` section, so
``{PREFIX}_REDIS__PASSWORD`` (or ``…_PASSWORD_FILE``) works the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from service_kit.config import checked, secret

Topology = Literal["standalone", "sentinel", "cluster"]
SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
AnyRedis = redis.Redis | redis.cluster.RedisCluster
# What a Redis call can raise: redis-py's cluster client also raises RedisClusterException ("cannot be
# connected", "no targets"), which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL says: topology, addresses, database, TLS, and the Sentinel master's name."""

    topology: Topology
    addresses: tuple[tuple[str, int], ...]
    db: int
    tls: bool
    master_name: str = ""
    url: str = ""  # standalone only: passed to redis-py as written (unix sockets, query options)


def parse_redis_url(url: str) -> RedisTarget:
    """The target of ``url``; ValueError says what was expected."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError("a URL starting with " + ", ".join(f"{s}://" for s in SCHEMES))
    topology, tls = SCHEMES[scheme]
    parts = urlsplit(url)
    if parts.password:
        raise ValueError("a URL without a password (set the redis password setting from the environment)")
    if topology == "standalone":
        if scheme == "unix":
            return RedisTarget(topology, (), 0, False, url=url)
        return RedisTarget(topology, (_address(parts.netloc, 6379),), _db(parts.path.strip("/") or "0"), tls, url=url)
    hosts = parts.netloc.rpartition("@")[2]
    default_port = 26379 if topology == "sentinel" else 6379
    addresses = tuple(_address(host, default_port) for host in hosts.split(",") if host)
    if not addresses:
        raise ValueError(f"at least one {'sentinel' if topology == 'sentinel' else 'node'} address")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if topology == "sentinel":
        if not path:
            raise ValueError("redis+sentinel://host:port,…/MASTER_NAME[/db]")
        return RedisTarget(topology, addresses, _db(path[1] if len(path) > 1 else "0"), tls, master_name=path[0])
    if path and _db(path[0]) != 0:
        raise ValueError("db 0 on a Redis Cluster (SELECT does not exist there; use a key prefix)")
    return RedisTarget(topology, addresses, 0, tls)


def _address(text: str, default_port: int) -> tuple[str, int]:
    text = text.rpartition("@")[2]
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"host:port addresses, got {text!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"host:port addresses, got {text!r}")
    return host, int(port)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"a database number, got {text!r}")
    return int(text)


def redis_url_check(value: str) -> str | None:
    """A config check: empty (no Redis) or a URL ``parse_redis_url`` takes."""
    if not value:
        return None
    try:
        parse_redis_url(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class RedisConnection:
    """The part of every service's ``redis`` section that says where Redis is and how to log in."""

    url: str = checked("", redis_url_check)
    username: str = ""  # ACL user; empty: the default user
    password: str = secret()
    sentinel_password: str = secret()  # the Sentinels' own requirepass, when they have one
    ca_file: str = ""  # PEM bundle to verify a TLS server (rediss); empty: the system's

    @property
    def target(self) -> RedisTarget:
        return parse_redis_url(self.url)


def connect(
    settings: RedisConnection,
    *,
    timeout_seconds: float,
    decode_responses: bool = False,
) -> AnyRedis:
    """A client for ``settings``, in its topology. Calls give up after ``timeout_seconds`` and are not
    retried (an outage costs one timeout, not several); a cluster client retries once, after re-reading
    its slot map, since a moved slot is normal there."""
    target = settings.target
    options: dict[str, Any] = {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "decode_responses": decode_responses,
        "username": settings.username or None,
        "password": settings.password or None,
    }
    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": settings.ca_file or None} if target.tls else {}
    if target.topology == "standalone":  # rediss:// itself turns TLS on
        ca = {"ssl_ca_certs": settings.ca_file} if target.tls and settings.ca_file else {}
        return redis.Redis.from_url(target.url, retry=Retry(NoBackoff(), 0), **options, **ca)
    if target.topology == "sentinel":
        sentinel_options: dict[str, Any] = {
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "password": settings.sentinel_password or None,
            **tls,
        }
        sentinel = redis.sentinel.Sentinel(list(target.addresses), sentinel_kwargs=sentinel_options)
        return sentinel.master_for(target.master_name, db=target.db, retry=Retry(NoBackoff(), 0), **options, **tls)
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in target.addresses]
    return redis.cluster.RedisCluster(
        startup_nodes=nodes, retry=Retry(NoBackoff(), 1), require_full_coverage=False, **options, **tls
    )
