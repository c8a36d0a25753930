"""Upstream pools with colours (blue, green, ...): which colour serves a request, and how weight changes
reach every replica.

Order of a request: ``Pools.pick(sticky)`` hashes the caller (the API key's id, else the client IP) into
the current weights (``sticky_colour``, a pure function pinned by tests/vectors/ratelimit_proxy_pools/)
and hands back that colour's ``Pool``: its own keep-alive ``Upstream`` client and its own metrics. The
request stays on that object to the end, so:

- a weight change affects only requests that have not picked yet: in-flight ones finish on their colour,
  and no connection is closed (the old colour's idle sockets stay pooled for its remaining share);
- the one retry ``Upstream.send`` makes (a reused connection the upstream closed idle, idempotent and
  bodiless requests only) goes to the same colour, never across.

Shared state: the weights live in Redis (``POOL_WEIGHTS_KEY``, JSON with a version). A change is written
there and announced on ``POOL_CHANNEL``; every worker of every replica re-reads it at once. The version
is also polled by a request every ``refresh_seconds`` (1 s) while a worker's listener is disconnected,
every 30 s while it is connected (pub/sub drops what is published while a listener is away).
Without Redis, weights are in process memory (one process). Without ``upstream.pools`` the proxy has one
pool, ``default``, at ``upstream.url``: as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Histogram

from ratelimit_proxy.forward import Upstream
from ratelimit_proxy.limiter_storage import StorageUnavailable
from ratelimit_proxy.metrics import UPSTREAM_BUCKETS, status_class
from ratelimit_proxy.settings import UpstreamSettings
from service_kit.pubsub import ChannelListener, publish
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

log = logging.getLogger("ratelimit_proxy.upstreams")
POOL_WEIGHTS_KEY = "rl:pools:weights"
POOL_CHANNEL = "rl:pools:changes"
DEFAULT_POOL = "default"
SAFETY_POLL_SECONDS = 30.0
BUCKETS = 10_000  # weight resolution: 0.01% of the callers


def sticky_point(sticky: str) -> int:
    """The caller's fixed point in [0, BUCKETS): the first 8 bytes of SHA-256, so it is the same in every
    process and replica (Python's ``hash`` is salted per process) and spread evenly."""
    return int.from_bytes(hashlib.sha256(sticky.encode()).digest()[:8], "big") % BUCKETS


def sticky_colour(weights: Sequence[tuple[str, int]], sticky: str) -> str:
    """The colour of ``sticky`` for ``weights`` (name, non-negative weight) in configured order: colour i owns
    the share [sum of weights before i, that sum + weight i) of [0, total). Pure, no I/O.

    Why ranges in a fixed order: moving weight from one colour to its neighbour moves the range boundary
    only, so the callers that change colour all go from the colour that shrank to the one that grew, never
    back and forth (5 -> 25% moves 20% of callers from blue to green and nobody from green to blue). With
    blue and green, the two colours of a release, they are always neighbours. Ties: a weight of 0 owns
    nothing; an all-zero table falls back to the first colour (refused at the admin API and config anyway)."""
    total = sum(weight for _, weight in weights)
    if total <= 0:
        return weights[0][0]
    point = sticky_point(sticky)
    upper = 0
    for name, weight in weights:
        upper += weight
        # point / BUCKETS < upper / total, in integers
        if weight > 0 and point * total < upper * BUCKETS:
            return name
    return next(name for name, weight in reversed(weights) if weight > 0)


class PoolMetrics:
    """Per colour: requests by status class, errors (5xx, those the proxy made for an upstream that failed
    included), the time until the response head, and answers from the response cache. ``colour`` comes
    only from the configured names."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ratelimit_pool_requests_total",
            "Requests forwarded to each upstream colour, by response status class.",
            ["colour", "status_class"],
            registry=registry,
        )
        self.errors = Counter(
            "ratelimit_pool_errors_total",
            "Requests of each colour answered 5xx, the 502/504 of an upstream that failed to answer included.",
            ["colour"],
            registry=registry,
        )
        # Apart from requests_total: the analysis judges a colour by what it answered itself, and a hit's
        # microseconds would flatter its p99 and dilute its error ratio; yet a hit is that colour's answer.
        self.cached = Counter(
            "ratelimit_pool_cached_answers_total",
            "Answers served from the response cache, by the colour whose response the entry is, and status class.",
            ["colour", "status_class"],
            registry=registry,
        )
        self.seconds = Histogram(
            "ratelimit_pool_duration_seconds",
            "Time until each colour's response head arrived (or it failed).",
            ["colour"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )


class Pool:
    """One colour: its client, its URL (for the release controller's health gate) and metric children."""

    def __init__(self, name: str, settings: UpstreamSettings, metrics: PoolMetrics) -> None:
        self.name = name
        self.url = settings.url
        self.client = Upstream(settings)
        self._requests = {c: metrics.requests.labels(name, c) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}
        self._cached = {c: metrics.cached.labels(name, c) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}
        self._errors = metrics.errors.labels(name)
        self._seconds = metrics.seconds.labels(name)

    def observe(self, status: int, seconds: float) -> None:
        self._requests.get(status_class(status), self._requests["5xx"]).inc()
        if status >= 500:
            self._errors.inc()
        self._seconds.observe(seconds)

    def observe_cached(self, status: int) -> None:
        """An answer from this colour's cache entries (the cache keeps each colour's apart)."""
        self._cached.get(status_class(status), self._cached["5xx"]).inc()


def configured_weights(settings: UpstreamSettings) -> dict[str, int]:
    if not settings.pools:
        return {DEFAULT_POOL: 100}
    return {p.name: p.weight for p in settings.pools}


def weights_problem(names: Sequence[str], weights: Mapping[str, int]) -> tuple[str, str] | None:
    """(field, what is wrong) for a weight table that cannot be used, else None."""
    for name, weight in weights.items():
        if name not in names:
            return name, f"not a configured pool (pools: {', '.join(names)})"
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            return name, "a weight must be a non-negative integer"
    if sum(weights.get(n, 0) for n in names) <= 0:
        return "weights", "at least one pool needs a weight above 0"
    return None


@dataclass(frozen=True)
class WeightTable:
    version: int
    weights: dict[str, int]  # every configured pool, in configured order

    def ordered(self, names: Sequence[str]) -> list[tuple[str, int]]:
        return [(n, self.weights.get(n, 0)) for n in names]


class Pools:
    """Every configured colour, and the weights shared through Redis (see the module docstring)."""

    def __init__(
        self,
        settings: UpstreamSettings,
        redis: AnyRedis | None,
        registry: CollectorRegistry,
        refresh_seconds: float = 1.0,
    ) -> None:
        metrics = PoolMetrics(registry)
        if settings.pools:
            self.pools = {p.name: Pool(p.name, replace(settings, url=p.url, pools=[]), metrics) for p in settings.pools}
            self.ready_paths = {p.name: p.ready_path for p in settings.pools}
        else:
            self.pools = {DEFAULT_POOL: Pool(DEFAULT_POOL, settings, metrics)}
            self.ready_paths = {DEFAULT_POOL: "/readyz"}
        self.names = list(self.pools)
        self.redis = redis
        self.configured = WeightTable(0, configured_weights(settings))
        self.table = self.configured
        self._order = self.table.ordered(self.names)
        self._refresh_seconds = refresh_seconds
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        self.listener: ChannelListener | None = None

    @property
    def single(self) -> bool:
        return len(self.names) == 1

    def pick(self, sticky: str) -> Pool:
        """The colour serving a caller now; refreshes the weights from Redis at most every refresh_seconds."""
        if self.single:
            return self.pools[self.names[0]]
        if self.redis is not None and time.monotonic() >= self._next_refresh:
            self.refresh()
        return self.pools[sticky_colour(self._order, sticky)]

    def refresh(self, wait: bool = False) -> None:
        """Re-read the shared weights (one GET); the weights known stay when Redis does not answer. A request
        never waits for another's refresh; an announcement does (``wait``), since the refresh under way may
        have read the weights just before the change it announces."""
        if self.redis is None or not self._lock.acquire(blocking=wait):
            return
        try:
            # While the listener hears announcements the poll is only the safety net (as the runtime's tick).
            listening = self.listener is not None and self.listener.connected.is_set()
            self._next_refresh = time.monotonic() + (SAFETY_POLL_SECONDS if listening else self._refresh_seconds)
            table = self.read()
            if table.version != self.table.version:
                self._set(table)
        except StorageUnavailable as exc:
            log.warning("pool weights not refreshed, keeping %s: %s", self.table.weights, exc)
        finally:
            self._lock.release()

    def _set(self, table: WeightTable) -> None:
        self.table = table
        self._order = table.ordered(self.names)  # one assignment: a request sees the old order or the new

    def read(self) -> WeightTable:
        """The shared table; the configured weights until someone wrote one."""
        if self.redis is None:
            return self.table
        try:
            raw = self.redis.get(POOL_WEIGHTS_KEY)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable(str(exc)) from exc
        if not raw:
            return self.configured
        data = json.loads(raw)
        weights = {n: int(data["weights"].get(n, 0)) for n in self.names}
        if sum(weights.values()) <= 0:  # written for other pools (another config): ignore
            return self.configured
        return WeightTable(int(data["version"]), weights)

    def write(self, weights: Mapping[str, int]) -> WeightTable:
        """Store new weights (pools not named get 0) and announce them to every process."""
        problem = weights_problem(self.names, weights)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        full = {n: int(weights.get(n, 0)) for n in self.names}
        if self.redis is None:
            table = WeightTable(self.table.version + 1, full)
            self._set(table)
            return table
        try:
            version = int(self.redis.incr(POOL_WEIGHTS_KEY + ":version"))
            table = WeightTable(version, full)
            self.redis.set(POOL_WEIGHTS_KEY, json.dumps({"version": version, "weights": full}))
            publish(self.redis, POOL_CHANNEL, str(version))
        except REDIS_ERRORS as exc:
            raise StorageUnavailable(str(exc)) from exc
        self._set(table)
        return table

    def listen(self, client: AnyRedis) -> None:
        """Follow announcements on POOL_CHANNEL (``client``: a connection with a longer timeout)."""
        if self.single or self.listener is not None:
            return

        def changed(_message: str) -> None:
            self.refresh(wait=True)

        def connected() -> None:
            self.refresh(wait=True)

        self.listener = ChannelListener(client, POOL_CHANNEL, changed, on_connect=connected, name="pool-weights")
        self.listener.start()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
