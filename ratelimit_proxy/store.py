"""Shared state besides the counters: API keys, bans and abuse events (the audit trail is the kit's).

Redis keeps it for every replica; the in-memory twin serves the single-process embedded default and
the tests run both. Redis errors become StorageUnavailable at this boundary.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import redis

from ratelimit_proxy.backends import StorageUnavailable

OFFENSE_MEMORY_SECONDS = 7 * 86400
# Every change to keys or bans is announced here ("key <id>", "bans"), so each replica applies it at once
# instead of at its next poll (ratelimit_proxy/runtime.py).
CHANGES_CHANNEL = "rl:changes"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str  # SHA-256 of the key: what is stored and shown; the key itself never is
    tier: str
    owner: str
    status: str = "active"  # active | revoked
    created_at: float = 0.0
    source: str = "store"  # store | config


@dataclass(frozen=True)
class Ban:
    network: str  # an address or a CIDR
    reason: str
    source: str  # auto | manual
    created_at: float
    expires_at: float  # epoch seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store(Protocol):
    def get_key(self, key_id: str) -> KeyRecord | None: ...
    def put_key(self, record: KeyRecord) -> None: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def bans(self, now: float) -> list[Ban]: ...
    def add_ban(self, ban: Ban) -> None: ...
    def remove_ban(self, network: str) -> bool: ...
    def count_offense(self, ip: str) -> int: ...
    def record_event(self, rule: str, ip: str, member: str, now: float, period_seconds: int) -> int: ...


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}
        self._bans: dict[str, Ban] = {}
        self._offenses: dict[str, int] = {}
        self._events: dict[tuple[str, str], dict[str, float]] = {}

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def put_key(self, record: KeyRecord) -> None:
        with self._lock:
            self._keys[record.key_id] = record

    def list_keys(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda r: r.created_at)

    def bans(self, now: float) -> list[Ban]:
        with self._lock:
            for network in [n for n, b in self._bans.items() if b.expires_at <= now]:
                del self._bans[network]
            return list(self._bans.values())

    def add_ban(self, ban: Ban) -> None:
        with self._lock:
            self._bans[ban.network] = ban

    def remove_ban(self, network: str) -> bool:
        with self._lock:
            return self._bans.pop(network, None) is not None

    def count_offense(self, ip: str) -> int:
        with self._lock:
            self._offenses[ip] = self._offenses.get(ip, 0) + 1
            return self._offenses[ip]

    def record_event(self, rule: str, ip: str, member: str, now: float, period_seconds: int) -> int:
        with self._lock:
            events = self._events.setdefault((rule, ip), {})
            events[member] = now
            for old in [m for m, at in events.items() if at <= now - period_seconds]:
                del events[old]
            return len(events)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StorageUnavailable(str(exc)) from exc


class RedisStore:
    """Layout: ``rl:key:<id>`` hash + ``rl:keys`` set; ``rl:bans`` zset (network -> expiry) +
    ``rl:ban:<network>`` JSON; ``rl:offenses:{ip}``; ``rl:abuse:{ip}:<rule>`` zsets."""

    def __init__(self, client: redis.Redis) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=True")
        # Any: redis-py types replies as bytes | str; with decode_responses they are str.
        self._r: Any = client

    def get_key(self, key_id: str) -> KeyRecord | None:
        with _translated():
            data = self._r.hgetall(f"rl:key:{key_id}")
        if not data:
            return None
        return KeyRecord(key_id, data["tier"], data["owner"], data["status"], float(data["created_at"]))

    def put_key(self, record: KeyRecord) -> None:
        mapping = {"tier": record.tier, "owner": record.owner, "status": record.status, "created_at": record.created_at}
        with _translated(), self._r.pipeline() as pipe:
            pipe.hset(f"rl:key:{record.key_id}", mapping=mapping)
            pipe.sadd("rl:keys", record.key_id)
            pipe.publish(CHANGES_CHANNEL, f"key {record.key_id}")
            pipe.execute()

    def list_keys(self) -> list[KeyRecord]:
        with _translated():
            ids = sorted(self._r.smembers("rl:keys"))
        records = [self.get_key(i) for i in ids]
        return sorted((r for r in records if r), key=lambda r: r.created_at)

    def bans(self, now: float) -> list[Ban]:
        with _translated():
            self._r.zremrangebyscore("rl:bans", "-inf", now)
            networks = list(self._r.zrange("rl:bans", 0, -1))
            raw = self._r.mget([f"rl:ban:{n}" for n in networks]) if networks else []
        return [Ban(**json.loads(r)) for r in raw if r]

    def add_ban(self, ban: Ban) -> None:
        ttl = max(1, int(ban.expires_at - time.time()) + 1)
        with _translated(), self._r.pipeline() as pipe:
            pipe.zadd("rl:bans", {ban.network: ban.expires_at})
            pipe.set(f"rl:ban:{ban.network}", json.dumps(ban.as_dict()), ex=ttl)
            pipe.publish(CHANGES_CHANNEL, "bans")
            pipe.execute()

    def remove_ban(self, network: str) -> bool:
        with _translated(), self._r.pipeline() as pipe:
            pipe.zrem("rl:bans", network)
            pipe.delete(f"rl:ban:{network}")
            pipe.publish(CHANGES_CHANNEL, "bans")
            removed, _, _ = pipe.execute()
        return bool(removed)

    def count_offense(self, ip: str) -> int:
        key = f"rl:offenses:{{{ip}}}"
        with _translated(), self._r.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, OFFENSE_MEMORY_SECONDS)
            count, _ = pipe.execute()
        return int(count)

    def record_event(self, rule: str, ip: str, member: str, now: float, period_seconds: int) -> int:
        key = f"rl:abuse:{{{ip}}}:{rule}"
        with _translated(), self._r.pipeline() as pipe:
            pipe.zadd(key, {member: now})
            pipe.zremrangebyscore(key, "-inf", now - period_seconds)
            pipe.zcard(key)
            pipe.expire(key, period_seconds)
            _, _, count, _ = pipe.execute()
        return int(count)
