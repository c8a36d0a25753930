"""docker-compose.yml is for users (no Docker engine runs here): check it as a file against the repo."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from service_kit.urls import PublicUrls

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DEFAULT_PORTS = {
    "demo-api": [8000],
    "proxy": [8080, 9180],
    "tickets": [8081],
    "flags": [8082],
    "reports": [8083],
    "exporter-infra": [9101],
    "exporter-health": [9102],
    "exporter-business": [9103],
    "backup": [9104],
    "prometheus": [9090],
    "alertmanager": [9093],
    "grafana": [3000],
}


def test_public_urls_are_set_once_per_key_and_given_to_prometheus_alertmanager_and_the_rules() -> None:
    """Compose's values of config/urls.yml (the Docker host as a browser reaches it), each overridable in .env;
    the one-shot alerting-config renders the rules and Alertmanager's config before either starts."""
    text = (REPO / "docker-compose.yml").read_text()
    defaults: dict[str, set[str]] = {}
    for key, default in re.findall(r"\$\{VIBELUX_URLS_([A-Z]+):-([^}]+)\}", text):
        defaults.setdefault(key.lower(), set()).add(default)
    assert {key: len(values) for key, values in defaults.items()} == dict.fromkeys(defaults, 1)
    assert set(defaults) == {field.name for field in dataclasses.fields(PublicUrls)} - {"runbooks"}
    urls = {key: values.pop() for key, values in defaults.items()}
    for name, key in (("prometheus", "prometheus"), ("prometheus-2", "prometheus"), ("alertmanager", "alertmanager"),
                      ("alertmanager-2", "alertmanager")):  # fmt: skip
        assert f"--web.external-url=${{VIBELUX_URLS_{key.upper()}:-{urls[key]}}}" in SERVICES[name]["command"]
        assert SERVICES[name]["depends_on"]["alerting-config"] == {"condition": "service_completed_successfully"}
        assert f"alerting-config:/etc/{name.split('-')[0]}/rendered:ro" in SERVICES[name]["volumes"]
    render = SERVICES["alerting-config"]
    assert render["restart"] == "no" and render["environment"] == COMPOSE["x-public-urls"]
    script = render["command"][-1]
    assert "vibelux-alerting rules --out /data/alert_rules" in script
    assert "vibelux-alerting alertmanager config/alertmanager.compose.yml --files-base /etc/alertmanager" in script
    assert "--out /data/alertmanager/alertmanager.yml" in script
    assert render["secrets"] == SERVICES["alertmanager"]["secrets"]  # it sees which credentials are there
    for config in ("prometheus.compose.yml", "prometheus.compose.ha.yml"):
        assert yaml.safe_load((REPO / "config" / config).read_text())["rule_files"] == ["rendered/alert_rules/*.yml"]
    assert (
        SERVICES["alertmanager"]["command"][0]
        == "--config.file=/etc/alertmanager/rendered/alertmanager/alertmanager.yml"
    )


def test_redis_is_never_published_and_never_without_a_password() -> None:
    """Whoever reaches Redis could write rl:{keys}:* and mint API keys."""
    redis = SERVICES["redis"]
    assert "ports" not in redis
    assert "requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    environment = COMPOSE["x-service"]["environment"]
    for prefix in ("RATELIMIT_PROXY_REDIS", "FLAGS_REDIS", "EXPORTER_HEALTH_PROBES__REDIS"):
        assert environment[f"{prefix}__PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"


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
    } | {name for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    services = ("proxy", "tickets", "flags", "reports", "exporter-infra", "exporter-health", "exporter-business")
    for name in (*services, "backup"):
        assert name in targets, f"compose Prometheus does not scrape {name}"


BACKUP_SERVICES = ("seaweedfs", "backup-replicate", "backup")


def volume_path(service: str, path: str) -> tuple[str, str]:
    """(volume, path inside it) of a path in a service's container, through its named-volume mounts."""
    for mount in SERVICES[service].get("volumes", []):
        source, target = mount.split(":")[:2]
        if not source.startswith(("./", "/")) and (path == target or path.startswith(f"{target}/")):
            return source, path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{service}: {path} is on no named volume")


def test_backup_services_take_the_s3_keys_from_secrets_and_the_s3_is_never_published() -> None:
    """The keys open every backup (each ticket, flag and key hash): never in the file, never on a published
    port; the backup services get the S3's CA, not weed's own volume (its keys and data)."""
    for name in BACKUP_SERVICES:
        service = SERVICES[name]
        assert service["secrets"] == ["backup-s3-access-key", "backup-s3-secret-key"], name
        environment = service["environment"]
        assert environment["BACKUP_S3__ACCESS_KEY_FILE"] == "/run/secrets/backup-s3-access-key", name
        assert environment["BACKUP_S3__SECRET_KEY_FILE"] == "/run/secrets/backup-s3-secret-key", name
        assert not {"BACKUP_S3__ACCESS_KEY", "BACKUP_S3__SECRET_KEY"} & environment.keys(), name
        assert environment["VIBELUX_BACKUP_CONFIG"] == "config/backups.compose.yml", name
    assert COMPOSE["secrets"]["backup-s3-access-key"] == {"environment": "BACKUP_S3_ACCESS_KEY"}
    assert COMPOSE["secrets"]["backup-s3-secret-key"] == {"environment": "BACKUP_S3_SECRET_KEY"}
    assert "ports" not in SERVICES["seaweedfs"]
    for name in ("backup-replicate", "backup"):
        mounts = SERVICES[name]["volumes"]
        assert "backup-s3-ca:/var/lib/vibelux-s3-ca:ro" in mounts, name
        assert not any(mount.startswith("backup-s3:") for mount in mounts), name


def test_backup_config_names_the_desk_and_flags_databases_through_their_volumes() -> None:
    """config/backups.compose.yml loads as the tool loads it, its SQLite stores are the very files the desk
    and flags services use (same volume, same path inside it), and its S3 is the `seaweedfs` service with the
    CA that service writes."""
    from backups.settings import ENV_PREFIX, BackupSettings, validate
    from service_kit.config import load_settings

    path = REPO / "config" / "backups.compose.yml"
    keys = {f"{ENV_PREFIX}_S3__ACCESS_KEY": "key", f"{ENV_PREFIX}_S3__SECRET_KEY": "secret"}
    settings = validate(load_settings(BackupSettings, path, ENV_PREFIX, keys), str(path))
    urls = {"tickets": "TICKETS_DATABASE__URL", "flags": "FLAGS_DATABASE__URL"}
    assert set(settings.sqlite) == set(urls)
    for store, variable in urls.items():
        database = SERVICES[store]["environment"][variable].removeprefix("sqlite:///")
        for name in ("backup-replicate", "backup"):
            assert volume_path(name, settings.sqlite[store].path) == volume_path(store, database), (name, store)
    assert settings.s3.endpoint == "seaweedfs" and settings.s3.uri_style == "path"
    assert volume_path("backup", settings.s3.ca_file) == volume_path("seaweedfs", settings.s3.ca_file)
    for name in ("backup-replicate", "backup"):
        assert SERVICES[name]["command"][-1].startswith("python -m backups.local_s3 --wait && exec vibelux-backup ")


ALERTMANAGERS = sorted(name for name, service in SERVICES.items() if service["image"].startswith("prom/alertmanager"))


def test_ha_profile_adds_a_second_alertmanager_peer_like_the_first() -> None:
    """Same image, config and secrets (a pair must route alike), its own data volume (each peer keeps its own
    snapshot of silences and the notification log), and joined to `alertmanager` on its gossip port."""
    first, second = SERVICES["alertmanager"], SERVICES["alertmanager-2"]
    assert ALERTMANAGERS == ["alertmanager", "alertmanager-2"]
    assert "profiles" not in first and second["profiles"] == ["ha"]
    assert second["image"] == first["image"] and second["secrets"] == first["secrets"]
    config_mount = "alerting-config:/etc/alertmanager/rendered:ro"
    assert config_mount in first["volumes"]
    assert second["volumes"] == [config_mount, "alertmanager-2-data:/alertmanager"]
    assert first["command"][:3] == second["command"][:3]  # same config, storage, public URL
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


def test_grafana_reads_alertmanager_and_dashboards_rendered_with_the_public_addresses() -> None:
    """Grafana cannot expand variables in dashboard files: a one-off run fills their link variables first."""
    grafana = SERVICES["grafana"]
    assert grafana["environment"]["VIBELUX_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    provisioning = REPO / "grafana" / "provisioning" / "datasources" / "alertmanager.yaml"
    (datasource,) = yaml.safe_load(provisioning.read_text())["datasources"]
    assert (datasource["type"], datasource["url"]) == ("alertmanager", "${VIBELUX_ALERTMANAGER_URL}")
    render = SERVICES["grafana-dashboards"]
    assert render["restart"] == "no" and "build" in render
    assert grafana["depends_on"]["grafana-dashboards"] == {"condition": "service_completed_successfully"}
    (volume,) = render["volumes"]
    name, path = volume.split(":")
    assert f"--out={path}" in render["command"]
    assert f"{name}:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    # the same public URLs as x-public-urls, which the alerts' links use
    assert "--link=desk_url=${VIBELUX_URLS_DESK:-http://localhost:8081}" in render["command"]
    assert "--link=flags_url=${VIBELUX_URLS_FLAGS:-http://localhost:8082}" in render["command"]
    assert "COPY grafana ./grafana" in (REPO / "Dockerfile").read_text()


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: ``!reset`` (drop what the base file set) and ``!override`` (replace it)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: Override(
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)
    ),
)


class Reset:
    pass


class Override:
    def __init__(self, value: object) -> None:
        self.value = value


MERGED_LISTS = {"ports", "volumes", "secrets", "extra_hosts", "expose"}  # Compose appends these; others replace


def compose_merge(base: object, override: object, key: str = "") -> object:
    """Compose's merge of an override file into a base file, for the fields this repo uses."""
    if isinstance(override, Reset):
        return None
    if isinstance(override, Override):
        return override.value
    if key == "depends_on":  # the list form means condition service_started
        base, override = _depends_map(base), _depends_map(override)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = compose_merge(base.get(name), value, name)
        return {name: value for name, value in merged.items() if value is not None}
    if isinstance(base, list) and isinstance(override, list) and key in MERGED_LISTS:
        return base + [item for item in override if item not in base]
    return override


def _depends_map(value: object) -> object:
    if isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return value


PRODUCTION_FILE = yaml.load((REPO / "docker-compose.production.yml").read_text(), ComposeLoader)  # noqa: S506
PRODUCTION = compose_merge(COMPOSE, PRODUCTION_FILE)
PRODUCTION_SERVICES: dict = PRODUCTION["services"]  # type: ignore[index]


def test_production_keeps_redis_and_postgres_inside_and_runs_the_services_on_postgres() -> None:
    published = {int(str(p).split(":")[-1]) for s in PRODUCTION_SERVICES.values() for p in s.get("ports", [])}
    assert not published & {6379, 5432}
    assert "ports" not in PRODUCTION_SERVICES["postgres"]
    urls = {
        "tickets": PRODUCTION_SERVICES["tickets"]["environment"]["TICKETS_DATABASE__URL"],
        "flags": PRODUCTION_SERVICES["flags"]["environment"]["FLAGS_DATABASE__URL"],
        "proxy": PRODUCTION_SERVICES["proxy"]["environment"]["RATELIMIT_PROXY_DATABASE__URL"],
        "reports": PRODUCTION_SERVICES["reports"]["environment"]["REPORTS_DATABASE__URL"],
    }
    for service, url in urls.items():
        assert url.startswith("postgresql+psycopg://vibelux:${POSTGRES_PASSWORD:?"), service
    databases = (REPO / "config" / "postgres" / "create-databases.sql").read_text()
    for url in urls.values():
        assert f"CREATE DATABASE {url.rsplit('/', 1)[1]} OWNER vibelux;" in databases
    assert PRODUCTION_SERVICES["tickets"]["command"] == ["vibelux-tickets", "serve"]  # no demo data


def test_production_proxies_are_replicas_reached_only_through_the_balancer_they_trust() -> None:
    proxy, lb = PRODUCTION_SERVICES["proxy"], PRODUCTION_SERVICES["lb"]
    assert proxy["deploy"]["replicas"] >= 2
    assert "ports" not in proxy and "volumes" not in proxy  # no shared SQLite file between replicas
    assert lb["ports"] == ["8080:8080"]
    address = ipaddress.IPv4Address(lb["networks"]["default"]["ipv4_address"])
    (ipam,) = PRODUCTION["networks"]["default"]["ipam"]["config"]  # type: ignore[index]
    subnet, dynamic = ipaddress.IPv4Network(ipam["subnet"]), ipaddress.IPv4Network(ipam["ip_range"])
    # No other container can be handed the balancer's address: Docker allocates them from ip_range only.
    assert dynamic.subnet_of(subnet) and address in subnet and address not in dynamic
    trusted = yaml.safe_load(proxy["environment"]["RATELIMIT_PROXY_CLIENTS__TRUSTED_PROXIES"])
    assert trusted == [f"{address}/32"]
    conf = (REPO / "config" / "nginx.lb.conf").read_text()
    mount = lb["volumes"][0].split(":")
    assert (REPO / mount[0]).samefile(REPO / "config" / "nginx.lb.conf") and mount[1] == "/etc/nginx/nginx.conf"
    assert "server proxy:8080" in conf and "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "underscores_in_headers off;" in conf
    for config in ("prometheus.compose.yml", "prometheus.compose.ha.yml"):
        jobs = yaml.safe_load((REPO / "config" / config).read_text())["scrape_configs"]
        (job,) = [job for job in jobs if job["job_name"] == "ratelimit-proxy"]
        assert job["dns_sd_configs"] == [{"names": ["proxy"], "type": "A", "port": 9180, "refresh_interval": "30s"}]


def test_production_has_a_healthcheck_everywhere_and_starts_on_them() -> None:
    """One-off jobs (restart "no", e.g. grafana-dashboards) run to completion instead of staying healthy;
    node-exporter is outside the stack's network; Litestream serves nothing to check (a replicator that stops
    replicating fails the backup service's sync, which BackupTooOld reports)."""
    running = [
        name for name, s in PRODUCTION_SERVICES.items()
        if name not in ("node-exporter", "backup-replicate") and s.get("restart") != "no"
    ]  # fmt: skip
    for name in running:
        assert "healthcheck" in PRODUCTION_SERVICES[name], f"{name} has no healthcheck"
    for name, service in PRODUCTION_FILE["services"].items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "healthcheck" in PRODUCTION_SERVICES[dependency], dependency
    for profiled in ("prometheus-2", "victoriametrics", "alertmanager-2"):  # the HA pairs, profile ha
        assert PRODUCTION_SERVICES[profiled]["profiles"] == ["ha"]
    for profiled in BACKUP_SERVICES:  # the desk and flags are on PostgreSQL: no SQLite files to replicate
        assert PRODUCTION_SERVICES[profiled]["profiles"] == ["sqlite-backups"]


def test_node_exporter_sees_the_host_and_is_the_only_source_of_node_series() -> None:
    """Host alerts fired twice when the infra and node jobs both reported node_* series."""
    node = PRODUCTION_SERVICES["node-exporter"]
    assert node["pid"] == "host" and node["network_mode"] == "host" and "ports" not in node
    for config in ("prometheus.compose.yml", "prometheus.compose.ha.yml"):
        jobs = {
            job["job_name"]: job for job in yaml.safe_load((REPO / "config" / config).read_text())["scrape_configs"]
        }
        assert jobs["infra"]["metric_relabel_configs"] == [
            {"source_labels": ["__name__"], "regex": "node_.*", "action": "drop"}
        ]
        assert jobs["node"]["static_configs"] == [{"targets": ["host.docker.internal:9100"]}]
    for name in ("prometheus", "prometheus-2"):
        assert "host.docker.internal:host-gateway" in PRODUCTION_SERVICES[name]["extra_hosts"]


def test_production_postgres_feeds_the_query_exporter_which_compose_prometheus_finds_by_dns() -> None:
    command = PRODUCTION_SERVICES["postgres"]["command"]
    assert "shared_preload_libraries=pg_stat_statements" in command
    assert (
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"
        in (REPO / "config" / "postgres" / "create-databases.sql").read_text()
    )
    exporter = PRODUCTION_SERVICES["exporter-queries"]
    assert exporter["environment"]["EXPORTER_QUERIES_DATABASE__URL"].startswith(
        "postgresql+psycopg://vibelux:${POSTGRES_PASSWORD:?"
    )
    for config in ("prometheus.compose.yml", "prometheus.compose.ha.yml"):
        jobs = yaml.safe_load((REPO / "config" / config).read_text())["scrape_configs"]
        (job,) = [job for job in jobs if job["job_name"] == "queries"]
        assert job["dns_sd_configs"] == [
            {"names": ["exporter-queries"], "type": "A", "port": 9105, "refresh_interval": "30s"}
        ]
