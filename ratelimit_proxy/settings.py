"""The proxy's settings: config/ratelimit_proxy.yml, overridable by ``RATELIMIT_PROXY_<SECTION>__<KEY>``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from releases.settings import ReleaseSettings
from service_kit.config import checked, positive, secret
from service_kit.redis_connect import RedisConnection
from service_kit.settings import DatabaseSettings, LoggingSettings, SentrySettings, ServerSettings
from service_kit.tiers import TIERS, Tier


@dataclass(frozen=True)
class TierSettings:
    burst_per_second: int
    per_minute: int
    per_hour: int
    ai_per_day: int


# The limits of each platform tier, in the order of service_kit.tiers.TIERS: the names are the platform's,
# the numbers the proxy's (config/ratelimit_proxy.yml gives the same).
DEFAULT_TIER_LIMITS = (
    TierSettings(5, 20, 100, 50),
    TierSettings(10, 50, 500, 500),
    TierSettings(20, 100, 1000, 2000),
    TierSettings(50, 500, 10000, 20000),
)


def default_tiers() -> dict[str, TierSettings]:
    return dict(zip(TIERS, DEFAULT_TIER_LIMITS, strict=True))


@dataclass(frozen=True)
class RouteLimitSettings:
    name: str
    quota: int
    window_seconds: int


@dataclass(frozen=True)
class RouteSettings:
    """A per-route override: ``methods`` empty means any method; ``path`` is a glob (``*`` spans /)."""

    name: str
    path: str
    methods: list[str] = field(default_factory=list)
    cost: int = 1
    limits: list[RouteLimitSettings] = field(default_factory=list)


@dataclass(frozen=True)
class LimitSettings:
    anonymous_tier: Tier = "free"
    buckets: int = 10
    ai_paths: list[str] = field(default_factory=lambda: ["/api/ai/*"])
    tiers: dict[str, TierSettings] = field(default_factory=default_tiers)  # one entry per platform tier
    routes: list[RouteSettings] = field(default_factory=list)
    # Refusals kept per process so a client over its limit is refused again without a Redis call
    # (ratelimit_proxy/refusals.py); 0 turns the cache off.
    over_limit_cache_entries: int = 100_000
    # At most this many requests of one busy client charged per Redis call and admitted from the worker's
    # memory (ratelimit_proxy/leases.py: no window ever admits more than its quota); 1 turns leases off.
    lease_requests: int = 32


@dataclass(frozen=True)
class PoolSettings:
    """One colour of the upstream (ratelimit_proxy/upstreams.py): ``name`` is the metrics' ``colour`` label."""

    name: str
    url: str
    weight: int = 0
    ready_path: str = "/readyz"  # what the release controller's health gate asks before traffic moves


@dataclass(frozen=True)
class UpstreamSettings:
    """``pools`` empty: one upstream at ``url``, as ever. Otherwise the colours, their starting weights
    (until the admin API or the release controller stores others in Redis) and their URLs; the timeouts
    and pool size apply to each."""

    url: str = "http://127.0.0.1:8000"
    connect_timeout_seconds: float = 2.0
    read_timeout_seconds: float = 30.0
    pool_size: int = 32
    preserve_host: bool = False
    ca_file: str = ""  # PEM bundle to trust for an https upstream (a private CA); empty: the system's
    pools: list[PoolSettings] = field(default_factory=list)


@dataclass(frozen=True)
class RedisSettings(RedisConnection):
    """Empty ``url``: counters, keys and bans in process memory (one process only). Any topology of
    service_kit.redis_connect: standalone, Sentinel or Cluster."""

    timeout_ms: int = 50
    failure_mode: Literal["open", "closed"] = "open"
    breaker_failures: int = 3
    breaker_reset_seconds: float = 1.0  # one trial per second per worker: recovery within 1 s of Redis returning
    key_cache_seconds: float = 5.0
    ban_refresh_seconds: float = 1.0


@dataclass(frozen=True)
class ClientSettings:
    """Who may set X-Forwarded-For: peers in ``trusted_proxies`` (CIDRs), or ``trusted_hops`` proxies."""

    trusted_proxies: list[str] = field(default_factory=list)
    trusted_hops: int = 0
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024


@dataclass(frozen=True)
class RuleSettings:
    """``mode``: enforce (ban), shadow (log and metric only) or off."""

    mode: Literal["enforce", "shadow", "off"] = "enforce"
    threshold: int = 10
    period_seconds: int = 60


@dataclass(frozen=True)
class AbuseSettings:
    limit_breaches: RuleSettings = field(default_factory=lambda: RuleSettings(threshold=30, period_seconds=60))
    scanning: RuleSettings = field(default_factory=lambda: RuleSettings(threshold=10, period_seconds=60))
    attack_paths: RuleSettings = field(default_factory=lambda: RuleSettings(threshold=1, period_seconds=60))
    many_keys: RuleSettings = field(default_factory=lambda: RuleSettings(threshold=5, period_seconds=300))
    attack_path_patterns: list[str] = field(
        default_factory=lambda: ["*/.env*", "*/wp-admin*", "*/wp-login.php*", "*/.git/*", "*../*", "*%2e%2e*"]
    )
    ban_seconds: int = 600
    ban_factor: float = 4.0
    ban_max_seconds: int = 7 * 86400
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StaticKey:
    """A development key from config: only its SHA-256 is written down."""

    sha256: str
    tier: Tier
    owner: str


def at_least_one(value: int) -> str | None:
    return None if value >= 1 else "at least 1"


@dataclass(frozen=True)
class UsageSettings:
    """API usage rollups (ratelimit_proxy/usage.py): per key and minute, counted in each worker's memory and
    written to the platform database's ``api_usage_rollups`` every ``flush_seconds``. An empty
    ``database_url`` turns them off. The URL can hold a password: environment only
    (``RATELIMIT_PROXY_USAGE__DATABASE_URL``)."""

    database_url: str = secret()
    flush_seconds: float = checked(10.0, positive)
    # Distinct rows (key, minute, route, status class) a worker holds while the database is slow or down;
    # calls that would need one more are dropped and counted (usage_rollup_dropped_total).
    max_rows: int = checked(20_000, at_least_one)
    batch_rows: int = checked(500, lambda v: None if 1 <= v <= 1000 else "between 1 and 1000 rows")
    timeout_seconds: float = checked(3.0, positive)  # connect, lock and statement waits of one flush (at most 4)
    # Route templates (globs, as limits.routes' paths) for the rollups' route column, after limits.routes'
    # paths and limits.ai_paths; a path none matches is "other".
    routes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CacheRouteSettings:
    """A route whose GET and HEAD responses the cache may store (when the origin's Cache-Control allows:
    ratelimit_proxy/cache_policy.py) and to which the CDN headers are added. ``path`` is a glob as in
    limits.routes. ``store: false`` adds the CDN headers only."""

    name: str
    path: str
    store: bool = True
    surrogate_keys: list[str] = field(default_factory=list)  # added to the origin's own Surrogate-Key
    surrogate_control: str = ""  # Surrogate-Control (Fastly, Akamai); empty: none added
    cdn_cache_control: str = ""  # CDN-Cache-Control (RFC 9213; Cloudflare, Akamai); empty: none added


@dataclass(frozen=True)
class CdnSettings:
    """Where purges are forwarded (ratelimit_proxy/cdn.py). ``service_id``: the Fastly service or the
    Cloudflare zone. ``token`` only from the environment (``RATELIMIT_PROXY_CACHE__CDN__TOKEN`` or
    ``…_TOKEN_FILE``). ``public_url``: the API's public origin, for the absolute URLs of URL purges.
    ``tag_purge: false`` (a plan without tags) sends the URLs the proxy knows under the tag instead."""

    provider: Literal["none", "fastly", "cloudflare"] = "none"
    api_url: str = ""  # empty: the provider's documented API
    service_id: str = ""
    token: str = secret()
    public_url: str = ""
    tag_purge: bool = True
    timeout_seconds: float = checked(5.0, positive)


@dataclass(frozen=True)
class CacheSettings:
    """The shared response cache (ratelimit_proxy/cache.py), in the proxy's Redis (memory without one).
    Only ``routes`` are cached. Bounds: ``max_entry_bytes`` per response, ``max_entries`` URLs in all
    (closest to expiry evicted first), ``max_keep_seconds`` per entry; ``local_max_bytes`` per worker for
    the local layer (0: off; every hit then reads Redis)."""

    enabled: bool = True
    routes: list[CacheRouteSettings] = field(default_factory=list)
    max_entry_bytes: int = checked(1024 * 1024, at_least_one)
    max_entries: int = checked(100_000, at_least_one)
    max_variants: int = checked(16, at_least_one)
    max_keep_seconds: int = checked(86_400, at_least_one)
    revalidate_keep_seconds: int = checked(3600, at_least_one)  # entries stored with no-cache (validator only)
    lock_lease_ms: int = checked(2000, at_least_one)
    # A URL whose answer may not be stored (no lifetime, private, no-store, Set-Cookie, ...) goes straight
    # upstream in this worker for this long, without a Redis call (hit-for-pass).
    pass_seconds: float = checked(10.0, positive)
    local_max_bytes: int = 32 * 1024 * 1024
    local_check_seconds: float = checked(1.0, positive)
    cdn: CdnSettings = field(default_factory=CdnSettings)


def proxy_server() -> ServerSettings:
    return ServerSettings(port=8080)


def admin_server() -> ServerSettings:
    return ServerSettings(port=9180, workers=1, blocking_threads=8)


@dataclass(frozen=True)
class AdminSettings:
    """The admin API's server, and an optional bootstrap token (environment only) that acts as an
    admin; kit API tokens with the admin role work too and are the ones to hand to people."""

    server: ServerSettings = field(default_factory=admin_server)
    token: str = secret()


@dataclass(frozen=True)
class ProxySettings:
    server: ServerSettings = field(default_factory=proxy_server)
    admin: AdminSettings = field(default_factory=AdminSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    database: DatabaseSettings = field(
        default_factory=lambda: DatabaseSettings(url="sqlite:///.run/ratelimit_proxy.sqlite3")
    )
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    clients: ClientSettings = field(default_factory=ClientSettings)
    abuse: AbuseSettings = field(default_factory=AbuseSettings)
    static_keys: list[StaticKey] = field(default_factory=list)
    usage: UsageSettings = field(default_factory=UsageSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    release: ReleaseSettings = field(default_factory=ReleaseSettings)  # vibelux-release (releases/)
    log_proxied_requests: bool = True
