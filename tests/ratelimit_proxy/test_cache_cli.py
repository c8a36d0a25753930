"""``vibelux-proxy cache purge`` on every Redis topology (one server, Sentinel, a 3-master Cluster), against a
proxy app on the same Redis and a real HTTP origin; and the cache's admin routes as their own blueprint."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.cli import cli
from ratelimit_proxy.settings import CacheSettings, LimitSettings, RedisSettings
from service_kit.auth import AuditRecord
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings
from service_kit.tiers import TIERS
from tests.conftest import RedisUnderTest
from tests.ratelimit_proxy.conftest import build_settings
from tests.ratelimit_proxy.test_cache_proxy import HUGE, ROUTES, Origin
from tests.servers import wait_until

pytestmark = pytest.mark.integration
PATH = "/public/cli-purge"


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def proxy_and_env(
    any_redis: RedisUnderTest, origin: Origin, tmp_path: Path
) -> Iterator[tuple[FlaskClient, dict[str, str], str]]:
    """A proxy on ``any_redis`` with the cache on, and the environment the CLI reads the same config from."""
    database_url = f"sqlite:///{tmp_path / 'proxy.sqlite3'}"
    settings = dataclasses.replace(
        build_settings(origin.url, limits=LimitSettings(tiers=dict.fromkeys(TIERS, HUGE))),
        redis=any_redis.settings(RedisSettings, timeout_ms=1000, breaker_reset_seconds=0.5),
        database=DatabaseSettings(url=database_url),
        cache=CacheSettings(routes=ROUTES),
    )
    proxy = create_app(settings)
    listener = proxy.extensions["ratelimit_proxy"].cache.listener
    assert listener is not None and listener.connected.wait(10)
    config = tmp_path / "proxy.yml"
    routes = [{"name": r.name, "path": r.path, "surrogate_keys": list(r.surrogate_keys)} for r in ROUTES]
    config.write_text(
        yaml.safe_dump(
            {"redis": {"url": any_redis.url}, "database": {"url": database_url}, "cache": {"routes": routes}}
        )
    )
    env = {"VIBELUX_RATELIMIT_PROXY_CONFIG": str(config), **any_redis.environment("RATELIMIT_PROXY")}
    yield proxy.test_client(), env, database_url
    proxy.extensions["ratelimit_proxy"].close()


def audited_actions(database_url: str) -> list[tuple[str, str]]:
    """The audit log's (action, actor) rows, oldest first (the kit's tables made if nothing wrote yet)."""
    engine = make_engine(database_url)
    upgrade(engine)
    log = AuditRecord.__table__
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.select(log.c.action, log.c.actor).order_by(log.c.id)).all()
    return [(action, actor) for action, actor in rows]


def test_cli_purge_by_url_and_by_tag_reaches_the_proxy_and_is_audited(
    proxy_and_env: tuple[FlaskClient, dict[str, str], str], origin: Origin
) -> None:
    client, env, database_url = proxy_and_env
    origin.set(PATH, [("Cache-Control", "max-age=600")], b"v1")
    client.get(PATH + "?page=1")
    assert client.get(PATH + "?page=1").headers["X-Cache"] == "HIT"
    origin.set(PATH, [("Cache-Control", "max-age=600")], b"v2")
    purged = CliRunner().invoke(cli, ["cache", "purge", "--url", f"https://api.example.com{PATH}?page=1"], env=env)
    assert purged.exit_code == 0, purged.output
    assert f"purged url {PATH}?page=1" in purged.output
    wait_until(lambda: client.get(PATH + "?page=1").data == b"v2", timeout=5)  # the announcement reached it

    origin.set(PATH, [("Cache-Control", "max-age=600")], b"v3")
    assert client.get(PATH + "?page=1").headers["X-Cache"] == "HIT"  # v2, stored under the route's tag
    tagged = CliRunner().invoke(cli, ["cache", "purge", "--tag", "public"], env=env)
    assert tagged.exit_code == 0, tagged.output
    assert "purged tag public\t1 URLs" in tagged.output
    wait_until(lambda: client.get(PATH + "?page=1").data == b"v3", timeout=5)
    actions = audited_actions(database_url)
    assert [a for a, _ in actions] == ["cache.purge_urls", "cache.purge_tags"]
    assert all(actor.startswith("cli:") for _, actor in actions)


@pytest.mark.parametrize("any_redis", ["standalone"], indirect=True)  # checked before any Redis call
@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ([], "--url, --tag"),
        (["--url", "api/v1/no-slash"], "urls"),
        (["--url", "/a b"], "urls"),  # a space: the admin API's pattern refuses it too
        (["--tag", "x" * 129], "tags"),
    ],
)
def test_cli_purge_refuses_bad_arguments_naming_them_and_purges_nothing(
    proxy_and_env: tuple[FlaskClient, dict[str, str], str], origin: Origin, arguments: list[str], named: str
) -> None:
    client, env, database_url = proxy_and_env
    origin.set(PATH, [("Cache-Control", "max-age=600")], b"kept")
    client.get(PATH)
    refused = CliRunner().invoke(cli, ["cache", "purge", *arguments], env=env)
    assert refused.exit_code == 2 and named in refused.output, refused.output
    assert client.get(PATH).headers["X-Cache"] == "HIT"
    assert audited_actions(database_url) == []


def test_cache_admin_routes_are_a_blueprint_of_their_own(tmp_path: Path, redis_url: str) -> None:
    """admin_cache used to add its routes to admin.bp by being imported inside create_admin_app."""
    settings = dataclasses.replace(
        build_settings("http://127.0.0.1:9", redis_url), database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'a.db'}")
    )
    admin = create_admin_app(settings)
    assert {"ratelimit_cache.purge_urls", "ratelimit_cache.purge_tags"} <= set(admin.view_functions)
    assert "ratelimit_admin.purge_urls" not in admin.view_functions
    paths = admin.test_client().get("/openapi.json").get_json()["paths"]
    assert {"/api/v1/cache/purge/urls", "/api/v1/cache/purge/tags"} <= set(paths)
    admin.extensions["ratelimit_proxy"].close()
