"""config/prometheus.yml: the contract's job names, and a real Prometheus scraping the exporters, the services
and the backup tool."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from demo.business_db import generate
from tests.exporters.helpers import ExporterProcess, is_meminfo_camelcase_finding, promtool_findings, write_config
from tests.servers import (
    AlertmanagerServer,
    BackupServer,
    PrometheusServer,
    RedisServer,
    SeaweedS3Server,
    free_port,
    wait_until,
)

CONFIG = Path("config/prometheus.yml")
COMPOSE_CONFIG = Path("config/prometheus.compose.yml")


def jobs(config: dict[str, Any]) -> dict[str, list[str]]:
    """Each job's targets: static ones, or ``name:port`` for each name found by DNS (compose's proxy replicas)."""
    return {
        job["job_name"]: job["static_configs"][0]["targets"]
        if "static_configs" in job
        else [f"{name}:{sd['port']}" for sd in job["dns_sd_configs"] for name in sd["names"]]
        for job in config["scrape_configs"]
    }


def contract_jobs() -> set[str]:
    """The job names docs/conventions.md promises in its "Prometheus jobs" paragraph (before "compose adds")."""
    text = Path("docs/conventions.md").read_text()
    paragraph = text[text.index("Prometheus jobs") :].split("\n\n")[0]
    return set(re.findall(r"`([\w-]+)`", paragraph.split("compose adds")[0]))


def test_prometheus_configs_scrape_exactly_the_contract_jobs_on_their_ports() -> None:
    local = yaml.safe_load(CONFIG.read_text())
    compose = yaml.safe_load(COMPOSE_CONFIG.read_text())
    assert set(jobs(local)) == contract_jobs()
    assert set(jobs(compose)) == contract_jobs() | {"node", "queries"}  # queries: where PostgreSQL runs
    ports = {"infra": "9101", "service-health": "9102", "business": "9103", "ratelimit-proxy": "9180",
             "tickets": "8081", "flags": "8082", "reports": "8083", "backup": "9104", "prometheus": "9090",
             "alertmanager": "9093"}  # fmt: skip
    for name, port in ports.items():
        assert jobs(local)[name] == [f"127.0.0.1:{port}"]
        assert jobs(compose)[name][0].endswith(f":{port}")
    for config in (local, compose):
        assert config["rule_files"][0].endswith("alert_rules/*.yml")
        assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].endswith(":9093")


class ServiceProcess:
    """One of the stack's Flask services started as `make up` does (`python -m <package>.cli serve`),
    configured from the environment only (an empty config file) on free ports."""

    def __init__(self, package: str, prefix: str, workdir: Path, redis_url: str, **extra: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        home = workdir / package
        home.mkdir()
        self.database = home / "db.sqlite3"
        (home / "empty.yml").write_text("{}\n")
        env = {
            f"VIBELUX_{prefix}_CONFIG": str(home / "empty.yml"),
            "VIBELUX_RUN_DIR": str(home / "run"),
            f"{prefix}_SERVER__PORT": str(self.port),
            f"{prefix}_SERVER__WORKERS": "1",
            f"{prefix}_LOGGING__LEVEL": "WARNING",
            f"{prefix}_DATABASE__URL": f"sqlite:///{self.database}",
            f"{prefix}_REDIS__URL": redis_url,
            **extra,
        }
        if package == "ratelimit_proxy":  # metrics live on the admin port, behind which no token is needed
            env |= {"RATELIMIT_PROXY_ADMIN__SERVER__PORT": str(self.metrics_port),
                    "RATELIMIT_PROXY_ADMIN__TOKEN": "test-admin-token-0123456789"}  # fmt: skip
        else:
            self.metrics_port = self.port
        if package == "tickets_app":
            env["TICKETS_ATTACHMENTS__DIRECTORY"] = str(home / "files")
        self.url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"{package}.cli", "serve"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=(home / "server.log").open("wb"),
        )

    def wait_ready(self) -> None:
        wait_until(lambda: requests.get(self.url, timeout=1).status_code == 200, timeout=90)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


SERVICES = {"ratelimit-proxy": ("ratelimit_proxy", "RATELIMIT_PROXY"), "tickets": ("tickets_app", "TICKETS"),
            "flags": ("flags_service", "FLAGS"), "reports": ("reports_service", "REPORTS")}  # fmt: skip


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory, s3_server: SeaweedS3Server) -> Iterator[dict[str, Any]]:
    """What `make up` runs, on free ports: the three exporters from their shipped configs, the proxy, the
    support desk and the flags service, and the backup tool replicating the desk's database to a real S3
    (exporters by name, services and the backup tool by job name)."""
    workdir = tmp_path_factory.mktemp("stack")
    redis_server = RedisServer()
    redis_server.start()
    database = workdir / "platform.sqlite3"
    generate(database, total_users=300, months=3, seed=3, progress=False)
    database_url = f"sqlite:///{database}"

    def shipped(name: str, **changes: Any) -> tuple[Path, int]:
        port = free_port()
        data = yaml.safe_load(Path(f"config/exporters/{name}.yml").read_text())
        return write_config(workdir / f"{name}.yml", {**data, **changes, "server": {"port": port}}), port

    probes = {
        "redis": {"kind": "redis", "target": redis_server.url, "interval_seconds": 1},
        "database": {"kind": "sql", "target": database_url, "interval_seconds": 1},
    }
    started: dict[str, Any] = {}
    try:
        for job, (package, prefix) in SERVICES.items():  # slow to start: all at once, waited for below
            platform = {"REPORTS_PLATFORM__URL": database_url} if job == "reports" else {}
            started[job] = ServiceProcess(
                package, prefix, workdir, redis_server.url.removesuffix("/0") + "/1", **platform
            )
        for name, changes, env in (
            ("infra", {}, {}),
            ("health", {"probes": probes}, {}),
            ("business", {}, {"EXPORTER_BUSINESS_DATABASE__URL": database_url}),
        ):
            config, port = shipped(name, **changes)
            started[name] = ExporterProcess(name, config, port, env)
        for job in SERVICES:
            started[job].wait_ready()
        started["backup"] = BackupServer(s3_server, {"tickets": started["tickets"].database})
        started["backup"].start()
        yield started
    finally:
        if "backup" in started:  # before the desk whose database it reads
            started.pop("backup").close()
        for exporter in started.values():
            exporter.stop()
        redis_server.close()


@pytest.mark.slow
@pytest.mark.integration
def test_real_prometheus_scrapes_every_contract_job_and_every_target_is_up(
    running_stack: dict[str, Any], alertmanager_server: AlertmanagerServer
) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    exporter_jobs = {"infra": "infra", "service-health": "health", "business": "business"}
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        name = job["job_name"]
        if name in exporter_jobs:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{running_stack[exporter_jobs[name]].port}"]}]
        elif name in SERVICES:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{running_stack[name].metrics_port}"]}]
        elif name == "backup":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{running_stack[name].port}"]}]
        elif name == "alertmanager":
            job["static_configs"] = [{"targets": [alertmanager_server.url.removeprefix("http://")]}]
    config["rule_files"] = []
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        alertmanager_server.url.removeprefix("http://")
    ]
    prometheus = PrometheusServer(config)
    for job in config["scrape_configs"]:  # the self-scrape target is Prometheus's own free port
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus.port}"]}]
    (prometheus.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus.start()
    try:
        expected_jobs = contract_jobs()

        def all_up() -> bool:
            results = prometheus.query("up")
            return {r["metric"]["job"] for r in results if r["value"][1] == "1"} == expected_jobs

        wait_until(all_up, timeout=30)
        assert len(prometheus.query("up")) == len(expected_jobs)
        for expr in (
            'node_cpu_seconds_total{job="infra",mode="idle"}',
            'node_memory_MemAvailable_bytes{job="infra"}',
            'node_filesystem_avail_bytes{job="infra",mountpoint="/"}',
            'vibelux_processes{job="infra",name="exporters"} >= 3',
            'service_up{job="service-health",service="redis"} == 1',
            'service_up{job="service-health",service="database"} == 1',
            'business_users{job="business",tier="free"} > 0',
            'business_mrr_usd{job="business"}',
            'business_query_errors_total{job="business"}',
            'vibelux_build_info{job="tickets"}',
            'vibelux_build_info{job="flags"}',
            'vibelux_build_info{job="ratelimit-proxy"}',
            'backup_last_success_timestamp_seconds{job="backup",store="tickets"}',
            'restore_drill_duration_seconds{job="backup",store="tickets"} > 0',
            'recovery_point_age_seconds{job="backup",store="tickets"} < 60',
        ):
            wait_until(lambda expr=expr: bool(prometheus.query(expr)), timeout=15)
    finally:
        prometheus.close()


@pytest.mark.integration
@pytest.mark.parametrize("name", ["infra", "health", "business"])
def test_every_exporters_live_output_passes_promtool_lint(running_stack: dict[str, Any], name: str) -> None:
    body, _ = running_stack[name].scrape()
    findings = promtool_findings(body)
    assert [line for line in findings if not is_meminfo_camelcase_finding(line)] == []
