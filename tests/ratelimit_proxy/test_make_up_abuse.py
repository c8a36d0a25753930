"""`make up` allow-lists loopback from automatic bans; the shipped config (compose, production) still bans it.

A developer's one `curl http://127.0.0.1:8080/.env` used to ban 127.0.0.1 for ten minutes, and with it every
demo key. The Procfile's proxy line adds `abuse.allow` for loopback; the test reads it from there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator

import pytest
from flask import Flask

from ratelimit_proxy.app import create_app
from ratelimit_proxy.config import DEFAULT_CONFIG, ENV_PREFIX, validate
from ratelimit_proxy.settings import ProxySettings, RedisSettings, UpstreamSettings
from service_kit.config import load_settings
from service_kit.settings import LoggingSettings
from tests import procfile
from tests.ratelimit_proxy.conftest import ROOT, Upstream

pytestmark = pytest.mark.integration
LOOPBACK = ["127.0.0.1", "::1"]
USAGE_DATABASE = f"{ENV_PREFIX}_USAGE__DATABASE_URL"  # make up's platform database, not this test's


def proxy_settings(environ: dict[str, str], upstream: Upstream, redis_url: str) -> ProxySettings:
    """The shipped config file under `environ`, pointed at this test's upstream and Redis."""
    path = ROOT / DEFAULT_CONFIG
    settings = validate(load_settings(ProxySettings, path, ENV_PREFIX, environ), str(path))
    return dataclasses.replace(
        settings,
        upstream=UpstreamSettings(url=upstream.url, connect_timeout_seconds=1.0, read_timeout_seconds=2.0),
        redis=RedisSettings(url=redis_url, timeout_ms=1000),
        logging=LoggingSettings(level="WARNING"),
    )


def make_up_environment() -> dict[str, str]:
    environ = procfile.environment(procfile.commands()["proxy"])
    environ.pop(USAGE_DATABASE)
    return environ


@pytest.fixture
def start() -> Iterator[list[Flask]]:
    apps: list[Flask] = []
    yield apps
    for app in apps:
        app.extensions["ratelimit_proxy"].close()


@pytest.mark.parametrize("address", LOOPBACK)
def test_make_up_never_bans_loopback_for_an_attack_path(
    address: str, upstream: Upstream, redis_url: str, start: list[Flask]
) -> None:
    settings = proxy_settings(make_up_environment(), upstream, redis_url)
    assert settings.abuse.attack_paths.mode == "enforce"  # the rule still runs: only loopback is left out
    app = create_app(settings)
    start.append(app)
    client = app.test_client()
    local = {"REMOTE_ADDR": address}
    assert client.get("/.env", environ_base=local).status_code == 404  # the upstream's answer, not a ban
    assert client.get("/api/v1/users", environ_base=local).status_code == 200
    assert app.extensions["ratelimit_proxy"].bans.active() == []
    other = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/.env", environ_base=other).status_code == 403  # anyone else is banned at once


@pytest.mark.parametrize("address", LOOPBACK)
def test_shipped_config_bans_loopback_for_an_attack_path(
    address: str, upstream: Upstream, redis_url: str, start: list[Flask]
) -> None:
    """What compose and production run: no allow-list, so a proxy behind nothing bans even loopback."""
    settings = proxy_settings({}, upstream, redis_url)
    assert settings.abuse.allow == []
    app = create_app(settings)
    start.append(app)
    client = app.test_client()
    local = {"REMOTE_ADDR": address}
    assert client.get("/.env", environ_base=local).status_code == 403
    assert client.get("/api/v1/users", environ_base=local).status_code == 403
    (ban,) = app.extensions["ratelimit_proxy"].bans.active()
    assert ipaddress.ip_network(ban.network) == ipaddress.ip_network(address)


def test_compose_files_leave_the_allow_list_as_shipped() -> None:
    """Compose runs the shipped config: only the Procfile (make up) allow-lists loopback."""
    for compose in sorted(ROOT.glob("docker-compose*.yml")):
        assert "ABUSE__ALLOW" not in compose.read_text(), compose.name
    assert "ABUSE__ALLOW" in procfile.commands()["proxy"]
