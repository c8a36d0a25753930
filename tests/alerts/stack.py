"""The stack for real, on free ports: Redis (the probed service), the health, infra and business exporters,
the support desk, the rate-limiting proxy in front of the demo upstream, the flag service (both on a second
Redis), the backup tool replicating the desk's and the flags' databases to a SeaweedFS S3, Prometheus with
the repository's rules and Alertmanager with the repository's routing, delivering Slack, PagerDuty and
email to local sinks.

Shared by the end-to-end tests and bench/alert_pipeline.py. Only the timers are shortened (scrape and
evaluation 1s, group_wait/group_interval 1s, ServiceDown `for` 2s) and the addresses are the test's: the
rules' links rendered on the stack's desk (as `vibelux-alerting rules` renders them), the receivers'
endpoints pointed at the sinks; routes, receivers, templates and rules are the repository's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import requests
import yaml
from sqlalchemy.orm import Session

from service_kit.alerting.render import render_alertmanager, render_rules
from service_kit.auth import create_token
from service_kit.db import make_engine
from service_kit.urls import PublicUrls, load_urls
from tests.alerts.helpers import REPO, alertmanager_config
from tests.exporters.helpers import ExporterProcess
from tests.servers import (
    AlertmanagerServer,
    BackupServer,
    HttpSink,
    ManagedProcess,
    PrometheusServer,
    RedisServer,
    SeaweedS3Server,
    SmtpSink,
    free_port,
    wait_until,
)
from tests.tickets.test_server import DeskServer
from tickets_app.cli import migrate

SLACK_PATH, PAGERDUTY_PATH = "/slack/incoming-webhook", "/v2/enqueue"


@dataclass(frozen=True)
class Timers:
    """The intervals the pipeline runs with; their sum bounds the time from fault to ticket."""

    probe_interval: float = 0.5
    scrape_interval: float = 1.0
    evaluation_interval: float = 1.0
    service_down_for: float = 2.0
    group_wait: float = 1.0
    group_interval: float = 1.0

    @property
    def floor(self) -> float:
        """No pipeline with these settings can open a ticket for a new alert group sooner: the alert must
        stay pending `for`, then Alertmanager waits group_wait before the group's first notification."""
        return self.service_down_for + self.group_wait

    @property
    def refire_floor(self) -> float:
        """A group that still exists (Prometheus re-sends a resolved alert for 15 minutes, which keeps its
        group alive) notifies on its next group_interval tick instead: only `for` is certain."""
        return self.service_down_for

    @property
    def resolve_worst_case(self) -> float:
        """Probe, scrape, evaluation, then the group's next tick: no `for` or group_wait on resolution."""
        return self.probe_interval + self.scrape_interval + self.evaluation_interval + self.group_interval

    @property
    def worst_case(self) -> float:
        """Every stage waiting its full interval: probe, scrape, rule evaluation twice (pending, then firing
        after `for`), group_wait."""
        return (
            self.probe_interval
            + self.scrape_interval
            + 2 * self.evaluation_interval
            + self.service_down_for
            + self.group_wait
        )


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms"


def shortened_rules(directory: Path, timers: Timers, urls: PublicUrls | None = None) -> list[Path]:
    """Copies of alert_rules/*.yml with ServiceDown's `for` set to the test's, and links rendered on `urls`
    (config/urls.yml's when None); everything else unchanged."""
    urls = urls or load_urls(REPO / "config" / "urls.yml", environ={})
    copies = []
    for path in sorted((REPO / "alert_rules").glob("*.yml")):
        document = yaml.safe_load(render_rules(path.read_text(), urls, str(path)))
        for group in document["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "ServiceDown":
                    rule["for"] = _seconds(timers.service_down_for)
        copy = directory / f"{path.stem}.rules.yml"
        copy.write_text(yaml.safe_dump(document))
        copies.append(copy)
    return copies


class AlertingPrometheus(PrometheusServer):
    """Prometheus resending firing alerts every second (default 1m), so an Alertmanager it discovers a few
    seconds after start-up hears of alerts that were already firing without a minute's wait."""

    def command(self) -> list[str]:
        return [*super().command(), "--rules.alert.resend-delay=1s"]


class ServiceProcess(ManagedProcess):
    """One of the stack's services run as `python -m <module> ...` with the repository's config file and
    environment overrides; "{port}" in its arguments or environment becomes its own free port."""

    start_timeout = 60.0

    def __init__(self, name: str, module_args: list[str], env: dict[str, str]) -> None:
        self.name = name
        super().__init__()
        self._command = [sys.executable, "-m", *(arg.replace("{port}", str(self.port)) for arg in module_args)]
        self._env = {key: value.replace("{port}", str(self.port)) for key, value in env.items()}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return self._command

    def environment(self) -> dict[str, str]:
        return {"PYTHONPATH": str(REPO), "VIBELUX_RUN_DIR": str(self.workdir / "run"), **self._env}

    def ready(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200


class IncidentDesk(DeskServer):
    """The support desk as the tickets tests run it, with one worker and more time to start: the 2-core
    machine is shared, and the pipeline needs the webhook, not the desk's concurrency."""

    start_timeout = 60.0

    def command(self) -> list[str]:
        return ["env", "TICKETS_SERVER__WORKERS=1", *super().command()]


class AlertingStack:
    """Starts everything in dependency order; `close()` stops it all (also on a failed start)."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self.workdir = Path(mkdtemp(prefix="vibelux-alerting-"))
        self._stack = ExitStack()
        self.webhook_token = secrets.token_urlsafe(24)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        timers = self.timers
        self.redis = RedisServer()
        self.redis.start()
        self._stack.callback(self.redis.close)

        os.environ["TICKETS_ALERTS__WEBHOOK_TOKEN"] = self.webhook_token
        try:
            self.desk = IncidentDesk()
            migrate(self.desk.database_url)
            self.desk.start()
        finally:
            os.environ.pop("TICKETS_ALERTS__WEBHOOK_TOKEN", None)
        self._stack.callback(self.desk.close)
        self.agent_token = self._agent_token()

        self._start_platform()
        # The backup tool's first syncs and drills take a while: they run as the exporters and Alertmanager start.
        with ThreadPoolExecutor(1) as pool:  # leaving waits for it, so a failed start closes everything it started
            backups = pool.submit(self._start_backups)
            self._start_monitoring()
        backups.result()

        rules = shortened_rules(self.workdir, timers, self.urls)
        self.prometheus = AlertingPrometheus(self._prometheus_config(), rules)
        self.prometheus.start()
        self._stack.callback(self.prometheus.close)
        wait_until(self._everything_discovered, timeout=30, interval=0.2)

    def _start_monitoring(self) -> None:
        """The three exporters and Alertmanager (whose webhook is the desk's)."""
        timers = self.timers
        probe = {"interval_seconds": timers.probe_interval, "timeout_seconds": 0.5}
        health_config = {
            "server": {"host": "127.0.0.1", "port": free_port()},
            "probes": {
                "redis": {"kind": "redis", "target": self.redis.url, **probe},
                "database": {"kind": "sql", "target": self.desk.database_url, **probe},
                "api": {"kind": "http", "target": f"{self.upstream.url}/healthz", **probe},
            },
        }
        self.health = self._exporter("health", health_config)
        infra_config = yaml.safe_load((REPO / "config" / "exporters" / "infra.yml").read_text())
        infra_config["server"] = {"host": "127.0.0.1", "port": free_port()}
        self.infra = self._exporter("infra", infra_config)
        business_config = yaml.safe_load((REPO / "config" / "exporters" / "business.yml").read_text())
        business_config["server"] = {"host": "127.0.0.1", "port": free_port()}
        platform_db = self.workdir / "platform.sqlite3"
        subprocess.run(
            [sys.executable, "-m", "demo.business_db", "--out", str(platform_db), "--users", "400", "--quiet"],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        self.business = self._exporter(
            "business", business_config, {"EXPORTER_BUSINESS_DATABASE__URL": f"sqlite:///{platform_db}"}
        )

        self._start_alertmanager()

    def _start_alertmanager(self) -> None:
        """config/alertmanager.yml with every receiver's credential, rendered as scripts/alertmanager.sh renders
        it; Slack, PagerDuty and SMTP reach the sinks."""
        self.slack, self.pagerduty, self.smtp = HttpSink(), HttpSink(), SmtpSink()
        for sink in (self.slack, self.pagerduty, self.smtp):
            self._stack.callback(sink.close)
        config = alertmanager_config(
            webhook_url=f"{self.desk.url}/api/v1/alerts/webhook",
            timings={
                "group_wait": _seconds(self.timers.group_wait),
                "group_interval": _seconds(self.timers.group_interval),
                "repeat_interval": "1h",
            },
        )
        config["global"] |= {"smtp_smarthost": f"127.0.0.1:{self.smtp.port}", "smtp_require_tls": False}
        for receiver in config["receivers"]:
            for pagerduty in receiver.get("pagerduty_configs", []):
                pagerduty["url"] = self.pagerduty.url(PAGERDUTY_PATH)
        self.alertmanager = AlertmanagerServer(config)
        secrets = self.alertmanager.workdir / "secrets"
        secrets.mkdir()
        (secrets / "support-desk-webhook-token").write_text(self.webhook_token)
        (secrets / "slack-webhook-url").write_text(self.slack.url(SLACK_PATH))
        (secrets / "pagerduty-routing-key").write_text("routing-key-of-the-test")
        (secrets / "smtp-password").write_text("smtp-password-of-the-test")
        rendered, disabled = render_alertmanager(config, self.alertmanager.workdir)
        assert disabled == [], disabled
        (self.alertmanager.workdir / "alertmanager.yml").write_text(yaml.safe_dump(rendered))
        self.alertmanager.start()
        self._stack.callback(self.alertmanager.close)
        self.urls = dataclasses.replace(
            load_urls(REPO / "config" / "urls.yml", environ={}),
            alertmanager=self.alertmanager.url,
            desk=self.desk.url,
        )

    def _everything_discovered(self) -> bool:
        """Prometheus discovers its targets and Alertmanager a few seconds after start; wait for both."""
        api = f"{self.prometheus.url}/api/v1"
        managers = requests.get(f"{api}/alertmanagers", timeout=2).json()["data"]["activeAlertmanagers"]
        targets = requests.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
        return bool(managers) and len(targets) == 8 and all(t["health"] == "up" for t in targets)

    def _start_platform(self) -> None:
        """The demo upstream behind the proxy, and the flag service; proxy and flags share a second Redis so
        that stopping the probed one is a fault of one dependency only."""
        self.platform_redis = RedisServer()
        self.platform_redis.start()
        self._stack.callback(self.platform_redis.close)
        self.upstream = self._service("demo-upstream", ["demo.upstream", "--port", "{port}"], {})
        proxy_port = free_port()
        self.proxy = self._service(
            "proxy",
            ["ratelimit_proxy.cli", "serve"],
            {
                "VIBELUX_RATELIMIT_PROXY_CONFIG": str(REPO / "config" / "ratelimit_proxy.yml"),
                "RATELIMIT_PROXY_SERVER__PORT": str(proxy_port),
                "RATELIMIT_PROXY_SERVER__WORKERS": "1",
                "RATELIMIT_PROXY_ADMIN__SERVER__PORT": "{port}",
                "RATELIMIT_PROXY_UPSTREAM__URL": self.upstream.url,
                "RATELIMIT_PROXY_REDIS__URL": self.platform_redis.url.replace("/0", "/2"),
                "RATELIMIT_PROXY_DATABASE__URL": f"sqlite:///{self.workdir / 'proxy.sqlite3'}",
            },
        )
        self.proxy_url = f"http://127.0.0.1:{proxy_port}"
        flags_env = {
            "VIBELUX_FLAGS_CONFIG": str(REPO / "config" / "flags.yml"),
            "FLAGS_SERVER__WORKERS": "1",
            "FLAGS_DATABASE__URL": f"sqlite:///{self.workdir / 'flags.sqlite3'}",
            "FLAGS_REDIS__URL": self.platform_redis.url.replace("/0", "/1"),
        }
        keys_file = self.workdir / "flags-keys.json"
        subprocess.run(
            [sys.executable, "-m", "flags_service.cli", "seed-demo", "--keys-file", str(keys_file)],
            check=True,
            cwd=self.workdir,
            env={**os.environ, **flags_env, "PYTHONPATH": str(REPO)},
            capture_output=True,
        )
        self.flags_keys: dict[str, str] = json.loads(keys_file.read_text())
        self.flags = self._service(
            "flags", ["flags_service.cli", "serve"], flags_env | {"FLAGS_SERVER__PORT": "{port}"}
        )

    def _start_backups(self) -> None:
        """`vibelux-backup replicate` and `serve` as `make up` runs them, for the desk's and the flags' databases:
        ready once each has a backup and a drill recorded, so every Backups panel has data."""
        self.s3 = SeaweedS3Server()
        self.s3.start()
        self._stack.callback(self.s3.close)
        stores = {"tickets": self.desk.workdir / "tickets.sqlite3", "flags": self.workdir / "flags.sqlite3"}
        self.backup = BackupServer(self.s3, stores)
        self.backup.start()
        self._stack.callback(self.backup.close)

    def _service(self, name: str, module_args: list[str], env: dict[str, str]) -> ServiceProcess:
        """Start `python -m <module_args>`; "{port}" in arguments or environment becomes its own port."""
        process = ServiceProcess(name, module_args, env)
        process.start()
        self._stack.callback(process.close)
        return process

    def _exporter(self, name: str, config: dict[str, Any], env: dict[str, str] | None = None) -> ExporterProcess:
        path = self.workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(config))
        exporter = ExporterProcess(name, path, config["server"]["port"], env)
        self._stack.callback(exporter.stop, strict=False)
        return exporter

    def _prometheus_config(self) -> dict[str, Any]:
        def job(name: str, port: int) -> dict[str, Any]:
            return {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}

        return {
            "global": {
                "scrape_interval": _seconds(self.timers.scrape_interval),
                "evaluation_interval": _seconds(self.timers.evaluation_interval),
            },
            "rule_files": ["*.rules.yml"],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager.port}"]}]}]},
            "scrape_configs": [
                job("service-health", self.health.port),
                # psutil over every process can take longer than a 1s scrape timeout on a busy machine
                job("infra", self.infra.port) | {"scrape_interval": "5s"},
                job("tickets", self.desk.port),
                job("business", self.business.port),
                job("ratelimit-proxy", self.proxy.port),
                job("flags", self.flags.port),
                job("alertmanager", self.alertmanager.port),
                # the recovery point is asked of Litestream at every scrape: two subprocesses per store
                job("backup", self.backup.port) | {"scrape_interval": "5s", "scrape_timeout": "5s"},
            ],
        }

    def _agent_token(self) -> str:
        with Session(make_engine(self.desk.database_url)) as session:
            plain, _ = create_token(session, "alert-pipeline-test", "agent", subject="agent-e2e")
            session.commit()
        return plain

    def incident_tickets(self, alertname: str) -> list[dict[str, Any]]:
        """The desk's incident tickets for one alert (tagged with the alert's name by the webhook)."""
        response = requests.get(
            f"{self.desk.url}/api/v1/tickets",
            params={"tag": alertname.lower(), "page[size]": "50"},
            headers={"Authorization": f"Bearer {self.agent_token}"},
            timeout=5,
        )
        response.raise_for_status()
        tickets: list[dict[str, Any]] = response.json()["data"]
        return tickets

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        """One ticket with its messages, as an agent reads it."""
        response = requests.get(
            f"{self.desk.url}/api/v1/tickets/{ticket_id}",
            headers={"Authorization": f"Bearer {self.agent_token}"},
            timeout=5,
        )
        response.raise_for_status()
        ticket: dict[str, Any] = response.json()
        return ticket

    def wait_for_ticket(self, alertname: str, status: str, since: float, timeout: float = 60.0) -> dict[str, Any]:
        """The alert's incident ticket once it is in `status` through a change made after `since` (epoch s).
        A group that fires again reuses its resolved ticket (reopened), so `updated_at` marks the change."""
        found: list[dict[str, Any]] = []

        def changed() -> bool:
            found[:] = [
                ticket
                for ticket in self.incident_tickets(alertname)
                if ticket["status"] == status and parse_time(ticket["updated_at"]) >= since
            ]
            return bool(found)

        wait_until(changed, timeout=timeout, interval=0.1)
        return found[0]

    def close(self) -> None:
        self._stack.close()


def drive_demo_traffic(stack: AlertingStack) -> None:
    """What a few minutes of real use leave in the metrics: API calls through the proxy (allowed, 429 once the
    free tier's burst is spent, upstream 5xx), flag evaluations and SDK polls, desk requests."""
    with requests.Session() as http:
        for index in range(30):
            path = "/api/v1/status/500" if index % 10 == 0 else "/api/v1/users"
            http.get(f"{stack.proxy_url}{path}", timeout=5)
        flags = {"Authorization": f"Bearer {stack.flags_keys['server']}"}
        for _ in range(5):
            http.post(
                f"{stack.flags.url}/ofrep/v1/evaluate/flags",
                json={"context": {"targetingKey": "u1"}},
                headers=flags,
                timeout=5,
            )
        first = http.get(f"{stack.flags.url}/api/v1/sdk/snapshot", headers=flags, timeout=5)
        http.get(
            f"{stack.flags.url}/api/v1/sdk/snapshot",
            headers=flags | {"If-None-Match": first.headers.get("ETag", "")},
            timeout=5,
        )
        http.get(f"{stack.desk.url}/healthz", timeout=5)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure_fault_to_ticket(stack: AlertingStack) -> dict[str, float]:
    """Stop Redis, wait for the ServiceDown incident ticket to be open; restart Redis, wait for the ticket to
    be resolved. Seconds from each action to the desk's own timestamp of the change."""
    fault_at = time.time()
    stack.redis.stop()
    opened = stack.wait_for_ticket("ServiceDown", "open", since=fault_at)
    recovered_at = time.time()
    stack.redis.start()
    resolved = stack.wait_for_ticket("ServiceDown", "resolved", since=recovered_at)
    assert resolved["id"] == opened["id"]
    return {
        "fault_to_ticket": parse_time(opened["updated_at"]) - fault_at,
        "recovery_to_resolved": parse_time(resolved["updated_at"]) - recovered_at,
    }
