"""The proxy's shared response cache: the I/O around the pure RFC 9111 decisions of cache_policy.py.

Where it sits (ratelimit_proxy/gateway.py): after the ban checks, the API key and the limiter, before
the upstream. A hit is still a request: it counts against the client's limits and gets its limit
headers (Envoy's ratelimit filter sits in front of its cache the same way), and an unknown key is still
a 401. Only GET and HEAD on the routes of ``cache.routes`` are looked up; a HEAD miss fetches the GET
(as nginx's ``proxy_cache_convert_head``) so both are served from one entry.

Entries are shared by every caller of a URL, in two partitions: requests without a credential, and
requests with one (API key or Authorization). A response to a request with a credential is only stored
when it says ``public``, ``s-maxage`` or ``must-revalidate`` (RFC 9111 3.5), and then it serves every
caller with a credential, whatever the key or tier: an origin whose answers depend on the caller says
``private``, or ``Vary: Authorization`` / ``Vary: X-API-Key`` (one variant per key, hashed). Answers
fetched without a credential never serve requests with one, where the origin might answer more.
With upstream colours (ratelimit_proxy/upstreams.py) each colour has its own two partitions: a request
is served only what the colour it goes to answered (``partition_of``).

Steps of one lookup:
1. The worker's local layer (bounded LRU by bytes), if Redis is the store and this worker hears the purge
   announcements (``rl:changes``); else Redis (cache_lookup.lua: one EVALSHA finds the variant).
2. Fresh: a hit. Stale within ``stale-while-revalidate``: served, refreshed in a background thread, one
   at a time across workers and replicas (the fill lock; a worker whose copy is older than Redis' takes
   that one instead).
   Otherwise revalidated with the stored validators (304: the entry is updated and served).
3. A miss fills single-flight: one thread per worker fetches while the others wait for it, and across
   workers and replicas the fill lock (``SET NX PX`` with a short lease) lets one process fetch while
   the others poll Redis for the entry (nginx's ``proxy_cache_lock``). A waiter whose leader got
   nothing storable, or whose lease ran out, fetches itself. A revalidation is collapsed the same way
   (the lock taken apart from the lookup, which found the entry): the others wait for the entry it
   refreshes, and an entry validated after a request began answers it even under ``no-cache``.
4. The origin failing (5xx or no answer) while an entry is stale: the entry answers if
   ``stale-if-error`` allows.

Redis unavailable (an error or the breaker open): the request bypasses the cache and goes upstream;
nothing waits for Redis more than ``redis.timeout_ms`` and, once the breaker opens, not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from prometheus_client import CollectorRegistry, Counter

from ratelimit_proxy.breaker import CircuitBreaker
from ratelimit_proxy.cache_policy import (
    Verdict,
    client_not_modified,
    conditional_headers,
    freshness_lifetime,
    header,
    initial_age,
    keep_seconds,
    not_modified_headers,
    serve_verdict,
    stale_if_error,
    storable,
    updated_headers,
    variant_key,
    vary_names,
)
from ratelimit_proxy.cache_store import CacheStore, Entry, Lookup, MemoryCacheStore, RedisCacheStore
from ratelimit_proxy.cdn import CdnPurger
from ratelimit_proxy.key_ban_storage import CHANGES_CHANNEL
from ratelimit_proxy.limiter_storage import StorageUnavailable
from ratelimit_proxy.policy import compile_glob
from ratelimit_proxy.settings import CacheRouteSettings, CacheSettings
from service_kit.pubsub import ChannelListener, publish
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

log = logging.getLogger("ratelimit_proxy")
# Purges are announced with the other changes (ratelimit_proxy/key_ban_storage.py): "cache url <key>" and
# "cache tag <tag>"; every worker drops those entries from its local layer.
CHANNEL = CHANGES_CHANNEL
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # as ratelimit_proxy/forward.py re-encodes a path
RESULTS = ("hit", "miss", "stale", "revalidated", "pass", "bypass")
FROM_CACHE = frozenset({"hit", "stale", "revalidated"})  # results whose body came from an entry
NOT_STORED = (
    "method", "status", "request_no_store", "no_store", "private", "authenticated", "vary_star", "set_cookie",
    "no_lifetime", "no_validator", "too_large", "store_error", "purged",
)  # fmt: skip
# The client's conditionals are answered by the cache itself; a fill asks for the whole response.
CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"})
ORIGIN_ERRORS = frozenset({500, 502, 503, 504})  # RFC 5861 4: what stale-if-error covers
POLL_SECONDS = 0.005  # how often a process waiting for another's fill reads Redis
MAX_TAGS = 32
MAX_PASSES = 10_000
# Answers that say the URL is not cacheable as such (the rest depend on the request, or on this answer).
PASS_REASONS = frozenset({"status", "no_store", "private", "vary_star", "set_cookie", "no_lifetime", "no_validator"})
MAX_TAG_LENGTH = 128
Fields = list[tuple[str, str]]


class Answer(Protocol):
    """What the upstream answered (the gateway's Reply)."""

    status: int
    reason: str
    headers: Fields
    body: bytes | Iterator[bytes]


Fetch = Callable[[str, Fields], Answer]  # (method, request headers) -> answer


@dataclass
class Served:
    status: int
    reason: str
    headers: Fields
    body: bytes | Iterator[bytes]
    result: str  # one of RESULTS, or "" when the cache was not consulted (a POST on a cached route)


@dataclass
class Fill:
    """The fill lock a miss holds: released by the store call that keeps its answer, or apart."""

    owner: str
    released: bool = False


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ratelimit_cache_requests_total",
            "GET and HEAD requests on cached routes by result (hit, miss, stale, revalidated, pass, bypass).",
            ["result"],
            registry=registry,
        )
        self.served_bytes = Counter(
            "ratelimit_cache_served_bytes_total", "Body bytes served from the cache.", registry=registry
        )
        self.not_stored = Counter(
            "ratelimit_cache_not_stored_total",
            "Responses on cached routes that were not stored, by reason (cache_policy.storable, too_large, ...).",
            ["reason"],
            registry=registry,
        )
        self.fill_waits = Counter(
            "ratelimit_cache_fill_waits_total",
            "Misses that waited for another request's fill (single-flight), by outcome (filled, fetched).",
            ["outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "ratelimit_cache_redis_errors_total", "Failed or skipped cache calls to Redis.", registry=registry
        )
        self.purges = Counter(
            "ratelimit_cache_purges_total", "Purge requests by kind (url, tag).", ["kind"], registry=registry
        )
        self.cdn_purges = Counter(
            "ratelimit_cache_cdn_purges_total",
            "Purges forwarded to the CDN, by provider and result (ok, error).",
            ["provider", "result"],
            registry=registry,
        )
        for result in RESULTS:
            self.requests.labels(result)


class LocalLayer:
    """Entries a worker keeps in its own memory, at most ``max_bytes``, least recently used out first.
    Keyed like Redis: (URL key, partition) -> the varied names and the variants."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._lock = threading.Lock()
        self._urls: OrderedDict[tuple[str, str], tuple[list[str], dict[str, Entry]]] = OrderedDict()
        self._partitions: set[str] = set()  # every partition seen (two per colour): what a URL purge drops

    def get(self, key: str, partition: str, request: Mapping[str, str]) -> Entry | None:
        found = self._urls.get((key, partition))
        if found is None:
            return None
        names, variants = found
        entry = variants.get(variant_key(names, request))
        if entry is not None:
            with contextlib.suppress(KeyError):  # dropped meanwhile
                self._urls.move_to_end((key, partition))
        return entry

    def put(self, key: str, partition: str, names: list[str], request: Mapping[str, str], entry: Entry) -> None:
        if entry.size > self.max_bytes // 4:
            return
        with self._lock:
            old_names, variants = self._urls.pop((key, partition), (names, {}))
            if old_names != names:
                self.bytes -= sum(e.size for e in variants.values())
                variants = {}
            variant = variant_key(names, request)
            previous = variants.get(variant)
            if previous is not None:
                self.bytes -= previous.size
            variants[variant] = entry
            self.bytes += entry.size
            self._partitions.add(partition)
            self._urls[(key, partition)] = (names, variants)
            while self.bytes > self.max_bytes and self._urls:
                _, (_, dropped) = self._urls.popitem(last=False)
                self.bytes -= sum(e.size for e in dropped.values())

    def drop(self, key: str) -> None:
        with self._lock:
            for partition in self._partitions:
                _, variants = self._urls.pop((key, partition), ([], {}))
                self.bytes -= sum(e.size for e in variants.values())

    def drop_tag(self, tag: str) -> None:
        with self._lock:
            tagged = [k for k, (_, v) in self._urls.items() if any(tag in e.tags for e in v.values())]
            for k in tagged:
                self.bytes -= sum(e.size for e in self._urls.pop(k)[1].values())

    def clear(self) -> None:
        with self._lock:
            self._urls.clear()
            self.bytes = 0


def partition_of(authenticated: bool, colour: str) -> str:
    """Which entries a request may be served from: those fetched with a credential or without, from the
    colour this request goes to (``colour``: the pool it picked; "" with one pool). Why the colour: during
    a canary a caller sticky to green must get green's answers, never blue's cached ones (they would mix
    versions and hide green's errors from the analysis); after a full switch nobody picks the old colour,
    so its entries serve no one and expire. All colours' entries stay in the URL's one hash: a purge is
    still one DEL."""
    partition = "auth" if authenticated else "anon"
    return f"{colour}/{partition}" if colour else partition


def url_key(target: str) -> str:
    """The URL part of a cache key: the target as forwarded (path and query), hashed to a fixed length."""
    key = _URL_KEYS.get(target)
    if key is None:
        key = hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        if len(_URL_KEYS) >= MAX_URL_KEYS:
            _URL_KEYS.clear()
        _URL_KEYS[target] = key
    return key


# The hashes of recent targets: a hit's URL is hashed once, not on every request (a dict lookup instead
# of SHA-256). Bounded: emptied when full.
_URL_KEYS: dict[str, str] = {}
MAX_URL_KEYS = 10_000


def purge_target(url: str) -> str:
    """The target a purge names: a path with its query, or an absolute URL whose path and query count;
    the path re-encoded as the proxy encodes what it forwards, so ``/a%20b`` and ``/a b`` are one URL."""
    if url.startswith("/"):  # a path as sent ("//a/b" included, which urlsplit would read as a host)
        path, _, query = url.partition("#")[0].partition("?")
    else:
        parts = urlsplit(url)
        path, query = parts.path or "/", parts.query
    path = quote(unquote(path, encoding="latin-1").encode("latin-1", "replace"), safe=PATH_SAFE)
    return f"{path}?{query}" if query else path


def surrogate_tags(headers: Fields, route: CacheRouteSettings) -> tuple[str, ...]:
    """The entry's tags: the origin's Surrogate-Key (space-separated) and the route's, at most MAX_TAGS."""
    origin = (header(headers, "surrogate-key") or "").split()
    tags = dict.fromkeys([*origin, *route.surrogate_keys])
    return tuple(t for t in tags if len(t) <= MAX_TAG_LENGTH)[:MAX_TAGS]


def cdn_fields(headers: Fields, route: CacheRouteSettings) -> Fields:
    """The response's fields with the route's CDN headers: Surrogate-Key merged with the origin's,
    Surrogate-Control and CDN-Cache-Control set when configured (replacing the origin's)."""
    if not (route.surrogate_keys or route.surrogate_control or route.cdn_cache_control):
        return headers
    replaced = {"surrogate-key"} if route.surrogate_keys else set()
    if route.surrogate_control:
        replaced.add("surrogate-control")
    if route.cdn_cache_control:
        replaced.add("cdn-cache-control")
    fields = [(k, v) for k, v in headers if k.lower() not in replaced]
    if route.surrogate_keys:
        fields.append(("Surrogate-Key", " ".join(surrogate_tags(headers, route))))
    if route.surrogate_control:
        fields.append(("Surrogate-Control", route.surrogate_control))
    if route.cdn_cache_control:
        fields.append(("CDN-Cache-Control", route.cdn_cache_control))
    return fields


def collect(body: bytes | Iterator[bytes], limit: int) -> tuple[bytes | None, bytes | Iterator[bytes]]:
    """The whole body if it is at most ``limit`` bytes (and the body to send on either way)."""
    if isinstance(body, bytes):
        return (body if len(body) <= limit else None), body
    read: list[bytes] = []
    size = 0
    for chunk in body:
        read.append(chunk)
        size += len(chunk)
        if size > limit:
            return None, _chain(read, body)
    return b"".join(read), b"".join(read)


def _chain(read: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from read
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def discard(body: bytes | Iterator[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()  # hands an upstream connection back (or closes it)


@dataclass(slots=True)
class Ask:
    """One request on a cached route, as every step of the cache needs it (never changed once built; not
    frozen, whose ``__init__`` costs a hit about 2 µs more: bench/RESULTS.md)."""

    method: str
    target: str
    key: str  # url_key(target)
    partition: str  # partition_of: "auth" (the request carries a credential) or "anon", per colour
    request: dict[str, str]  # the request's fields by lower-case name
    authenticated: bool
    route: CacheRouteSettings
    headers: Fields  # what to send upstream
    fetch: Fetch


class ResponseCache:
    """One per process (the proxy's workers and the admin API): lookups, fills, purges."""

    def __init__(
        self,
        settings: CacheSettings,
        store: CacheStore,
        registry: CollectorRegistry,
        publisher: AnyRedis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = CacheMetrics(registry)
        self.clock = clock
        self._publisher = publisher
        self._routes = [(compile_glob(r.path), r) for r in settings.routes]
        # The local layer only in front of Redis (the memory store is local already).
        self.local = (
            LocalLayer(settings.local_max_bytes) if publisher is not None and settings.local_max_bytes else None
        )
        self.breaker = CircuitBreaker(3, 1.0)
        self.listener: ChannelListener | None = None
        self._flights: dict[str, threading.Event] = {}
        self._flights_lock = threading.Lock()
        self._passes: dict[str, float] = {}  # URL key -> until when it goes straight upstream (monotonic)
        self._results = {result: self.metrics.requests.labels(result) for result in RESULTS}
        self._generation: int | None = None
        self._next_check = 0.0
        self._check_lock = threading.Lock()
        self.cdn = CdnPurger(settings.cdn, on_result=lambda p, r: self.metrics.cdn_purges.labels(p, r).inc())

    # -- routes and the local layer's freshness ------------------------------------------------------

    def route(self, path: str) -> CacheRouteSettings | None:
        for pattern, route in self._routes:
            if pattern.match(path):
                return route
        return None

    def follow(self, listener: ChannelListener) -> None:
        """Use the local layer only while ``listener`` (the runtime's, on ``rl:changes``) is connected; it
        hands this cache the purges (``apply_purge``) and empties the local layer at each reconnection, since
        what was published meanwhile is lost."""
        self.listener = listener

    def apply_purge(self, message: str) -> None:
        kind, _, subject = message.partition(" ")
        if kind == "url":
            self._passes.pop(subject, None)
        else:
            self._passes.clear()  # which URLs a tag held is not known here
        if self.local is None:
            return
        if kind == "url":
            self.local.drop(subject)
        elif kind == "tag":
            self.local.drop_tag(subject)

    def _local_usable(self) -> bool:
        """The local layer, while purges reach it: the listener is connected, and the purge generation
        (read once a ``local_check_seconds`` by one request) has not moved unseen."""
        if self.local is None or self.listener is None or not self.listener.connected.is_set():
            return False
        now = time.monotonic()
        if now >= self._next_check and self._check_lock.acquire(blocking=False):
            try:
                self._next_check = now + self.settings.local_check_seconds
                generation = self.store.generation()
                if self._generation is not None and generation != self._generation:
                    self.local.clear()  # a purge this worker did not hear about
                self._generation = generation
            except StorageUnavailable:
                self.local.clear()
                return False
            finally:
                self._check_lock.release()
        return True

    # -- the request path -------------------------------------------------------------------------------

    def respond(
        self,
        method: str,
        target: str,
        request: dict[str, str],
        authenticated: bool,
        route: CacheRouteSettings,
        headers: Fields,
        fetch: Fetch,
        colour: str = "",
    ) -> Served:
        """Answer one request on a cached route. ``request``: the request's fields by lower-case name;
        ``headers``: those to send upstream; ``fetch`` sends a request upstream (it never raises: an
        upstream failure is its 502/504 answer) to ``colour``, the upstream colour the request picked
        ("" with one pool), which also selects the entries it may be served from (``partition_of``)."""
        if method not in ("GET", "HEAD") or not route.store:
            answer = fetch(method, headers)
            return Served(answer.status, answer.reason, cdn_fields(answer.headers, route), answer.body, "")
        key, partition = url_key(target), partition_of(authenticated, colour)
        ask = Ask(method, target, key, partition, request, authenticated, route, headers, fetch)
        if self._passes.get(key, 0.0) > time.monotonic():  # known uncacheable: straight on (hit-for-pass)
            self._count("pass")
            answer = fetch(method, headers)
            fields = [*cdn_fields(answer.headers, route), ("X-Cache", "PASS")]
            return Served(answer.status, answer.reason, fields, answer.body, "pass")
        entry = None
        if self._local_usable() and self.local is not None:
            entry = self.local.get(key, partition, request)
        # without a local entry, the fill looks in Redis, taking the fill lock in the same call when it misses
        served = self._fill(ask) if entry is None else self._from_entry(ask, entry)
        self._count(served.result)
        return served

    def _count(self, result: str) -> None:
        self._results[result].inc()

    def _get(self, ask: Ask) -> Entry | None:
        """The entry from the local layer or the store (StorageUnavailable when Redis fails)."""
        use_local = self._local_usable()
        if use_local and self.local is not None:
            entry = self.local.get(ask.key, ask.partition, ask.request)
            if entry is not None:
                return entry
        entry = self._lookup(ask.key, ask.partition, ask.request).entry
        if entry is not None and use_local and self.local is not None:
            self.local.put(ask.key, ask.partition, self._names(entry), ask.request, entry)
        return entry

    @staticmethod
    def _names(entry: Entry) -> list[str]:
        return vary_names(entry.headers)

    def _lookup(self, key: str, partition: str, request: Mapping[str, str], owner: str = "") -> Lookup:
        if not self.breaker.allow():
            raise StorageUnavailable("cache circuit open")
        try:
            found = self.store.lookup(key, partition, request, owner, self.settings.lock_lease_ms)
        except StorageUnavailable:
            self.metrics.errors.inc()
            if self.breaker.failure():
                log.error("response cache: Redis unavailable, bypassing the cache")
            raise
        if self.breaker.success():
            log.warning("response cache: Redis is back")
        return found

    def _bypass(self, ask: Ask) -> Served:
        answer = ask.fetch(ask.method, ask.headers)
        fields = [*cdn_fields(answer.headers, ask.route), ("X-Cache", "BYPASS")]
        return Served(answer.status, answer.reason, fields, answer.body, "bypass")

    def _from_entry(self, ask: Ask, entry: Entry) -> Served:
        verdict = self._verdict(entry, ask.request)
        if verdict is Verdict.FRESH:
            return self._serve(ask, entry, "hit")
        if verdict is Verdict.STALE:
            return self._serve(ask, entry, "stale")
        if verdict is Verdict.STALE_WHILE_REVALIDATE:
            self._refresh_in_background(ask, entry)
            return self._serve(ask, entry, "stale")
        return self._fill(ask, entry)

    def _verdict(self, entry: Entry, request: Mapping[str, str]) -> Verdict:
        """serve_verdict, with a shortcut for the common case that gives the same answer: a request without
        Cache-Control or Pragma and an entry still inside its lifetime is fresh (every rule that could say
        otherwise needs a request directive or a lifetime already over)."""
        now = self.clock()
        if (
            "cache-control" not in request
            and "pragma" not in request
            and entry.initial_age + (now - entry.stored_at) < entry.lifetime
        ):
            return Verdict.FRESH
        return serve_verdict(entry.headers, entry.lifetime, entry.initial_age, entry.stored_at, request, now)

    def _serve(self, ask: Ask, entry: Entry, result: str) -> Served:
        age = int(entry.initial_age + max(0.0, self.clock() - entry.stored_at))
        fields = [*cdn_fields(list(entry.headers), ask.route), ("Age", str(age)), ("X-Cache", result.upper())]
        conditional = "if-none-match" in ask.request or "if-modified-since" in ask.request
        if conditional and client_not_modified(ask.request, entry.headers):
            fields = [*not_modified_headers(entry.headers), ("Age", str(age)), ("X-Cache", result.upper())]
            return Served(304, "Not Modified", fields, b"", result)
        if ask.method == "HEAD":
            return Served(entry.status, entry.reason, fields, b"", result)
        if result != "miss":
            self.metrics.served_bytes.inc(len(entry.body))
        return Served(entry.status, entry.reason, fields, entry.body, result)

    def _fill(self, ask: Ask, stale: Entry | None = None) -> Served:
        """A miss (or a revalidation), single-flight: see the module docstring, step 3."""
        flight = f"{ask.key}:{ask.partition}"
        with self._flights_lock:
            event = self._flights.get(flight)
            leader = event is None
            if leader:
                event = self._flights[flight] = threading.Event()
        assert event is not None
        if not leader:
            waited_from = self.clock()
            event.wait(self.settings.lock_lease_ms / 1000)
            served, stored = self._after_wait(ask, stale, waited_from)
            if served is not None:
                self.metrics.fill_waits.labels("filled").inc()
                return served
            self.metrics.fill_waits.labels("fetched").inc()
            if stale is None and stored is not None:  # stored, but older than this request: revalidate it
                return self._revalidate(ask, stored)
            return self._fetch(ask, stale)
        try:
            if stale is not None:
                return self._revalidate(ask, stale)
            owner = secrets.token_hex(8)
            try:
                found = self._lookup(ask.key, ask.partition, ask.request, owner)
            except StorageUnavailable:
                return self._bypass(ask)
            if found.entry is not None:
                entry = found.entry
                if self.local is not None and self._local_usable():
                    self.local.put(ask.key, ask.partition, self._names(entry), ask.request, entry)
                verdict = self._verdict(entry, ask.request)
                if verdict is Verdict.REVALIDATE:  # this thread leads the flight already: no nested fill
                    return self._revalidate(ask, entry)
                if verdict is Verdict.STALE_WHILE_REVALIDATE:
                    self._refresh_in_background(ask, entry)
                return self._serve(ask, entry, "hit" if verdict is Verdict.FRESH else "stale")
            if found.locked_by_us:
                fill = Fill(owner)
                try:
                    return self._fetch(ask, fill=fill)
                finally:
                    if not fill.released:  # nothing stored: release it here
                        self._unlock(ask.key, owner)
            if found.locked:  # another process is filling: wait for its entry, at most one lease
                served = self._wait_for_other(ask)
                if served is not None:
                    self.metrics.fill_waits.labels("filled").inc()
                    return served
                self.metrics.fill_waits.labels("fetched").inc()
            return self._fetch(ask)
        finally:
            with self._flights_lock:
                del self._flights[flight]
            event.set()

    def _revalidate(self, ask: Ask, stale: Entry) -> Served:
        """One revalidation of a URL at a time across workers and replicas, as a miss's fill: the process
        that takes the fill lock asks the origin; the others wait (at most one lease) for the entry it
        refreshes, and ask themselves when none comes (the origin's answer could not be stored)."""
        owner = secrets.token_hex(8)
        try:
            if not self.breaker.allow():
                raise StorageUnavailable("cache circuit open")
            taken = self.store.lock(ask.key, owner, self.settings.lock_lease_ms)
        except StorageUnavailable:
            self.metrics.errors.inc()
            return self._fetch(ask, stale)
        if taken:
            fill = Fill(owner)
            try:
                return self._fetch(ask, stale, fill)
            finally:
                if not fill.released:
                    self._unlock(ask.key, owner)
        served = self._wait_for_refresh(ask, stale)
        if served is not None:
            self.metrics.fill_waits.labels("filled").inc()
            return served
        self.metrics.fill_waits.labels("fetched").inc()
        return self._fetch(ask, stale)

    def _wait_for_refresh(self, ask: Ask, stale: Entry) -> Served | None:
        """The entry another process stored after ``stale`` (validated after this request began), if it
        comes within one lease."""
        deadline = time.monotonic() + self.settings.lock_lease_ms / 1000
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            try:
                entry = self._lookup(ask.key, ask.partition, ask.request).entry
            except StorageUnavailable:
                return None
            if entry is not None and entry.stored_at > stale.stored_at:
                if self.local is not None and self._local_usable():  # this worker's waiters take it there
                    self.local.put(ask.key, ask.partition, self._names(entry), ask.request, entry)
                return self._serve(ask, entry, "revalidated")
        return None

    def _after_wait(self, ask: Ask, stale: Entry | None, waited_from: float) -> tuple[Served | None, Entry | None]:
        """The entry the flight's leader left, if this request may take it (and the entry found): one
        stored or validated after this request began waiting answers it even where a stored one needs
        revalidation (``no-cache``)."""
        try:
            entry = self._get(ask)
        except StorageUnavailable:
            return None, None
        if entry is None:
            return None, None
        if entry.stored_at >= waited_from:
            return self._serve(ask, entry, "hit"), entry
        if stale is not None and entry.stored_at <= stale.stored_at:
            return None, entry
        verdict = self._verdict(entry, ask.request)
        if verdict is Verdict.REVALIDATE and stale is None:
            return None, entry
        return self._serve(ask, entry, "hit"), entry

    def _wait_for_other(self, ask: Ask) -> Served | None:
        deadline = time.monotonic() + self.settings.lock_lease_ms / 1000
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            try:
                found = self._lookup(ask.key, ask.partition, ask.request)
            except StorageUnavailable:
                return None
            if found.entry is not None:
                return self._serve(ask, found.entry, "hit")
            if not found.locked:
                return None  # the other got nothing storable (or gave up)
        return None

    def _unlock(self, key: str, owner: str) -> None:
        try:
            self.store.unlock(key, owner)
        except StorageUnavailable:
            self.metrics.errors.inc()  # the lease runs out on its own

    def _fetch(self, ask: Ask, stale: Entry | None = None, fill: Fill | None = None) -> Served:
        """Ask the origin (a GET, conditional when ``stale`` has validators); store what may be stored
        (releasing ``fill``'s lock in the same call)."""
        fields = [(k, v) for k, v in ask.headers if k.lower() not in CONDITIONALS]
        if stale is not None:
            fields += conditional_headers(stale.headers)
        generation = self._generation_before_fetch()
        sent_at = self.clock()
        answer = ask.fetch("GET", fields)
        received_at = self.clock()
        if stale is not None and answer.status == 304:
            discard(answer.body)
            merged = updated_headers(stale.headers, answer.headers)
            lifetime = freshness_lifetime(merged) or 0.0
            entry = replace(
                stale,
                headers=tuple(merged),
                stored_at=received_at,
                initial_age=initial_age(answer.headers, sent_at, received_at),
                lifetime=lifetime,
            )
            self._keep(ask, entry, fill, generation)
            return self._serve(ask, entry, "revalidated")
        if (
            stale is not None
            and answer.status in ORIGIN_ERRORS
            and stale_if_error(
                stale.headers, stale.lifetime, stale.initial_age, stale.stored_at, ask.request, received_at
            )
        ):
            discard(answer.body)
            return self._serve(ask, stale, "stale")
        ok, reason = storable("GET", answer.status, ask.request, answer.headers, ask.authenticated)
        body: bytes | Iterator[bytes] = answer.body
        if ok:
            whole, body = collect(answer.body, self.settings.max_entry_bytes)
            if whole is None:
                ok, reason = False, "too_large"
            else:
                kept = [(k, v) for k, v in answer.headers if k.lower() != "age"]
                entry = Entry(
                    answer.status,
                    answer.reason,
                    tuple(kept),
                    whole,
                    received_at,
                    initial_age(answer.headers, sent_at, received_at),
                    freshness_lifetime(answer.headers) or 0.0,
                    surrogate_tags(answer.headers, ask.route),
                )
                self._keep(ask, entry, fill, generation)
                return self._serve(ask, entry, "miss")  # a changed response too
        self.metrics.not_stored.labels(reason).inc()
        if reason in PASS_REASONS and answer.status not in ORIGIN_ERRORS:  # an outage says nothing of the URL
            self._remember_pass(ask.key)
        fields_out = [*cdn_fields(answer.headers, ask.route), ("X-Cache", "MISS")]
        if ask.method == "HEAD":
            discard(body)
            body = b""
        return Served(answer.status, answer.reason, fields_out, body, "miss")

    def _remember_pass(self, key: str) -> None:
        """An answer the cache may not store: the URL's next requests go straight upstream for
        ``cache.pass_seconds`` (Varnish's hit-for-pass), without a Redis call and without waiting for one
        another (single-flight would only queue them). Bounded: emptied when full."""
        if len(self._passes) >= MAX_PASSES:
            self._passes.clear()
        self._passes[key] = time.monotonic() + self.settings.pass_seconds

    def _generation_before_fetch(self) -> int | None:
        """The store's purge generation before a fill asks the origin (None when Redis cannot say: the store
        call will fail the same way, or is then unchecked)."""
        if not self.breaker.allow():
            return None
        try:
            return self.store.generation()
        except StorageUnavailable:
            self.metrics.errors.inc()
            return None

    def _keep(self, ask: Ask, entry: Entry, fill: Fill | None = None, generation: int | None = None) -> None:
        """Store the entry (Redis, and this worker's local layer); a failing store is counted, not fatal.
        ``generation``: what the store's purge generation was before the origin was asked; a purge since
        then may have been meant for this answer, so it is not kept (cache_store.py)."""
        if entry.lifetime <= 0:
            keep = float(self.settings.revalidate_keep_seconds)
        else:
            keep = min(float(self.settings.max_keep_seconds), keep_seconds(entry.headers, entry.lifetime))
        names = self._names(entry)
        try:
            if not self.breaker.allow():
                raise StorageUnavailable("cache circuit open")
            owner = fill.owner if fill else ""
            kept = self.store.store(
                ask.key, ask.partition, names, ask.request, entry, ask.target, keep, owner, generation
            )
            if fill is not None:
                fill.released = True
        except StorageUnavailable:
            self.metrics.errors.inc()
            self.metrics.not_stored.labels("store_error").inc()
            self.breaker.failure()
            return
        if not kept:
            self.metrics.not_stored.labels("purged").inc()
            self._announce(f"url {ask.key}")  # a worker that read it before the undo drops it
            return
        if self.local is not None and self._local_usable():
            self.local.put(ask.key, ask.partition, names, ask.request, entry)

    def _refresh_in_background(self, ask: Ask, stale: Entry) -> None:
        """stale-while-revalidate: one refresh of an entry at a time in each worker, off the request
        (``_refresh`` collapses them across workers and replicas)."""
        flight = f"{ask.key}:{ask.partition}"
        with self._flights_lock:
            if flight in self._flights:
                return
            event = self._flights[flight] = threading.Event()

        def refresh() -> None:
            try:
                self._refresh(replace(ask, method="GET"), stale)
            except Exception:  # a background thread: log, never raise into nothing
                log.exception("response cache: background refresh failed")
            finally:
                with self._flights_lock:
                    del self._flights[flight]
                event.set()

        threading.Thread(target=refresh, name="cache-refresh", daemon=True).start()

    def _refresh(self, ask: Ask, stale: Entry) -> None:
        """One background refresh across workers and replicas: an entry newer than ``stale`` in Redis (another
        process refreshed it) replaces this worker's copy without asking the origin; else the process that
        takes the fill lock asks, and the others leave it to that one. While the store fails nothing is
        refreshed: nothing could be stored."""
        try:
            entry = self._lookup(ask.key, ask.partition, ask.request).entry
        except StorageUnavailable:  # counted by the lookup
            return
        if entry is not None and entry.stored_at > stale.stored_at:
            if self.local is not None and self._local_usable():
                self.local.put(ask.key, ask.partition, self._names(entry), ask.request, entry)
            return
        owner = secrets.token_hex(8)
        try:
            if not self.breaker.allow():
                raise StorageUnavailable("cache circuit open")
            if not self.store.lock(ask.key, owner, self.settings.lock_lease_ms):
                return
        except StorageUnavailable:
            self.metrics.errors.inc()
            return
        fill = Fill(owner)
        try:
            discard(self._fetch(ask, stale, fill).body)
        finally:
            if not fill.released:
                self._unlock(ask.key, owner)

    # -- purges (admin API) ---------------------------------------------------------------------------

    def purge(self, urls: Sequence[str], tags: Sequence[str]) -> dict[str, Any]:
        """Delete the entries of ``urls`` and of every URL tagged with one of ``tags``, announce it to every
        worker, and forward it to the CDN. StorageUnavailable when Redis fails (nothing is half-announced:
        what was deleted is announced before the error)."""
        purged_urls = []
        for url in urls:
            target = purge_target(url)
            key = url_key(target)
            self.store.purge_url(key)
            self._announce(f"url {key}")
            purged_urls.append(target)
            self.metrics.purges.labels("url").inc()
        tagged: dict[str, int] = {}
        tag_targets: list[str] = []
        for tag in tags:
            targets = self.store.purge_tag(tag)
            self._announce(f"tag {tag}")
            tagged[tag] = len(targets)
            tag_targets += targets
            self.metrics.purges.labels("tag").inc()
        cdn = self.cdn.purge(purged_urls, list(tags), tag_targets)
        return {"urls": purged_urls, "tags": tagged, "cdn": cdn}

    def _announce(self, message: str) -> None:
        self.apply_purge(message)
        if self._publisher is not None:
            try:
                publish(self._publisher, CHANNEL, f"cache {message}")
            except REDIS_ERRORS as exc:  # the generation counter tells the workers within a second
                log.warning("response cache: purge announcement failed: %s", exc)


def build_cache(
    settings: CacheSettings, redis_client: AnyRedis | None, registry: CollectorRegistry
) -> ResponseCache | None:
    """The cache of one process, or None when ``cache.enabled`` is false. ``redis_client``: a client with
    ``decode_responses=False`` on the proxy's Redis (None: the in-memory store, one process)."""
    if not settings.enabled:
        return None
    store: CacheStore
    if redis_client is None:
        store = MemoryCacheStore(settings.max_entries, settings.max_variants)
    else:
        store = RedisCacheStore(redis_client, settings.max_entries, settings.max_variants)
    return ResponseCache(settings, store, registry, publisher=redis_client)


def request_fields(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's header fields by lower-case name, from a WSGI environ."""
    return {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k[:5] == "HTTP_"}


def iterate(body: bytes | Iterable[bytes]) -> Iterable[bytes]:
    return [body] if isinstance(body, bytes) else body
