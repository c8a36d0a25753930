"""Shared state besides the counters: API keys, bans and abuse events (the audit trail is the kit's).

Redis keeps it for every replica; the in-memory twin serves the single-process embedded default and
the tests run both. Redis errors become StorageUnavailable at this boundary.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Protocol

from ratelimit_proxy.limiter_storage import StorageUnavailable
from service_kit.pubsub import publish
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

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
    def delete_key(self, key_id: str) -> bool: ...
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

    def delete_key(self, key_id: str) -> bool:
        with self._lock:
            return self._keys.pop(key_id, None) is not None

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
    except REDIS_ERRORS as exc:
        raise StorageUnavailable(str(exc)) from exc


KEYS_TAG = "rl:{keys}"  # key records and their index share a hash tag: one slot, one MULTI
BANS_TAG = "rl:{bans}"  # the expiry index and the records likewise


class RedisStore:
    """Layout, slot-safe on a Redis Cluster (keys changed together share a ``{hash tag}``):

    - ``rl:{keys}:<id>`` hash per API key, ``rl:{keys}:index`` set of ids;
    - ``rl:{bans}:expiry`` zset (network -> expiry) and ``rl:{bans}:records`` hash (network -> JSON), read
      and pruned together by bans.lua;
    - ``rl:offenses:{ip}``, ``rl:abuse:{ip}:<rule>``: one key per call.

    Change announcements are published after the write, outside any MULTI (PUBLISH names no key)."""

    def __init__(self, client: AnyRedis) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=True")
        # Any: redis-py types replies as bytes | str; with decode_responses they are str.
        self._r: Any = client
        self._read_bans = client.register_script(
            resources.files("ratelimit_proxy").joinpath("bans.lua").read_text(encoding="utf-8")
        )

    def get_key(self, key_id: str) -> KeyRecord | None:
        with _translated():
            data = self._r.hgetall(f"{KEYS_TAG}:{key_id}")
        if not data:
            return None
        return KeyRecord(key_id, data["tier"], data["owner"], data["status"], float(data["created_at"]))

    def put_key(self, record: KeyRecord) -> None:
        mapping = {"tier": record.tier, "owner": record.owner, "status": record.status, "created_at": record.created_at}
        with _translated():
            with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(f"{KEYS_TAG}:{record.key_id}", mapping=mapping)
                pipe.sadd(f"{KEYS_TAG}:index", record.key_id)
                pipe.execute()
            self._announce(f"key {record.key_id}")

    def delete_key(self, key_id: str) -> bool:
        with _translated():
            with self._r.pipeline(transaction=True) as pipe:
                pipe.delete(f"{KEYS_TAG}:{key_id}")
                pipe.srem(f"{KEYS_TAG}:index", key_id)
                deleted, _ = pipe.execute()
            self._announce(f"key {key_id}")
        return bool(deleted)

    def list_keys(self) -> list[KeyRecord]:
        with _translated():
            ids = sorted(self._r.smembers(f"{KEYS_TAG}:index"))
        records = [self.get_key(i) for i in ids]
        return sorted((r for r in records if r), key=lambda r: r.created_at)

    def bans(self, now: float) -> list[Ban]:
        with _translated():
            raw = self._read_bans(keys=[f"{BANS_TAG}:expiry", f"{BANS_TAG}:records"], args=[now])
        return [Ban(**json.loads(r)) for r in raw if r]

    def add_ban(self, ban: Ban) -> None:
        with _translated():
            with self._r.pipeline(transaction=True) as pipe:
                pipe.zadd(f"{BANS_TAG}:expiry", {ban.network: ban.expires_at})
                pipe.hset(f"{BANS_TAG}:records", ban.network, json.dumps(ban.as_dict()))
                pipe.execute()
            self._announce("bans")

    def remove_ban(self, network: str) -> bool:
        with _translated():
            with self._r.pipeline(transaction=True) as pipe:
                pipe.zrem(f"{BANS_TAG}:expiry", network)
                pipe.hdel(f"{BANS_TAG}:records", network)
                removed, _ = pipe.execute()
            self._announce("bans")
        return bool(removed)

    def count_offense(self, ip: str) -> int:
        key = f"rl:offenses:{{{ip}}}"
        with _translated(), self._r.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, OFFENSE_MEMORY_SECONDS)
            count, _ = pipe.execute()
        return int(count)

    def record_event(self, rule: str, ip: str, member: str, now: float, period_seconds: int) -> int:
        key = f"rl:abuse:{{{ip}}}:{rule}"
        with _translated(), self._r.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {member: now})
            pipe.zremrangebyscore(key, "-inf", now - period_seconds)
            pipe.zcard(key)
            pipe.expire(key, period_seconds)
            _, _, count, _ = pipe.execute()
        return int(count)

    def _announce(self, change: str) -> None:
        publish(self._r, CHANGES_CHANNEL, change)

    def migrate_legacy_layout(self) -> int:
        """Move keys and bans written by earlier versions (``rl:key:<id>`` + ``rl:keys``, ``rl:bans`` +
        ``rl:ban:<network>``, which could not work on a cluster) into the layout above; returns how many
        records moved. Idempotent, and a no-op (two EXISTS) once done."""
        moved = 0
        with _translated():
            if self._r.exists("rl:keys"):
                for key_id in sorted(self._r.smembers("rl:keys")):
                    data = self._r.hgetall(f"rl:key:{key_id}")
                    if data and not self._r.exists(f"{KEYS_TAG}:{key_id}"):
                        self.put_key(
                            KeyRecord(key_id, data["tier"], data["owner"], data["status"], float(data["created_at"]))
                        )
                        moved += 1
                    self._r.delete(f"rl:key:{key_id}")
                    self._r.srem("rl:keys", key_id)
            if self._r.exists("rl:bans"):
                for network, _ in self._r.zrange("rl:bans", 0, -1, withscores=True):
                    raw = self._r.get(f"rl:ban:{network}")
                    if raw:
                        self.add_ban(Ban(**json.loads(raw)))
                        moved += 1
                    self._r.delete(f"rl:ban:{network}")
                    self._r.zrem("rl:bans", network)
        return moved
