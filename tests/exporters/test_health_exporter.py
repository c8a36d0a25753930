"""The health exporter as a process: bad config, and down dependencies reported fast, scrapes still fast."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from exporters.health.settings import ENV_PREFIX, HealthSettings
from service_kit.config import load_settings
from tests import procfile
from tests.exporters.helpers import SLACK_SECONDS, ExporterProcess, run_cli, sample, write_config
from tests.servers import RedisServer, free_port, port_open, wait_until


@pytest.mark.integration
def test_stopped_redis_and_hung_http_are_down_within_timeout_while_scrapes_stay_fast(
    tmp_path: Path, dependency_url: str, silent_port: int
) -> None:
    redis_server = RedisServer()
    redis_server.start()
    port = free_port()
    config = write_config(
        tmp_path / "health.yml",
        {
            "server": {"port": port},
            "probes": {
                service: {"interval_seconds": 0.5, "timeout_seconds": 1, **probe}
                for service, probe in {
                    "api": {"kind": "http", "target": dependency_url + "/ok", "body": {"field": "status"}},
                    "redis": {"kind": "redis", "target": redis_server.url},
                    "ai": {"kind": "http", "target": f"http://127.0.0.1:{silent_port}/"},
                    "payments": {"kind": "http", "target": dependency_url + "/trickle"},
                }.items()
            },
        },
    )
    exporter = ExporterProcess("health", config, port)
    try:
        up = {"service": "redis"}
        wait_until(lambda: sample(exporter.scrape()[0], "service_up", up) == 1.0)
        redis_server.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: sample(exporter.scrape()[0], "service_up", up) == 0.0, timeout=5)
        # at most one interval (0.5 s) plus one timeout (1 s)
        assert time.monotonic() - stopped_at < 0.5 + 1 + SLACK_SECONDS
        for hung in ("ai", "payments"):  # first attempts end at their 1 s timeout
            labels = {"service": hung, "status": "down"}
            wait_until(lambda labels=labels: sample(exporter.scrape()[0], "service_status", labels) == 1.0, 3)
        body, seconds = exporter.scrape()
        assert seconds < 0.5, "a scrape must not wait for a probe (1 s timeouts)"
        assert sample(body, "service_up", {"service": "api"}) == 1.0
        assert sample(body, "service_status", {"service": "ai", "status": "down"}) == 1.0
        assert sample(body, "service_status", {"service": "payments", "status": "down"}) == 1.0
        assert sample(body, "service_probe_results_total", {"service": "payments", "outcome": "timeout"}) >= 1
        assert sample(body, "service_probe_results_total", {"service": "ai", "outcome": "timeout"}) >= 1
        assert sample(body, "service_last_success_timestamp_seconds", {"service": "redis"}) is not None
        durations = [exporter.scrape()[1] for _ in range(10)]
        assert max(durations) < 0.5
        base = exporter.url.removesuffix("/metrics")
        assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok", "service": "exporter-health"}
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200  # every probe has a result
    finally:
        exporter.stop()
        redis_server.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"probes": {}}, "probes: expected at least one probe"),
        (
            {"probes": {"api": {"kind": "smtp", "target": "x"}}},
            "probes.api.kind: expected one of http, redis, sql, tcp, got 'smtp'",
        ),
        (
            {"probes": {"api": {"kind": "tcp", "target": "localhost"}}},
            "probes.api.target: expected host:port, got 'localhost'",
        ),
        ({"probes": {"api": {"kind": "http"}}}, "probes.api.target: expected a target"),
        ({"probes": {"api": {"kind": "http", "url": "http://x"}}}, "probes.api.url: expected one of"),
        ({"probes": {"db": {"kind": "sql", "target": "nonsense"}}}, "probes.db.target: expected a SQLAlchemy URL"),
        (
            {"probes": {"api": {"kind": "http", "target": "http://x", "timeout_seconds": 0}}},
            "probes.api.timeout_seconds: expected a number greater than 0",
        ),
        (
            {"server": {"port": "ninety"}, "probes": {"api": {"kind": "tcp", "target": "localhost:1"}}},
            "server.port: expected an integer, got 'ninety'",
        ),
    ],
)
def test_bad_config_stops_start_up_with_one_line_naming_key_and_file(
    tmp_path: Path, config: dict[str, object], message: str
) -> None:
    path = write_config(tmp_path / "health.yml", config)
    code, _, stderr = run_cli("health", "--config", str(path), "check-config")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"config error in {path}: ")
    assert message in lines[0]


def test_bad_config_ends_the_serve_process_with_exit_code_2(tmp_path: Path) -> None:
    path = write_config(tmp_path / "health.yml", {"probes": {"api": {"kind": "http", "target": "ftp://x"}}})
    result = subprocess.run(
        [sys.executable, "-m", "exporters.health.cli", "--config", str(path), "serve"], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"config error in {path}: probes.api.target: expected a http or https URL, got 'ftp://x'\n"


def test_shipped_config_is_valid_and_probe_keys_come_from_the_environment() -> None:
    environ = {"EXPORTER_HEALTH_PROBES__DATABASE__TARGET": "postgresql+psycopg://ops:pw@db:5432/platform"}
    settings = load_settings(HealthSettings, "config/exporters/health.yml", ENV_PREFIX, environ)
    settings.validate("config/exporters/health.yml")
    assert set(settings.probes) == {"api", "database", "redis", "ai", "payments"}
    assert settings.probes["database"].target == environ["EXPORTER_HEALTH_PROBES__DATABASE__TARGET"]
    assert settings.probes["database"].degraded_after_seconds == 0.5  # the file's other keys stay
    assert settings.server.port == 9102


def test_config_env_lists_probe_keys_and_masks_passwords_in_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORTER_HEALTH_PROBES__DATABASE__TARGET", "postgresql+psycopg://ops:hunter2@db:5432/platform")
    code, stdout, _ = run_cli("health", "--config", "config/exporters/health.yml", "config", "env")
    assert code == 0
    lines = stdout.splitlines()
    assert "EXPORTER_HEALTH_PROBES__DATABASE__TARGET=postgresql+psycopg://ops:********@db:5432/platform" in lines
    assert "EXPORTER_HEALTH_PROBES__REDIS__TARGET=redis://127.0.0.1:6379/0" in lines
    assert "hunter2" not in stdout


def database_probe_config(tmp_path: Path, database: Path, port: int = 9102) -> Path:
    """One SQL probe of a SQLite file, as the demo database's probe under `make up`."""
    probe = {"kind": "sql", "target": f"sqlite:///{database}", "interval_seconds": 0.5, "timeout_seconds": 1}
    return write_config(tmp_path / "health.yml", {"server": {"port": port}, "probes": {"database": probe}})


@pytest.mark.integration
def test_procfile_line_waits_for_the_demo_database_so_the_exporter_records_no_failure(tmp_path: Path) -> None:
    """The Procfile's own commands (its provider stand-ins left out), on a database made after the exporter
    would have probed it: the first probe it records is a success, where it used to be a failure on every
    `make up`."""
    database, port = tmp_path / "platform.sqlite3", free_port()
    config = database_probe_config(tmp_path, database, port)
    line = procfile.commands()["exporter-health"]
    commands = re.sub(r"^export [^;]*; ", "", line).replace("config/exporters/health.yml", str(config))
    shell = subprocess.Popen(["/bin/sh", "-c", commands], cwd=procfile.REPO, stdout=subprocess.DEVNULL)
    try:
        # Made once the exporter would have probed it: a served port means probes have started; else 2 s.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: port_open(port), timeout=2)
        time.sleep(1)
        sqlite3.connect(database).execute("CREATE TABLE made (id INTEGER)").connection.close()
        metrics = f"http://127.0.0.1:{port}/metrics"

        def results(outcome: str) -> float | None:
            body = requests.get(metrics, timeout=2).text
            return sample(body, "service_probe_results_total", {"service": "database", "outcome": outcome})

        wait_until(lambda: (results("success") or 0) >= 1, 30)
        assert results("failure") == 0.0
    finally:
        shell.terminate()
        shell.wait(10)


def test_wait_gives_up_after_its_seconds_naming_each_failing_probe_in_one_line(tmp_path: Path) -> None:
    config = database_probe_config(tmp_path, tmp_path / "never.sqlite3")
    started = time.monotonic()
    code, _, err = run_cli("health", "--config", str(config), "wait", "--seconds", "1")
    assert time.monotonic() - started < 1 + 1 + SLACK_SECONDS  # one more round of probes at most
    assert code == 1
    assert err.count("\n") == 1 and "still failing after 1 s: database (OperationalError:" in err


def test_wait_refuses_a_probe_that_is_not_configured(tmp_path: Path) -> None:
    config = database_probe_config(tmp_path, tmp_path / "platform.sqlite3")
    code, _, err = run_cli("health", "--config", str(config), "wait", "databse")
    assert code == 2 and "no probe named databse" in err
