"""Settings of the flag service (config/flags.yml, environment prefix ``FLAGS``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service_kit.config import checked, positive
from service_kit.redis_connect import RedisConnection, redis_url_check
from service_kit.settings import DatabaseSettings, LoggingSettings, SentrySettings, ServerSettings


def _names(value: list[str]) -> str | None:
    return None if value and all(name and name.isidentifier() for name in value) else "a non-empty list of names"


@dataclass(frozen=True)
class RedisSettings(RedisConnection):
    """Redis caches compiled snapshots and fans changes out to every replica; empty url: no Redis. Any
    topology of service_kit.redis_connect: standalone, Sentinel or Cluster."""

    url: str = checked("redis://127.0.0.1:6379/0", redis_url_check)
    socket_timeout_seconds: float = checked(0.5, positive)
    key_prefix: str = "flags:"


@dataclass(frozen=True)
class FlagsSection:
    """The service's own settings. Tiers are not among them: targeting and OFREP contexts use the platform's
    one list, ``service_kit.tiers.TIERS``; a ``tiers`` key in the file stops start-up as an unknown key."""

    environments: list[str] = field(
        default_factory=lambda: ["development", "staging", "production"], metadata={"check": _names}
    )
    stale_after_days: int = checked(30, positive)
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    sdk_key_cache_seconds: float = checked(10.0, positive)
    db_poll_seconds: float = checked(0.5, positive)  # how often a replica checks the DB while Redis is down
    stream_heartbeat_seconds: float = checked(15.0, positive)
    stream_max_seconds: float = checked(300.0, positive)  # SSE clients reconnect; no thread is held forever
    # Each open stream holds one of the worker's blocking threads; beyond this, 503 and SDKs poll instead.
    max_streams_per_worker: int = checked(8, positive)
    evaluation_flush_seconds: float = checked(5.0, positive)
    # Announced to OFREP providers (GET /ofrep/v1/configuration): polling faster only buys more 304s.
    ofrep_min_polling_seconds: float = checked(10.0, positive)


@dataclass(frozen=True)
class FlagsSettings:
    server: ServerSettings = field(default_factory=lambda: ServerSettings(port=8082))
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    database: DatabaseSettings = field(default_factory=lambda: DatabaseSettings(url="sqlite:///.run/flags.sqlite3"))
    redis: RedisSettings = field(default_factory=RedisSettings)
    flags: FlagsSection = field(default_factory=FlagsSection)
