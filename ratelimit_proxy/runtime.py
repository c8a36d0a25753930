"""Everything the proxy and its admin API share, built once from settings."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import redis
from prometheus_client import CollectorRegistry

from ratelimit_proxy.backends import LimiterBackend, MemoryLimiter, RedisLimiter, StorageUnavailable
from ratelimit_proxy.breaker import CircuitBreaker
from ratelimit_proxy.clientip import parse_networks
from ratelimit_proxy.guard import AbuseDetector, BanList, KeyDirectory
from ratelimit_proxy.limiter import Decision, Limit
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.policy import Policy, PolicyError
from ratelimit_proxy.settings import ProxySettings
from ratelimit_proxy.store import KeyRecord, MemoryStore, RedisStore, Store
from service_kit.config import ConfigError

log = logging.getLogger("ratelimit_proxy")
POLICY_VERSION_KEY = "rl:policy:version"


def redis_client(url: str, timeout_ms: int) -> redis.Redis:
    """A client whose every call gives up after ``timeout_ms``: an outage costs milliseconds, not seconds."""
    seconds = timeout_ms / 1000
    return redis.Redis.from_url(
        url, socket_timeout=seconds, socket_connect_timeout=seconds, retry=None, decode_responses=True
    )


class Runtime:
    def __init__(
        self,
        settings: ProxySettings,
        registry: CollectorRegistry,
        limiter: LimiterBackend | None = None,
        store: Store | None = None,
        reload: Callable[[], ProxySettings] | None = None,
    ) -> None:
        self.settings = settings
        self._reload = reload
        self._tick_lock = threading.Lock()
        self._next_tick = 0.0
        self._policy_version: int | None = None
        self.policy = Policy(settings.limits)
        self.redis: redis.Redis | None = None
        if settings.redis.url:
            self.redis = redis_client(settings.redis.url, settings.redis.timeout_ms)
        self.limiter = limiter or (RedisLimiter(self.redis) if self.redis else MemoryLimiter())
        self.store = store or (RedisStore(self.redis) if self.redis else MemoryStore())
        self.metrics = ProxyMetrics(registry)
        self.keys = KeyDirectory(self.store, settings.static_keys, settings.redis.key_cache_seconds)
        self.bans = BanList(
            self.store,
            settings.abuse,
            on_ban=lambda source: self.metrics.bans.labels(source).inc(),
        )
        self.breaker = CircuitBreaker(settings.redis.breaker_failures, settings.redis.breaker_reset_seconds)
        self.detector = AbuseDetector(
            settings.abuse,
            self.bans,
            on_detect=lambda rule, mode: self.metrics.detections.labels(rule, mode).inc(),
            store_available=lambda: not self.breaker.is_open,
        )
        self.metrics.circuit_open.set(0)
        self.trusted_proxies = parse_networks(settings.clients.trusted_proxies)

    def tick(self) -> None:
        """At most every ``ban_refresh_seconds`` per process: reload the ban list and, when an admin
        announced a tier reload, read the tier file again. One request does it; the others go on."""
        now = time.monotonic()
        if now < self._next_tick or not self._tick_lock.acquire(blocking=False):
            return
        try:
            self._next_tick = now + self.settings.redis.ban_refresh_seconds
            if self.breaker.is_open:
                return  # keep the bans we know; no request waits for a Redis timeout
            self.bans.refresh()
            version = self._stored_policy_version()
            if self._policy_version is None:
                self._policy_version = version
            elif version != self._policy_version:
                self._policy_version = version
                self.reload_limits()
        except (ConfigError, PolicyError) as exc:
            log.error("tier reload refused, keeping the current tiers: %s", exc)
        finally:
            self._tick_lock.release()

    def _stored_policy_version(self) -> int:
        if self.redis is None:
            return 0
        try:
            return int(self.redis.get(POLICY_VERSION_KEY) or 0)
        except redis.RedisError:
            return self._policy_version or 0

    def reload_limits(self) -> bool:
        """Read the tier file again and apply it; False when this process has no file to read."""
        if self._reload is None:
            return False
        limits = self._reload().limits
        policy = Policy(limits)
        self.policy = policy
        self.settings = replace(self.settings, limits=limits)
        log.warning("tiers reloaded: %s", ", ".join(policy.tiers))
        return True

    def announce_reload(self) -> None:
        """Tell every process on this Redis to read its tier file again."""
        if self.redis is not None:
            version = int(self.redis.incr(POLICY_VERSION_KEY))
            self._policy_version = version

    @property
    def retry_after_outage(self) -> int:
        return max(1, math.ceil(self.settings.redis.breaker_reset_seconds))

    def lookup_key(self, api_key: str) -> KeyRecord | None:
        """The key's record; StorageUnavailable when the store fails or the circuit is open (an open
        circuit means no request waits for a Redis timeout here either)."""
        if self.breaker.is_open and not self.keys.is_static(api_key):
            raise StorageUnavailable("circuit open")
        try:
            return self.keys.lookup(api_key)
        except StorageUnavailable:
            self.metrics.redis_errors.inc()
            if self.breaker.failure():
                self.metrics.circuit_open.set(1)
            raise

    def decide(self, bucket: str, limits: tuple[Limit, ...], cost: int) -> Decision | None:
        """The limiter's decision, or None when the store is unavailable (or the circuit is open)."""
        if not self.breaker.allow():
            return None
        started = time.perf_counter()
        try:
            decision = self.limiter.hit(bucket, limits, cost)
        except StorageUnavailable as exc:
            self.metrics.redis_errors.inc()
            if self.breaker.failure():
                self.metrics.circuit_open.set(1)
                log.error("limiter store unavailable, circuit open (%s mode): %s", self.failure_mode, exc)
            return None
        if self.breaker.success():
            self.metrics.circuit_open.set(0)
            log.warning("limiter store is back, circuit closed")
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return decision

    @property
    def failure_mode(self) -> str:
        return self.settings.redis.failure_mode
