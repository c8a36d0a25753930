"""docker-compose.yml is for users (no Docker engine runs here): check it as a file against the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DEFAULT_PORTS = {
    "demo-api": [8000],
    "proxy": [8080, 9180],
    "tickets": [8081],
    "flags": [8082],
    "exporter-infra": [9101],
    "exporter-health": [9102],
    "exporter-business": [9103],
    "prometheus": [9090],
    "alertmanager": [9093],
    "grafana": [3000],
    "redis": [6379],
}


def test_every_component_has_a_service_on_its_default_port() -> None:
    for name, ports in DEFAULT_PORTS.items():
        published = [int(str(p).split(":")[-1]) for p in SERVICES[name].get("ports", [])]
        assert published == ports, name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_files_exist(name: str) -> None:
    for volume in SERVICES[name].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in COMPOSE.get("volumes", {}) or source.startswith("/"), f"{name}: unknown volume {source}"


def test_build_context_and_dockerfile_copies_exist() -> None:
    built = [name for name, service in SERVICES.items() if "build" in service]
    assert built, "the Python services are built from the repo's Dockerfile"
    dockerfile = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE):
        assert (REPO / source).exists(), f"Dockerfile copies missing {source}"


def test_commands_are_installed_console_scripts() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    for name, service in SERVICES.items():
        command = service.get("command")
        if "build" in service and command and command[0].startswith("vibelux-"):
            assert f"{command[0]} = " in pyproject, f"{name} runs {command[0]}, which pyproject does not install"


def test_prometheus_in_compose_scrapes_the_compose_services() -> None:
    config = yaml.safe_load((REPO / "config" / "prometheus.compose.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name in ("proxy", "tickets", "flags", "exporter-infra", "exporter-health", "exporter-business"):
        assert name in targets, f"compose Prometheus does not scrape {name}"


ALERTMANAGERS = sorted(name for name, service in SERVICES.items() if service["image"].startswith("prom/alertmanager"))


def test_ha_profile_adds_a_second_alertmanager_peer_like_the_first() -> None:
    """Same image, config and secrets (a pair must route alike), its own data volume (each peer keeps its own
    snapshot of silences and the notification log), and joined to `alertmanager` on its gossip port."""
    first, second = SERVICES["alertmanager"], SERVICES["alertmanager-2"]
    assert ALERTMANAGERS == ["alertmanager", "alertmanager-2"]
    assert "profiles" not in first and second["profiles"] == ["ha"]
    assert second["image"] == first["image"] and second["secrets"] == first["secrets"]
    config_mount = "./config/alertmanager.compose.yml:/etc/alertmanager/alertmanager.yml:ro"
    assert config_mount in first["volumes"]
    assert second["volumes"] == [config_mount, "alertmanager-2-data:/alertmanager"]
    assert "alertmanager-2-data:/alertmanager" not in first["volumes"]
    # the image listens for gossip on :9094 unless told otherwise; neither peer turns clustering off
    assert not any(arg.startswith("--cluster.listen-address") for arg in first["command"] + second["command"])
    assert "--cluster.peer=alertmanager:9094" in second["command"]
    published = [str(p).split(":")[0] for service in SERVICES.values() for p in service.get("ports", [])]
    assert len(published) == len(set(published)), "two services publish the same host port"


def test_services_outside_a_profile_do_not_depend_on_one() -> None:
    """`docker compose up` without --profile ha must still start everything it starts today."""
    for name, service in SERVICES.items():
        if "profiles" not in service:
            for dependency in service.get("depends_on", []):
                assert "profiles" not in SERVICES[dependency], f"{name} depends on {dependency}, in a profile"


def test_prometheus_in_compose_sends_to_every_alertmanager() -> None:
    """In the ha profile each peer is listed by its own address, never one name in front of several: the peers
    gossip silences and notifications, not alerts, so a peer that misses an alert (or its resolution) cannot
    know of it. Without the profile only `alertmanager` runs, and only it is listed."""
    single = yaml.safe_load((REPO / "config" / "prometheus.compose.yml").read_text())
    assert single["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    config = yaml.safe_load((REPO / "config" / "prometheus.compose.ha.yml").read_text())
    targets = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [f"{name}:9093" for name in ALERTMANAGERS]
    scraped = [job for job in config["scrape_configs"] if job["job_name"] == "alertmanager"]
    assert scraped[0]["static_configs"][0]["targets"] == targets


def test_ha_profile_runs_a_second_replica_and_victoriametrics_and_the_default_stays_one_prometheus() -> None:
    profiled = {name: service["profiles"] for name, service in SERVICES.items() if "profiles" in service}
    assert profiled == {"alertmanager-2": ["ha"], "prometheus-2": ["ha"], "victoriametrics": ["ha"]}
    assert all(set(service.get("depends_on", [])).isdisjoint(profiled) for service in SERVICES.values())
    first, second = SERVICES["prometheus"], SERVICES["prometheus-2"]
    assert first["image"] == second["image"]
    assert [int(str(p).split(":")[0]) for p in second["ports"] + SERVICES["victoriametrics"]["ports"]] == [9091, 8428]
    # Without PROMETHEUS_CONFIG, `prometheus` runs the single config; with prometheus.ha.yml it is replica 1.
    config_flag = "--config.file=/etc/prometheus/${PROMETHEUS_CONFIG:-prometheus.yml}"
    assert first["command"][0] == config_flag
    assert "./config/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro" in first["volumes"]
    ha_mount = "./config/prometheus.compose.ha.yml:/etc/prometheus/prometheus.ha.yml:ro"
    assert ha_mount in first["volumes"] and ha_mount in second["volumes"]
    assert second["command"] == ["--config.file=/etc/prometheus/prometheus.ha.yml", *first["command"][1:]]
    assert [first["environment"]["PROMETHEUS_REPLICA"], second["environment"]["PROMETHEUS_REPLICA"]] == ["1", "2"]


def test_ha_replicas_write_to_victoriametrics_which_deduplicates_at_their_scrape_interval() -> None:
    config = yaml.safe_load((REPO / "config" / "prometheus.compose.ha.yml").read_text())
    assert config["remote_write"][0]["url"] == "http://victoriametrics:8428/api/v1/write"
    command = SERVICES["victoriametrics"]["command"]
    assert f"-dedup.minScrapeInterval={config['global']['scrape_interval']}" in command
    (self_scrape,) = [job for job in config["scrape_configs"] if job["job_name"] == "prometheus"]
    assert self_scrape["static_configs"][0]["targets"] == ["prometheus:9090", "prometheus-2:9090"]


def test_grafana_reads_prometheus_by_default_and_whatever_grafana_prometheus_url_names() -> None:
    """The dashboards' one datasource (uid vibelux-prometheus) takes its URL from the compose environment."""
    environment = SERVICES["grafana"]["environment"]
    assert environment["VIBELUX_PROMETHEUS_URL"] == "${GRAFANA_PROMETHEUS_URL:-http://prometheus:9090}"
    provisioning = yaml.safe_load((REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = provisioning["datasources"]
    assert datasource["url"] == "${VIBELUX_PROMETHEUS_URL}"
