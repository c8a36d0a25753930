"""Loading the proxy's settings: the kit's loader, then the checks only the proxy knows (tiers, routes,
static keys, upstream URL), turned into the kit's one-line ConfigError."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from ratelimit_proxy.cache import MAX_TAG_LENGTH
from ratelimit_proxy.cdn import validate_cdn
from ratelimit_proxy.clientip import parse_networks
from ratelimit_proxy.policy import Policy, PolicyError
from ratelimit_proxy.settings import ProxySettings
from ratelimit_proxy.usage import MAX_LENGTHS
from releases.settings import validate_release
from service_kit.cli import config_path
from service_kit.config import ConfigError, load_settings, url_check

SERVICE = "ratelimit_proxy"
ENV_PREFIX = "RATELIMIT_PROXY"
DEFAULT_CONFIG = "config/ratelimit_proxy.yml"
USAGE_URL = url_check("sqlite", "postgresql", "postgresql+psycopg")
MAX_USAGE_TIMEOUT_SECONDS = 4.0
ROUTE_LENGTH = MAX_LENGTHS["route"]


def validate(settings: ProxySettings, source: str) -> ProxySettings:
    try:
        Policy(settings.limits)
    except PolicyError as exc:
        raise ConfigError(exc.key, source, exc.expected, exc.got) from None
    for i, key in enumerate(settings.static_keys):
        if len(key.sha256) != 64:
            raise ConfigError(f"static_keys[{i}].sha256", source, "a hex SHA-256 (64 characters)", key.sha256)
    parts = urlsplit(settings.upstream.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("upstream.url", source, "http(s)://host[:port]", settings.upstream.url)
    validate_pools(settings, source)
    if settings.upstream.ca_file and not Path(settings.upstream.ca_file).is_file():
        raise ConfigError("upstream.ca_file", source, "empty, or an existing PEM file", settings.upstream.ca_file)
    networks = {
        "clients.trusted_proxies": settings.clients.trusted_proxies,
        "abuse.allow": settings.abuse.allow,
        "abuse.deny": settings.abuse.deny,
    }
    for setting, cidrs in networks.items():
        try:
            parse_networks(cidrs)
        except ValueError as exc:
            raise ConfigError(setting, source, "IP networks (CIDR)", str(exc)) from None
    validate_usage(settings, source)
    validate_cache(settings, source)
    validate_release(settings.release, source)
    return settings


def validate_cache(settings: ProxySettings, source: str) -> None:
    """The response cache: route globs and tags that can be used, and a CDN that can be called."""
    cache = settings.cache
    for i, route in enumerate(cache.routes):
        if not route.path.startswith("/"):
            raise ConfigError(f"cache.routes[{i}].path", source, "a glob of paths starting with /", route.path)
        for j, tag in enumerate(route.surrogate_keys):
            if not tag or len(tag) > MAX_TAG_LENGTH or any(c.isspace() for c in tag):
                expected = f"a tag of 1 to {MAX_TAG_LENGTH} characters without spaces"
                raise ConfigError(f"cache.routes[{i}].surrogate_keys[{j}]", source, expected, tag)
    if cache.local_max_bytes < 0:
        raise ConfigError("cache.local_max_bytes", source, "0 (off) or more bytes", cache.local_max_bytes)
    if problem := validate_cdn(cache.cdn):
        key, expected = problem
        raise ConfigError(
            key, source, expected, None if key == "cache.cdn.token" else getattr(cache.cdn, key.rsplit(".", 1)[1])
        )


POOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
MAX_POOLS = 8  # the colour label's set stays small


def validate_pools(settings: ProxySettings, source: str) -> None:
    """Pool names fit a metric label (lower-case, short, unique, at most MAX_POOLS), URLs are http(s), and
    the starting weights send traffic somewhere."""
    pools = settings.upstream.pools
    if len(pools) > MAX_POOLS:
        raise ConfigError("upstream.pools", source, f"at most {MAX_POOLS} pools", len(pools))
    seen: set[str] = set()
    for i, pool in enumerate(pools):
        if not POOL_NAME.match(pool.name) or pool.name in seen:
            expected = "a unique lower-case name (letters, digits, -; up to 16 characters)"
            raise ConfigError(f"upstream.pools[{i}].name", source, expected, pool.name)
        seen.add(pool.name)
        parts = urlsplit(pool.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream.pools[{i}].url", source, "http(s)://host[:port]", pool.url)
        if pool.weight < 0:
            raise ConfigError(f"upstream.pools[{i}].weight", source, "a weight of 0 or more", pool.weight)
        if not pool.ready_path.startswith("/"):
            raise ConfigError(f"upstream.pools[{i}].ready_path", source, "a path starting with /", pool.ready_path)
    if pools and sum(p.weight for p in pools) <= 0:
        raise ConfigError("upstream.pools", source, "at least one pool with a weight above 0", 0)


def validate_usage(settings: ProxySettings, source: str) -> None:
    """The usage section: a database URL of a known kind, waits that fit granian's kill timeout, and route
    templates that fit the rollups' route column."""
    usage = settings.usage
    if problem := USAGE_URL(usage.database_url):
        raise ConfigError("usage.database_url", source, problem, "(secret)")
    if usage.timeout_seconds > MAX_USAGE_TIMEOUT_SECONDS:
        expected = f"at most {MAX_USAGE_TIMEOUT_SECONDS} s (a worker's last flush must end before granian kills it)"
        raise ConfigError("usage.timeout_seconds", source, expected, usage.timeout_seconds)
    if not usage.database_url:
        return
    templates = {
        **{f"limits.routes[{i}].path": route.path for i, route in enumerate(settings.limits.routes)},
        **{f"limits.ai_paths[{i}]": glob for i, glob in enumerate(settings.limits.ai_paths)},
        **{f"usage.routes[{i}]": glob for i, glob in enumerate(usage.routes)},
    }
    for key, glob in templates.items():
        if not 1 <= len(glob) <= ROUTE_LENGTH:
            expected = f"a glob of 1 to {ROUTE_LENGTH} characters (the route column of the usage rollups)"
            raise ConfigError(key, source, expected, glob)


def load() -> ProxySettings:
    path = config_path(SERVICE, DEFAULT_CONFIG)
    return validate(load_settings(ProxySettings, path, ENV_PREFIX), str(path or "<defaults>"))
