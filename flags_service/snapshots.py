"""Per-environment compiled snapshots: in process, shared through Redis, announced over pub/sub.

Reads never touch Redis or the database while the pub/sub listener is connected: a replica serves its
in-memory snapshot until a change is announced (``{"environment", "version"}`` on one channel), then
takes the new snapshot from Redis (or builds it from the database and stores it there). When Redis is down
the listener is disconnected, and a replica instead checks the environment's version in the database at
most every ``db_poll_seconds``; it keeps serving, only from the database.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_kit.health import Degraded
from service_kit.pubsub import ChannelListener, publish
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis, RedisConnection, connect

log = logging.getLogger("flags_service.snapshots")
STORE_SNAPSHOT_LUA = (Path(__file__).with_name("store_snapshot.lua")).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Snapshot:
    """One environment at one version, with what the endpoints need precomputed."""

    environment: str
    version: int
    flags: Mapping[str, Mapping[str, Any]]
    segments: Mapping[str, Mapping[str, Any]]
    body: bytes = field(repr=False)  # the SDK snapshot endpoint's JSON
    # OFREP, made as requests need them (ofrep.py): (item JSON, (flag, variant)) per (flag, variant, reason),
    # a plan per flag, a bulk layout per key kind, and memoised items by flag and attribute values.
    rendered_items: dict[tuple[str, str | None, str], Any] = field(default_factory=dict, repr=False, compare=False)
    flag_plans: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    bulk_layouts: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def etag(self) -> str:
        return f'"{self.environment}.{self.version}"'

    @functools.cached_property
    def client_flags(self) -> Mapping[str, Mapping[str, Any]]:
        return {key: flag for key, flag in self.flags.items() if flag.get("clientVisible")}

    @classmethod
    def from_document(cls, document: Mapping[str, Any], body: bytes | None = None) -> Snapshot:
        return cls(
            environment=document["environment"],
            version=int(document["version"]),
            flags=document["flags"],
            segments=document["segments"],
            body=body if body is not None else json.dumps(document, separators=(",", ":")).encode(),
        )


# One encoder for every call: json.dumps with options builds a new JSONEncoder each time (bulk OFREP hot path).
_HASH_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def content_hash(*parts: object) -> str:
    """A short stable hash of JSON-able parts (bulk OFREP ETags)."""
    return hashlib.sha256(_HASH_ENCODER.encode(parts).encode()).hexdigest()[:32]


class SnapshotCache:
    """Thread-safe snapshot source for one process. ``load`` builds from the DB; ``db_version`` is cheap."""

    def __init__(
        self,
        load: Callable[[str], Mapping[str, Any]],
        db_version: Callable[[str], int],
        redis_settings: RedisConnection | None = None,
        *,
        key_prefix: str = "flags:",
        socket_timeout: float = 0.5,
        db_poll_seconds: float = 0.5,
    ) -> None:
        self._load = load
        self._db_version = db_version
        self._key_prefix = key_prefix
        self._channel = f"{key_prefix}changes"
        self._db_poll_seconds = db_poll_seconds
        self._lock = threading.Lock()
        self._local: dict[str, Snapshot] = {}
        self._announced: dict[str, int] = {}
        self._checked_at: dict[str, float] = {}
        self._listener: ChannelListener | None = None
        self._redis: AnyRedis | None = None
        if redis_settings is not None and redis_settings.url:
            self._redis = connect(redis_settings, timeout_seconds=socket_timeout)
            self._store_script = self._redis.register_script(STORE_SNAPSHOT_LUA)
        self.changed = threading.Condition()  # notified when any environment's version moves (SSE waits)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, environment: str) -> Snapshot:
        self._ensure_listener()
        local = self._local.get(environment)
        if local is not None and self._is_current(local):
            return local
        with self._lock:  # one reload per process at a time; threads that waited reuse it
            latest = self._local.get(environment)
            if latest is not None and latest is not local:
                return latest
            snapshot = self._fetch(environment)
            self._local[environment] = snapshot
            self._checked_at[environment] = time.monotonic()
        if local is None or snapshot.version != local.version:
            self._notify()
        return snapshot

    def _is_current(self, local: Snapshot) -> bool:
        if self._subscribed():
            return local.version >= self._announced.get(local.environment, 0)
        # No pub/sub (Redis down or not configured): ask the database now and then.
        now = time.monotonic()
        if now - self._checked_at.get(local.environment, 0.0) < self._db_poll_seconds:
            return True
        self._checked_at[local.environment] = now
        try:
            return self._db_version(local.environment) == local.version
        except Exception:
            log.exception("database version check failed; serving the snapshot we have")
            return True

    def _fetch(self, environment: str) -> Snapshot:
        wanted = self._announced.get(environment, 0)
        # Without the subscription we cannot tell whether Redis is current (or even up): use the database.
        if self._redis is not None and self._subscribed():
            try:
                cached = self._redis.hget(self._key(environment), "body")
                if cached:
                    document = json.loads(cached)
                    if int(document["version"]) >= wanted:
                        return Snapshot.from_document(document, cached)  # type: ignore[arg-type]
            except (*REDIS_ERRORS, ValueError, KeyError):
                log.warning("redis snapshot read failed; building from the database")
        snapshot = Snapshot.from_document(self._load(environment))
        self._store(snapshot)
        return snapshot

    def _key(self, environment: str) -> str:
        return f"{self._key_prefix}snapshot:{{{environment}}}"

    def _store(self, snapshot: Snapshot) -> None:
        if self._redis is None or not self._subscribed():
            return
        try:
            self._store_script(keys=[self._key(snapshot.environment)], args=[snapshot.version, snapshot.body])
        except REDIS_ERRORS:
            log.warning("redis snapshot write failed")

    # -- writes ---------------------------------------------------------------------------------
    def publish(self, versions: Mapping[str, int]) -> None:
        """After a committed change: rebuild, cache in Redis and announce each changed environment."""
        for environment, version in versions.items():
            snapshot = Snapshot.from_document(self._load(environment))
            with self._lock:
                current = self._local.get(environment)
                if current is None or current.version < snapshot.version:
                    self._local[environment] = snapshot
                self._announced[environment] = max(self._announced.get(environment, 0), version)
            self._store(snapshot)
            if self._redis is not None:
                self._announce(json.dumps({"environment": environment, "version": version}))
        self._notify()

    def _announce(self, message: str) -> None:
        assert self._redis is not None
        try:
            publish(self._redis, self._channel, message)
        except REDIS_ERRORS as exc:
            log.warning("redis publish failed (%s); other replicas will see the change from the database", exc)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- pub/sub listener -----------------------------------------------------------------------
    def _ensure_listener(self) -> None:
        if self._redis is None or self._listener is not None:
            return
        with self._lock:
            if self._listener is None:
                self._listener = ChannelListener(
                    self._redis, self._channel, self._on_message, on_connect=self._forget_local, name="flags-pubsub"
                )
                self._listener.start(wait_seconds=0.2)  # usually connected by now; if not, the DB path serves

    def _forget_local(self) -> None:
        """Messages may have been missed while disconnected: re-read everything once."""
        with self._lock:
            self._local.clear()

    def _subscribed(self) -> bool:
        return self._listener is not None and self._listener.connected.is_set()

    def _on_message(self, data: str) -> None:
        try:
            change = json.loads(data)
            environment, version = str(change["environment"]), int(change["version"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self._announced[environment] = max(self._announced.get(environment, 0), version)
        self._notify()

    @property
    def redis_connected(self) -> bool:
        return self._subscribed()

    @property
    def uses_redis(self) -> bool:
        return self._redis is not None

    def readiness(self) -> Degraded | bool:
        """``/readyz``: degraded (still 200) while snapshots come from the database instead of Redis."""
        self._ensure_listener()
        if self._subscribed():
            return True
        return Degraded("serving from the database: the Redis snapshot cache is unreachable")

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._redis is not None:
            self._redis.close()
