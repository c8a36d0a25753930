"""The staging profile (docker-compose.staging.yml, `make staging` with Procfile.staging): checked as files
against the repo, as tests/test_compose.py does for production, since no Docker engine runs here. Both
must point the proxy, its colours, Prometheus and the release controller at each other, 10000 ports above
production's."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from ratelimit_proxy.config import ENV_PREFIX, validate
from ratelimit_proxy.settings import ProxySettings
from service_kit.config import load_settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.staging.yml").read_text())
SERVICES = COMPOSE["services"]
OFFSET = 10000
PROCFILE = dict(line.split(": ", 1) for line in (REPO / "Procfile.staging").read_text().splitlines() if line.strip())


def staging_settings(name: str) -> ProxySettings:
    path = REPO / "config" / name
    return validate(load_settings(ProxySettings, path, ENV_PREFIX, {}), str(path))


def test_staging_compose_is_its_own_project_with_host_ports_10000_above_production() -> None:
    production = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert COMPOSE["name"] != production["name"]
    published = {name: [p.split(":") for p in service.get("ports", [])] for name, service in SERVICES.items()}
    assert published["proxy"] == [["18080", "8080"], ["19180", "9180"]]
    assert published["prometheus"] == [["19090", "9090"]]
    assert published["demo-blue"] == [["18000", "8000"]]
    assert published["demo-green"] == [["18010", "8000"]]
    production_ports = {p.split(":")[0] for s in production["services"].values() for p in s.get("ports", [])}
    staging_ports = {host for ports in published.values() for host, _ in ports}
    assert not production_ports & staging_ports  # both run on one Docker host


def test_staging_compose_proxy_and_controller_read_the_staging_config_which_names_the_compose_services() -> None:
    for name in ("proxy", "release-controller"):
        assert (
            SERVICES[name]["environment"]["VIBELUX_RATELIMIT_PROXY_CONFIG"]
            == "config/ratelimit_proxy.staging.compose.yml"
        )
    assert SERVICES["release-controller"]["command"] == ["vibelux-release", "run"]
    settings = staging_settings("ratelimit_proxy.staging.compose.yml")
    pools = {p.name: urlsplit(p.url) for p in settings.upstream.pools}
    assert set(pools) == {"blue", "green"}
    for colour, url in pools.items():
        command = SERVICES[f"demo-{colour}"]["command"]
        assert url.hostname == f"demo-{colour}"
        assert str(url.port) == command[command.index("--port") + 1]
        assert command[command.index("--colour") + 1] == colour
    prometheus = urlsplit(settings.release.analysis.prometheus_url)
    assert prometheus.hostname == "prometheus" and prometheus.port == 9090
    assert urlsplit(settings.redis.url).hostname == "redis"
    scrape = yaml.safe_load((REPO / "config" / "prometheus.staging.compose.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"proxy:{settings.admin.server.port}"]
    assert scrape["scrape_configs"][0]["job_name"] in settings.release.analysis.selector


def test_make_staging_procfile_matches_the_loopback_staging_config() -> None:
    settings = staging_settings("ratelimit_proxy.staging.yml")
    production = staging_settings("ratelimit_proxy.yml")
    assert settings.server.port == production.server.port + OFFSET
    assert settings.admin.server.port == production.admin.server.port + OFFSET
    assert urlsplit(settings.redis.url).port == urlsplit(production.redis.url).port + OFFSET
    assert f"--port {urlsplit(settings.redis.url).port}" in PROCFILE["redis"]
    for pool in settings.upstream.pools:
        assert f"--port {urlsplit(pool.url).port} --colour {pool.name}" in PROCFILE[f"demo-{pool.name}"]
    prometheus = urlsplit(settings.release.analysis.prometheus_url)
    assert prometheus.port == urlsplit(production.release.analysis.prometheus_url).port + OFFSET
    assert f"--web.listen-address=127.0.0.1:{prometheus.port}" in PROCFILE["prometheus"]
    scrape = yaml.safe_load((REPO / "config" / "prometheus.staging.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"127.0.0.1:{settings.admin.server.port}"]
    for name in ("proxy", "release-controller"):
        assert "VIBELUX_RATELIMIT_PROXY_CONFIG=config/ratelimit_proxy.staging.yml" in PROCFILE[name]


@pytest.mark.parametrize("name", ["proxy", "release-controller", "demo-blue", "demo-green"])
def test_staging_compose_services_run_commands_of_this_repo(name: str) -> None:
    command = SERVICES[name]["command"]
    if command[0] == "python":
        assert (REPO / (command[2].replace(".", "/") + ".py")).is_file()
    else:
        scripts = (REPO / "pyproject.toml").read_text()
        assert re.search(rf"^{command[0]} = ", scripts, re.MULTILINE), command[0]


@pytest.mark.parametrize("name", ["ratelimit_proxy.staging.yml", "ratelimit_proxy.staging.compose.yml"])
def test_staging_config_is_production_but_for_addresses_pools_and_analysis_interval(name: str) -> None:
    """Staging must behave as production (limits, abuse rules, release thresholds): a release that passes
    there passes for the same reasons here. A first staging file left out the abuse section, and its
    defaults (many_keys enforced) banned the walkthrough's load at once."""
    staging, production = staging_settings(name), staging_settings("ratelimit_proxy.yml")
    analysis = dataclasses.replace(
        staging.release.analysis,
        prometheus_url=production.release.analysis.prometheus_url,
        interval_seconds=production.release.analysis.interval_seconds,
        window_seconds=production.release.analysis.window_seconds,
    )
    same = dataclasses.replace(
        staging,
        server=production.server,
        admin=production.admin,
        database=production.database,
        upstream=dataclasses.replace(staging.upstream, url=production.upstream.url, pools=[]),
        redis=production.redis,
        release=dataclasses.replace(staging.release, analysis=analysis),
    )
    assert same == production
