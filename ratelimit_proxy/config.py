"""Loading the proxy's settings: the kit's loader, then the checks only the proxy knows (tiers, routes,
static keys, upstream URL), turned into the kit's one-line ConfigError."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ratelimit_proxy.clientip import parse_networks
from ratelimit_proxy.policy import Policy, PolicyError
from ratelimit_proxy.settings import ProxySettings
from service_kit.cli import config_path
from service_kit.config import ConfigError, load_settings

SERVICE = "ratelimit_proxy"
ENV_PREFIX = "RATELIMIT_PROXY"
DEFAULT_CONFIG = "config/ratelimit_proxy.yml"


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
    return settings


def load() -> ProxySettings:
    path = config_path(SERVICE, DEFAULT_CONFIG)
    return validate(load_settings(ProxySettings, path, ENV_PREFIX), str(path or "<defaults>"))
