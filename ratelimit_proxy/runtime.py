"""Everything the proxy and its admin API share, built once from settings."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import replace

import redis.sentinel
from prometheus_client import CollectorRegistry

from ratelimit_proxy.abuse import AbuseDetector, BanList
from ratelimit_proxy.api_keys import KeyDirectory
from ratelimit_proxy.breaker import CircuitBreaker
from ratelimit_proxy.cache import build_cache
from ratelimit_proxy.clientip import parse_networks
from ratelimit_proxy.key_ban_storage import CHANGES_CHANNEL, KeyRecord, MemoryStore, RedisStore, Store
from ratelimit_proxy.leases import Ask, LeaseCache
from ratelimit_proxy.limiter import Decision, Limit
from ratelimit_proxy.limiter_storage import LimiterBackend, MemoryLimiter, RedisLimiter, StorageUnavailable
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.policy import Policy, PolicyError
from ratelimit_proxy.refusals import OverLimitCache
from ratelimit_proxy.settings import ProxySettings, RedisSettings
from ratelimit_proxy.upstreams import Pools
from ratelimit_proxy.usage import RouteTemplates, UsageRollups
from service_kit.config import ConfigError
from service_kit.health import Degraded
from service_kit.pubsub import ChannelListener, publish
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis, connect

log = logging.getLogger("ratelimit_proxy")
POLICY_VERSION_KEY = "rl:policy:version"
SAFETY_POLL_SECONDS = 30.0
# Requests that find a busy client's lease spent wait for the one being asked for, then one of those it
# did not serve asks for the next (twice as large), and so on: this many rounds at most.
LEASE_ROUNDS = 3
LISTENER_TIMEOUT_SECONDS = 2.0  # the change listener is off the request path: no need for the 50 ms timeout


def redis_client(settings: RedisSettings) -> AnyRedis:
    """A client whose every call gives up after ``timeout_ms``: an outage costs milliseconds, not seconds."""
    return connect(settings, timeout_seconds=settings.timeout_ms / 1000, decode_responses=True)


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
        self.redis: AnyRedis | None = None
        if settings.redis.url:
            self.redis = redis_client(settings.redis)
        self.limiter = limiter or (RedisLimiter(self.redis) if self.redis else MemoryLimiter())
        self.store = store or (RedisStore(self.redis) if self.redis else MemoryStore())
        if isinstance(self.store, RedisStore):
            try:
                if moved := self.store.migrate_legacy_layout():
                    log.warning("moved %d API keys and bans into the cluster-safe layout", moved)
            except StorageUnavailable as exc:
                log.warning("could not check for keys in the old layout (Redis unavailable): %s", exc)
        self.metrics = ProxyMetrics(registry)
        self.keys = KeyDirectory(self.store, settings.static_keys, settings.redis.key_cache_seconds)
        self.bans = BanList(
            self.store,
            settings.abuse,
            on_ban=lambda source: self.metrics.bans.labels(source).inc(),
        )
        # One breaker for keys, bans and events (cached, off the hot path) and one per limiter shard, so
        # a failing Cluster primary leaves the clients of the other shards limited.
        self.breaker = self._new_breaker()
        self._shard_breakers: dict[str, CircuitBreaker] = {"": self.breaker}  # one server: one breaker
        self.detector = AbuseDetector(
            settings.abuse,
            self.bans,
            on_detect=lambda rule, mode: self.metrics.detections.labels(rule, mode).inc(),
            store_available=lambda: not self.breaker.is_open,
        )
        self.metrics.circuit_open.set(0)
        self.trusted_proxies = parse_networks(settings.clients.trusted_proxies)
        self.over_limit = OverLimitCache(settings.limits.over_limit_cache_entries)
        # Leases save a Redis call per request; in process memory there is no call to save.
        remote = not isinstance(self.limiter, MemoryLimiter)
        self.leases = LeaseCache(settings.limits.lease_requests if remote else 1)
        self._lease_returns: threading.Thread | None = None
        # The proxy app starts its writer (usage.start()); the admin API's own runtime never records.
        self.usage: UsageRollups | None = None
        if settings.usage.database_url:
            self.usage = UsageRollups(
                settings.usage, RouteTemplates.from_settings(settings.limits, settings.usage), self.metrics
            )
        # The response cache (ratelimit_proxy/cache.py): bodies are bytes, so a client without decoding.
        cache_redis = (
            connect(settings.redis, timeout_seconds=settings.redis.timeout_ms / 1000) if settings.redis.url else None
        )
        self.cache = build_cache(settings.cache, cache_redis, registry)
        self.pools = Pools(settings.upstream, self.redis, registry)  # the upstream colours and their weights
        self.listener: ChannelListener | None = None
        self._sentinel_listener: ChannelListener | None = None

    def listen_for_changes(self) -> None:
        """Apply key, ban and tier changes announced by any process as they happen. The polls (bans every
        ``ban_refresh_seconds``, keys after ``key_cache_seconds``) stay as the fallback: pub/sub drops
        what is published while a listener is disconnected."""
        if self.redis is None or self.listener is not None:
            return
        client = connect(self.settings.redis, timeout_seconds=LISTENER_TIMEOUT_SECONDS, decode_responses=True)
        self.listener = ChannelListener(
            client, CHANGES_CHANNEL, self.apply_change, on_connect=self.resync, name="ratelimit-changes"
        )
        self.listener.start()
        if self.cache is not None:
            self.cache.follow(self.listener)  # purges arrive on the same channel ("cache url|tag ...")
        self.pools.listen(client)
        pool = getattr(self.redis, "connection_pool", None)
        if isinstance(pool, redis.sentinel.SentinelConnectionPool):
            # The Sentinels announce a new primary the moment they switch: the breaker closes at once
            # instead of at its next trial (up to breaker_reset_seconds later).
            self._sentinel_listener = ChannelListener(
                pool.sentinel_manager.sentinels,
                "+switch-master",
                lambda message: self._primary_switched(message, pool.service_name),
                name="ratelimit-sentinel",
            )
            self._sentinel_listener.start()

    def _primary_switched(self, message: str, master_name: str) -> None:
        """``+switch-master <name> <old ip> <old port> <new ip> <new port>`` from a Sentinel."""
        if message.split(" ", 1)[0] == master_name and self.breaker.reset():
            self._show_circuits()
            log.warning("sentinel switched %s to a new primary, circuit closed", master_name)

    def close(self) -> None:
        self.pools.close()
        for listener in (self.listener, self._sentinel_listener):
            if listener is not None:
                listener.close()
        if self.usage is not None:
            self.usage.close()  # the last flush

    def apply_change(self, message: str) -> None:
        kind, _, subject = message.partition(" ")
        if kind == "bans":
            self.bans.refresh()
        elif kind == "key":
            self.keys.forget(subject)
        elif kind == "tiers":
            self._next_tick = 0.0  # the next request's tick reads the version and reloads the tier file
        elif kind == "cache" and self.cache is not None:
            self.cache.apply_purge(subject)

    def resync(self) -> None:
        """After (re)connecting to the channel: re-read what may have changed while away."""
        self.bans.refresh()
        self.keys.forget()
        self._next_tick = 0.0
        if self.cache is not None and self.cache.local is not None:
            self.cache.local.clear()  # purges may have been missed while away

    def tick(self) -> None:
        """The polling fallback of the change announcements: reload the ban list and, when an admin
        announced a tier reload, read the tier file again. Every ``ban_refresh_seconds`` while this
        process hears no announcements, every ``SAFETY_POLL_SECONDS`` while it does (so a proxied
        request costs Redis its one script call). One request does it; the others go on."""
        now = time.monotonic()
        if now < self._next_tick or not self._tick_lock.acquire(blocking=False):
            return
        try:
            listening = self.listener is not None and self.listener.connected.is_set()
            self._next_tick = now + (SAFETY_POLL_SECONDS if listening else self.settings.redis.ban_refresh_seconds)
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
        except REDIS_ERRORS:
            return self._policy_version or 0

    def reload_limits(self) -> bool:
        """Read the tier file again and apply it; False when this process has no file to read."""
        if self._reload is None:
            return False
        limits = self._reload().limits
        policy = Policy(limits)
        self.policy = policy
        self.settings = replace(self.settings, limits=limits)
        if self.usage is not None:
            self.usage.routes = RouteTemplates.from_settings(limits, self.settings.usage)
        log.warning("tiers reloaded: %s", ", ".join(policy.tiers))
        return True

    def announce_reload(self) -> None:
        """Tell every process on this Redis to read its tier file again."""
        if self.redis is not None:
            try:
                self._policy_version = int(self.redis.incr(POLICY_VERSION_KEY))
                publish(self.redis, CHANGES_CHANNEL, "tiers")
            except REDIS_ERRORS as exc:
                raise StorageUnavailable(str(exc)) from exc

    @property
    def retry_after_outage(self) -> int:
        return max(1, math.ceil(self.settings.redis.breaker_reset_seconds))

    def lookup_key(self, api_key: str) -> KeyRecord | None:
        """The key's record; StorageUnavailable when the store fails or the circuit is open (an open
        circuit means no request waits for a Redis timeout here either)."""
        if self.breaker.is_open and not self.keys.is_static(api_key) and not self.breaker.allow():
            raise StorageUnavailable("circuit open")
        try:
            record = self.keys.lookup(api_key)
        except StorageUnavailable:
            self.metrics.redis_errors.inc()
            if self.breaker.failure():
                self.metrics.circuit_open.set(1)
            raise
        if self.breaker.success():
            self._show_circuits()
        return record

    def _show_circuits(self) -> None:
        self.metrics.circuit_open.set(1 if self.breaker.is_open or self.open_circuits() else 0)

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.settings.redis.breaker_failures, self.settings.redis.breaker_reset_seconds)

    def decide(self, bucket: str, limits: tuple[Limit, ...], cost: int) -> Decision | None:
        """The limiter's decision, or None when the store is unavailable (or the shard's circuit is open).
        A client still over a limit it was refused for is refused from the over-limit cache."""
        key = (bucket, limits, cost)
        known = self._from_memory(key)
        if known is not None:
            return known
        try:
            shard = self.limiter.shard(bucket)
        except (*REDIS_ERRORS, StorageUnavailable):  # no primary known for the slot right now
            self.metrics.redis_errors.inc()
            return None
        breaker = self._shard_breakers.get(shard)
        if breaker is None:
            breaker = self._shard_breakers.setdefault(shard, self._new_breaker())
        if not breaker.allow():
            return None
        for _ in range(LEASE_ROUNDS):
            ask = self.leases.ask(key)
            if ask.leasing or not self.leases.renewed(ask, self.settings.redis.timeout_ms / 1000):
                break
            known = self._from_memory(key)  # from the new lease, or refused with it
            if known is not None:
                return known
        else:  # the leases that came were spent by the others waiting: this request asks for itself
            ask = Ask(1, None, False)
        want, unspent, leasing = ask.want, ask.unspent, ask.leasing
        started, sent_at = time.perf_counter(), time.monotonic()
        try:
            decision = self.limiter.hit(bucket, limits, cost, want=want, unspent=unspent)
        except StorageUnavailable as exc:
            self.leases.unanswered(key, leasing)
            self.metrics.redis_errors.inc()
            if breaker.failure():
                self.metrics.circuit_open.set(1)
                log.error("limiter store %s unavailable, circuit open (%s mode): %s", shard, self.failure_mode, exc)
            return None
        except BaseException:
            self.leases.unanswered(key, leasing)  # or the client's next requests would wait for this one
            raise
        if breaker.success():
            self._show_circuits()
            log.warning("limiter store %s is back, circuit closed", shard)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        if not decision.allowed:
            self.over_limit.remember(key, decision, sent_at)
        return self.leases.answered(key, leasing, decision, sent_at)

    def _from_memory(self, key: tuple[str, tuple[Limit, ...], int]) -> Decision | None:
        """A decision with no Redis call: a refusal that surely stands, or a request from the client's lease."""
        standing = self.over_limit.check(key)
        if standing is not None:
            self.metrics.local_refusals.inc()
            return standing
        leased = self.leases.spend(key)
        if leased is not None:
            self.metrics.leased.inc()
        return leased

    def start_lease_returns(self, every_seconds: float = 0.25) -> None:
        """Give back what ended leases did not spend, for clients that sent nothing since (the others'
        leftovers go back with their next call)."""
        if self._lease_returns is not None or not self.leases.enabled:
            return
        alive = weakref.ref(self)  # the thread ends with the runtime (tests make many)

        def run() -> None:
            while True:
                time.sleep(every_seconds)
                runtime = alive()
                if runtime is None:
                    return
                runtime.give_back_unspent()
                del runtime

        self._lease_returns = threading.Thread(target=run, name="ratelimit-lease-returns", daemon=True)
        self._lease_returns.start()

    def give_back_unspent(self) -> None:
        for (bucket, limits, _), unspent in self.leases.sweep():
            try:
                self.limiter.hit(bucket, limits, 0, unspent=unspent)
            except StorageUnavailable as exc:  # they stay charged until their buckets end
                log.debug("could not give back leased requests: %s", exc)

    def open_circuits(self) -> list[str]:
        """The limiter shards whose breaker is open now (the shard that opened it may have been replaced
        by a promoted replica, whose own breaker is closed)."""
        current = self.limiter.shards()
        return [s for s, breaker in list(self._shard_breakers.items()) if breaker.is_open and s and s in current]

    def limiter_readiness(self) -> Degraded | bool:
        """For ``/readyz``: every limiter shard answers (True), or some clients are served unlimited (fail
        open: degraded) or refused (fail closed: an error)."""
        down = [shard or "redis" for shard, ok in self.limiter.ping_shards().items() if not ok]
        if self.breaker.is_open and "redis" not in down:
            down.append("redis")
        down += [shard for shard in self.open_circuits() if shard not in down]
        if not down:
            return True
        if self.failure_mode == "closed":
            raise StorageUnavailable(f"limiter refusing requests: {', '.join(down)} unavailable")
        return Degraded(f"limiter failing open: {', '.join(down)} unavailable")

    @property
    def failure_mode(self) -> str:
        return self.settings.redis.failure_mode
