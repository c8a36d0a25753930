"""Where the response cache keeps its entries: Redis (shared by every replica) or process memory (the
embedded single-process default). One small interface, ``CacheStore``; one behaviour suite runs over
both (tests/ratelimit_proxy/test_cache_store.py). Redis errors become StorageUnavailable here, and the
cache answers them by bypassing itself (ratelimit_proxy/cache.py).

Redis layout (keys used together share a ``{hash tag}``, so the scripts run on a Redis Cluster):

- ``rc:{<url>}``: a hash per URL (``<url>`` is a SHA-256 of the target as forwarded): per partition
  (``anon``, ``auth``; with upstream colours ``<colour>/anon``, ``<colour>/auth``) the varied field names
  (``<partition>:vary``) and one field per variant (``<partition>:<variant>``, an encoded ``Entry``), plus
  ``target``. A purge by URL deletes this one key.
  Its TTL is the longest time one of its variants can still serve (lifetime plus stale windows, capped by
  ``cache.max_keep_seconds``).
- ``rc:{<url>}:lock``: the fill lock of single-flight, a short lease (``cache.lock_lease_ms``).
- ``rc:tag:{<tag>}``: the URLs tagged with a Surrogate-Key; expires with its longest-lived member.
- ``rc:index``: every URL by expiry time, the total bound: past ``cache.max_entries`` URLs the ones
  closest to expiry are deleted when another is stored.
- ``rc:generation``: bumped by every purge, before it deletes anything; each worker's local layer compares
  it once a ``cache.local_check_seconds`` (the fallback of the purge announcements on ``rl:changes``).

A purge and a store of the same URL can overlap: a fill whose upstream answer was on its way while the URL
was purged (or whose tag membership was written after the purge read the tag set: the entry and its tag
sets are in different Cluster slots, so no one script writes both). The fill reads the generation before
it asks the origin and hands it to ``store``; a store that finds the generation moved deletes what it wrote
(as a URL purge) and reports it not stored. Because a purge bumps the generation first and a store reads it
last, every interleaving ends with the entry gone: a purge that bumps after the store's last read sees the
tag membership already written, and deletes the URL itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis.cluster

from ratelimit_proxy.cache_policy import variant_key
from ratelimit_proxy.limiter_storage import StorageUnavailable
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

PARTITIONS = ("anon", "auth")
INDEX_KEY = "rc:index"
GENERATION_KEY = "rc:generation"


@dataclass(frozen=True)
class Entry:
    """One stored response. ``stored_at`` is when it arrived (epoch seconds), ``initial_age`` its age then."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    initial_age: float
    lifetime: float
    tags: tuple[str, ...] = ()

    def encode(self) -> bytes:
        meta = {
            "s": self.status,
            "r": self.reason,
            "h": self.headers,
            "t": self.stored_at,
            "a": self.initial_age,
            "l": self.lifetime,
            "g": self.tags,
        }
        return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, blob: bytes) -> Entry:
        head, _, body = blob.partition(b"\n")
        meta = json.loads(head)
        headers = tuple((k, v) for k, v in meta["h"])
        return cls(meta["s"], meta["r"], headers, body, meta["t"], meta["a"], meta["l"], tuple(meta["g"]))

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + 64


@dataclass(frozen=True)
class Lookup:
    """What a lookup found: the entry, or whether this call took the fill lock, or whether another holds it."""

    entry: Entry | None
    locked_by_us: bool = False
    locked: bool = False


class CacheStore(Protocol):
    def lookup(
        self, key: str, partition: str, request: Mapping[str, str], owner: str = "", lease_ms: int = 0
    ) -> Lookup:
        """The entry of the request's variant; on a miss with ``owner`` given, try to take the fill lock."""
        ...

    def store(
        self,
        key: str,
        partition: str,
        vary: Sequence[str],
        request: Mapping[str, str],
        entry: Entry,
        target: str,
        keep_seconds: float,
        owner: str = "",
        generation: int | None = None,
    ) -> bool:
        """Store ``entry`` as the variant the request selects, tagged with ``entry.tags``, for ``keep_seconds``;
        and release the fill lock if ``owner`` still holds it. ``generation`` (read before the origin was
        asked): when a purge has moved it since, nothing stays stored and the answer is False."""
        ...

    def lock(self, key: str, owner: str, lease_ms: int) -> bool:
        """Take the URL's fill lock for ``lease_ms`` unless another holds it (a revalidation: the entry is
        there, so ``lookup`` does not lock)."""
        ...

    def unlock(self, key: str, owner: str) -> None: ...

    def purge_url(self, key: str) -> bool:
        """Delete every variant of one URL; True when there was something to delete."""
        ...

    def purge_tag(self, tag: str) -> list[str]:
        """Delete every URL tagged ``tag``; returns their targets."""
        ...

    def generation(self) -> int: ...


class MemoryCacheStore:
    """The in-memory twin: the same behaviour under one lock, with expiry from ``clock``."""

    def __init__(self, max_entries: int, max_variants: int = 16, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._max_entries = max_entries
        self._max_variants = max_variants
        self._urls: dict[str, tuple[float, dict[str, Any]]] = {}  # key -> (expires at, fields)
        self._locks: dict[str, tuple[str, float]] = {}
        self._tags: dict[str, set[str]] = {}
        self._generation = 0

    def _fields(self, key: str, now: float) -> dict[str, Any] | None:
        found = self._urls.get(key)
        if found is None:
            return None
        if found[0] <= now:
            del self._urls[key]
            return None
        return found[1]

    def lookup(
        self, key: str, partition: str, request: Mapping[str, str], owner: str = "", lease_ms: int = 0
    ) -> Lookup:
        with self._lock:
            now = self._clock()
            fields = self._fields(key, now) or {}
            vary = fields.get(f"{partition}:vary")
            if vary is not None:
                entry = fields.get(f"{partition}:{variant_key(vary.split(',') if vary else [], request)}")
                if entry is not None:
                    return Lookup(entry)
            held = self._locks.get(key)
            if held is not None and held[1] <= now:
                held = None
            if owner and held is None:
                self._locks[key] = (owner, now + lease_ms / 1000)
                return Lookup(None, True, True)
            return Lookup(None, False, held is not None)

    def store(
        self,
        key: str,
        partition: str,
        vary: Sequence[str],
        request: Mapping[str, str],
        entry: Entry,
        target: str,
        keep_seconds: float,
        owner: str = "",
        generation: int | None = None,
    ) -> bool:
        with self._lock:
            now = self._clock()
            if owner and self._locks.get(key, ("",))[0] == owner:
                del self._locks[key]
            if generation is not None and generation != self._generation:
                return False  # a purge ran while the answer was fetched
            expires, fields = self._urls.get(key, (now, {}))
            if expires <= now:
                fields = {}
            names = ",".join(vary)
            prefix = f"{partition}:"
            variants = [f for f in fields if f.startswith(prefix) and f != f"{prefix}vary"]
            if fields.get(f"{prefix}vary", names) != names or len(variants) >= self._max_variants:
                fields = {f: v for f, v in fields.items() if not f.startswith(prefix)}
            fields[f"{prefix}vary"] = names
            fields[f"{prefix}{variant_key(vary, request)}"] = entry
            fields["target"] = target
            keep_until = now + keep_seconds
            self._urls[key] = (max(expires, keep_until), fields)
            for tag in entry.tags:
                self._tags.setdefault(tag, set()).add(key)
            if len(self._urls) > self._max_entries:
                for old in sorted(self._urls, key=lambda k: self._urls[k][0])[: len(self._urls) - self._max_entries]:
                    del self._urls[old]
            return True

    def lock(self, key: str, owner: str, lease_ms: int) -> bool:
        with self._lock:
            now = self._clock()
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return False
            self._locks[key] = (owner, now + lease_ms / 1000)
            return True

    def unlock(self, key: str, owner: str) -> None:
        with self._lock:
            if self._locks.get(key, ("",))[0] == owner:
                del self._locks[key]

    def purge_url(self, key: str) -> bool:
        with self._lock:
            self._generation += 1
            return self._urls.pop(key, None) is not None

    def purge_tag(self, tag: str) -> list[str]:
        with self._lock:
            self._generation += 1
            targets = []
            for key in sorted(self._tags.pop(tag, set())):
                found = self._urls.pop(key, None)
                if found is not None:
                    targets.append(found[1]["target"])
            return targets

    def generation(self) -> int:
        return self._generation


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StorageUnavailable(str(exc)) from exc


def _script(client: AnyRedis, name: str) -> Any:
    return client.register_script(resources.files("ratelimit_proxy").joinpath(name).read_text(encoding="utf-8"))


class RedisCacheStore:
    """The layout of the module docstring; scripts by SHA (redis-py's ``Script`` reloads on NOSCRIPT)."""

    def __init__(self, client: AnyRedis, max_entries: int, max_variants: int = 16) -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisCacheStore needs a client with decode_responses=False (bodies are bytes)")
        self._r: Any = client
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._max_entries = max_entries
        self._max_variants = max_variants
        self._lookup = _script(client, "cache_lookup.lua")
        self._store = _script(client, "cache_store.lua")
        self._unlock = _script(client, "cache_unlock.lua")

    def lookup(
        self, key: str, partition: str, request: Mapping[str, str], owner: str = "", lease_ms: int = 0
    ) -> Lookup:
        args: list[str | int] = [partition, owner, lease_ms]
        for name, value in request.items():
            args += [name, value]
        with _translated():
            blob, taken, locked = self._lookup(keys=[f"rc:{{{key}}}", f"rc:{{{key}}}:lock"], args=args)
        if blob is None:
            return Lookup(None, bool(taken), bool(locked))
        return Lookup(Entry.decode(blob))

    def store(
        self,
        key: str,
        partition: str,
        vary: Sequence[str],
        request: Mapping[str, str],
        entry: Entry,
        target: str,
        keep_seconds: float,
        owner: str = "",
        generation: int | None = None,
    ) -> bool:
        keep = max(1, int(keep_seconds * 1000))
        url_key = f"rc:{{{key}}}"
        args = [
            partition, ",".join(vary), variant_key(vary, request), entry.encode(), keep, self._max_variants, target,
            owner,
        ]  # fmt: skip
        expires_at = int(time.time() * 1000) + keep
        with _translated():
            self._store(keys=[url_key, f"{url_key}:lock"], args=args)
            # The tag sets and the index hold other slots: a plain pipeline (split per node on a Cluster).
            with self._r.pipeline(transaction=False) as pipe:
                for tag in entry.tags:
                    tag_key = f"rc:tag:{{{tag}}}"
                    pipe.sadd(tag_key, key)
                    pipe.pexpire(tag_key, keep, nx=True)  # GT alone never sets a first TTL
                    pipe.pexpire(tag_key, keep, gt=True)
                pipe.zadd(INDEX_KEY, {key: expires_at}, gt=True)
                pipe.zadd(INDEX_KEY, {key: expires_at}, nx=True)
                pipe.zremrangebyscore(INDEX_KEY, "-inf", int(time.time() * 1000))
                pipe.zcard(INDEX_KEY)
                if not self._cluster:  # one connection: read after the tag sets were written
                    pipe.get(GENERATION_KEY)
                replies = pipe.execute()
            if generation is not None:
                # On a Cluster the pipeline's nodes answer in no set order: read it after all of them.
                now = replies[-1] if not self._cluster else self._r.get(GENERATION_KEY)
                if int(now or 0) != generation:
                    self.purge_url(key)  # a purge ran meanwhile: undo, as a purge (the local layers follow)
                    return False
            count = replies[-2] if not self._cluster else replies[-1]
            if count > self._max_entries:
                evicted = [k.decode() for k, _ in self._r.zpopmin(INDEX_KEY, count - self._max_entries)]
                self._unlink([f"rc:{{{k}}}" for k in evicted])
        return True

    def _unlink(self, keys: list[str]) -> None:
        if not keys:
            return
        if self._cluster:
            for k in keys:  # one slot each
                self._r.unlink(k)
        else:
            self._r.unlink(*keys)

    def lock(self, key: str, owner: str, lease_ms: int) -> bool:
        with _translated():
            return bool(self._r.set(f"rc:{{{key}}}:lock", owner, nx=True, px=lease_ms))

    def unlock(self, key: str, owner: str) -> None:
        with _translated():
            self._unlock(keys=[f"rc:{{{key}}}:lock"], args=[owner])

    def purge_url(self, key: str) -> bool:
        with _translated():
            self._r.incr(GENERATION_KEY)  # first: a store overlapping this purge then finds it moved
            deleted = self._r.unlink(f"rc:{{{key}}}")
            self._r.zrem(INDEX_KEY, key)
        return bool(deleted)

    def purge_tag(self, tag: str) -> list[str]:
        tag_key = f"rc:tag:{{{tag}}}"
        with _translated():
            self._r.incr(GENERATION_KEY)  # first, as in purge_url
            keys = sorted(k.decode() for k in self._r.smembers(tag_key))
            targets = []
            for key in keys:
                target = self._r.hget(f"rc:{{{key}}}", "target")
                if target is not None:
                    targets.append(target.decode())
            self._unlink([f"rc:{{{k}}}" for k in keys])
            if keys:
                self._r.zrem(INDEX_KEY, *keys)
            self._r.unlink(tag_key)
        return targets

    def generation(self) -> int:
        with _translated():
            return int(self._r.get(GENERATION_KEY) or 0)
