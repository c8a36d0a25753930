"""The proxy's settings: config/ratelimit_proxy.yml, overridable by ``PROXY_<SECTION>__<KEY>``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class TierSettings:
    burst_per_second: int
    per_minute: int
    per_hour: int
    ai_per_day: int


def default_tiers() -> dict[str, TierSettings]:
    return {
        "free": TierSettings(5, 20, 100, 50),
        "startup": TierSettings(10, 50, 500, 500),
        "professional": TierSettings(20, 100, 1000, 2000),
        "enterprise": TierSettings(50, 500, 10000, 20000),
    }


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
    anonymous_tier: str = "free"
    buckets: int = 10
    ai_paths: list[str] = field(default_factory=lambda: ["/api/ai/*"])
    tiers: dict[str, TierSettings] = field(default_factory=default_tiers)
    routes: list[RouteSettings] = field(default_factory=list)


@dataclass(frozen=True)
class UpstreamSettings:
    url: str = "http://127.0.0.1:8000"
    connect_timeout_seconds: float = 2.0
    read_timeout_seconds: float = 30.0
    pool_size: int = 32
    preserve_host: bool = False


@dataclass(frozen=True)
class StorageSettings:
    """Empty ``redis_url``: counters, keys and bans in process memory (one process only)."""

    redis_url: str = ""
    timeout_ms: int = 50
    failure_mode: Literal["open", "closed"] = "open"
    breaker_failures: int = 3
    breaker_reset_seconds: float = 5.0
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
    limit_breaches: RuleSettings = RuleSettings(threshold=30, period_seconds=60)
    scanning: RuleSettings = RuleSettings(threshold=10, period_seconds=60)
    attack_paths: RuleSettings = RuleSettings(threshold=1, period_seconds=60)
    many_keys: RuleSettings = RuleSettings(threshold=5, period_seconds=300)
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
    tier: str
    owner: str


@dataclass(frozen=True)
class ProxySettings:
    upstream: UpstreamSettings = UpstreamSettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitSettings = LimitSettings()
    clients: ClientSettings = ClientSettings()
    abuse: AbuseSettings = AbuseSettings()
    static_keys: list[StaticKey] = field(default_factory=list)
    admin_token_sha256: str = ""

    def replace(self, **changes: object) -> ProxySettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
